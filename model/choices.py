"""The named choices the engine accepts and the parsers of the lists users type, in one torch-free
module: the plugin's parameters and the command line import them from here, so each list and each
parser is written once and the plugin can show its dialogs before torch is installed."""

from __future__ import annotations

from collections.abc import Iterable

from .errors import InputError

PRESETS = ("default", "paper")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
# "dataset" (the default): the training images' pooled band statistics, stored in the model file and
# applied unchanged to every image (a pixel's normalisation does not depend on the extent or file
# processed, and Deepness runs an export as Predict does); "per_image": each image standardised by its
# own statistics, contrast never stretched past twice the training images'; "fixed": values / full
# range (the paper's).
NORMALIZATIONS = ("per_image", "dataset", "fixed")

# The defaults that the dock, the Processing algorithms and the command line share, so that one image
# gives the same buildings whichever runs it (training and evaluation in Python take the same building
# values; polygons_from_mask, a building block, filters nothing unless asked).
# 1 is building in the 0/1 building masks most users have; the paper's multi-class labels (and the
# bundled sample) mark buildings with 2: give 2 for them.
DEFAULT_BUILDING_VALUES = (1,)
BUILDING_VALUES_TEXT = ",".join(map(str, DEFAULT_BUILDING_VALUES))  # as typed in a text box
BUILDING_VALUES_HELP = (
    "label values that mean building, comma-separated: 1 for a 0/1 building mask, 2 for the paper's classes"
)
DEFAULT_MIN_AREA_M2 = 2.0  # specks below this are no buildings
DEFAULT_SIMPLIFY_M = 0.2  # about a pixel of 0.1-0.3 m imagery: removes the staircase, keeps the corners


def parse_bands(text: str) -> list[int] | None:
    """'1,2,3' -> [1, 2, 3] (1-based band numbers); empty -> None (the engine's default: all bands but alpha)."""
    return (
        _whole_numbers(text, "Bands must be whole band numbers (1 is the first band) separated by commas, e.g. '1,2,3'")
        or None
    )


def parse_building_values(text: str | Iterable[int]) -> list[int]:
    """'2' or '2, 5' or [2, 5] -> [2, 5]; a clear error for anything else."""
    if isinstance(text, str):
        values = _whole_numbers(
            text, "Building class values must be whole numbers separated by commas, e.g. '1' or '2,5'"
        )
    else:
        values = [int(value) for value in text]
    if not values:
        raise InputError("Give at least one building class value (1 in a 0/1 building mask; the paper's labels use 2).")
    return values


def check_pairs(images: list, labels: list, paired_by: str = "in the same order") -> None:
    """Training pairs each image with one label layer: refuse any other count, saying how they pair."""
    if not images or len(images) != len(labels):
        raise InputError(
            f"{len(images)} image(s) but {len(labels)} label layer(s): give one label layer per image "
            f"(they are paired {paired_by})."
        )


def _whole_numbers(text: str, rule: str) -> list[int]:
    """Whole numbers separated by commas or semicolons ('2.0' is 2); ``rule`` says what was expected."""
    parts = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        numbers = [float("nan")]
    if not all(number.is_integer() for number in numbers):
        raise InputError(f"{rule}; got {text!r}.")
    return [int(number) for number in numbers]
