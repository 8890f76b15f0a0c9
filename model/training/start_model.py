"""Which model a training run starts from: the shipped starter model by default, so that training
adapts a model that already finds buildings instead of replacing it with one that has seen only the
user's few labelled blocks. Torch-free: the plugin's dialogs and the command line read it before
torch is installed."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

# Trained on the project's real scenes (resources/models/buildings_rgb_starter.md), shipped with the
# plugin: the default model of Predict, Extract and the dock, and the default start of Train.
STARTER_MODEL = Path(__file__).resolve().parents[2] / "resources" / "models" / "buildings_rgb_starter.pt"

# What the starter model is, for a training run to compare with what the user asks for. These are
# the values in its model file (``python -m model info``); a test checks that they still are.
STARTER_BANDS = 3
STARTER_NETWORK = {"base_width": 16, "depth": 4, "batch_norm": True, "upsample": "nearest"}
STARTER_NORMALIZATION = "dataset"


def starter_model() -> Path | None:
    """The shipped starter model when it is there."""
    return STARTER_MODEL if STARTER_MODEL.is_file() else None


def default_start(preset: str, given: dict, band_count: Callable[[], int]) -> tuple[str | None, str]:
    """(the model a run of ``preset`` with the options ``given`` starts from by default, or None for a
    new network; one sentence saying why a new network, or "" when the starter model is used).
    ``band_count()`` reads the number of bands the run will take from its images."""
    starter = starter_model()
    if starter is None:
        return None, "Training a new network: the starter model is not installed."
    if preset != "default":
        return None, f"Training a new network: the {preset} preset always starts from scratch."
    bands = band_count()
    if bands != STARTER_BANDS:
        return None, (
            f"Training a new network: the starter model reads {STARTER_BANDS} bands (red, green, blue) and "
            f"these images give {bands}."
        )
    normalization = given.get("normalization")
    if normalization not in (None, STARTER_NORMALIZATION):
        return None, (
            f"Training a new network: you asked for {normalization} band scaling and the starter model "
            f"was trained with {STARTER_NORMALIZATION}."
        )
    for name, value in STARTER_NETWORK.items():
        if given.get(name) not in (None, value):
            words = name.replace("_", " ")
            return None, (
                f"Training a new network: you asked for {words} {given[name]} and the starter model has {value}."
            )
    return str(starter), ""
