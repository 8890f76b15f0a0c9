"""The Processing algorithms: train, predict, vectorize, extract, evaluate."""
