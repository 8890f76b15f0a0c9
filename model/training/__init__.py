"""Training: recipes, the start model, scenes read and sampled, augmentation, the loop, checkpoints, ranks."""
