"""The named choices the engine accepts and the parsers of the lists users type, in one torch-free
module: the plugin's parameters and the command line import them from here, so each list and each
parser is written once and the plugin can show its dialogs before torch is installed."""

from __future__ import annotations

from collections.abc import Iterable

from .errors import InputError

PRESETS = ("default", "paper")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
# "per_image": each image standardised by its own statistics, contrast never stretched past twice the
# training images' (the default: best on imagery the model never saw); "dataset": the training
# images' pooled band statistics, stored in the model file and applied unchanged to every image (a
# pixel's normalisation does not depend on the extent processed); "fixed": values / full range (paper).
NORMALIZATIONS = ("per_image", "dataset", "fixed")


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
            text, "Building class values must be whole numbers separated by commas, e.g. '2' or '2,5'"
        )
    else:
        values = [int(value) for value in text]
    if not values:
        raise InputError("Give at least one building class value (the paper's labels use 2).")
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
