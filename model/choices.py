"""The named choices the engine accepts, in one torch-free module: the plugin's parameter lists and
the command line import them from here, so each list is written once and the plugin can show its
dialogs before torch is installed."""
from __future__ import annotations

PRESETS = ("default", "paper")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
# "dataset": the training images' pooled band statistics, stored in the model file and applied
# unchanged to every image predicted (a pixel's prediction does not depend on the extent processed);
# "per_image": each image standardised by its own statistics; "fixed": values / full range (paper).
NORMALIZATIONS = ("dataset", "per_image", "fixed")
