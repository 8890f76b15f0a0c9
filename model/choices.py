"""The named choices the engine accepts, in one torch-free module: the plugin's parameter lists and
the command line import them from here, so each list is written once and the plugin can show its
dialogs before torch is installed."""

from __future__ import annotations

PRESETS = ("default", "paper")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
# "per_image": each image standardised by its own statistics, contrast never stretched past twice the
# training images' (the default: best on imagery the model never saw); "dataset": the training
# images' pooled band statistics, stored in the model file and applied unchanged to every image (a
# pixel's normalisation does not depend on the extent processed); "fixed": values / full range (paper).
NORMALIZATIONS = ("per_image", "dataset", "fixed")
