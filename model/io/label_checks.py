"""What is wrong with a label raster as building labels, judged on the values it holds: one sentence per
problem, naming the layer, what it really holds and what to do.

The mistakes caught are the ones that otherwise train or score "successfully" on garbage: an image picked
as the label layer, a continuous raster (a DEM, a probability raster), building values that mark none of
the labelled pixels (building value 2 on 0/1 labels) or nearly all of them (building value 0, the
background). The values are gathered window by window while the labels are read anyway, so a huge label
raster is never read twice. No I/O here: ``rasters.py`` reads, this module judges.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError

# A class raster names a handful of classes (the paper's has 5; land-cover legends rarely pass a few
# dozen): more distinct values than this means continuous data (a DEM, a probability raster, an image band)
MAX_CLASS_VALUES = 64
# Buildings cover a minority of any scene's labelled area (dense city centres reach about half): building
# values over more than this share of it are the background class picked by mistake (building value 0)
MAX_BUILDING_SHARE = 0.9
# values spread over fewer than this many integers (a class raster's usual few) are counted one
# vectorised comparison each: several times faster than a bincount, which widens every pixel to 64 bits
COUNTED_RANGE = 16
MAX_LISTED_VALUES = 6  # more held values than this are summarised as a range, never listed
PICK_CLASSES = (
    "pick a class raster with one whole number per class (e.g. 0 background, 1 building) or building polygons"
)


def values_text(values: Sequence[int]) -> str:
    """'only 0', '0 and 1', '0, 1, 2 and 5', or for many values '40 values from 0 to 63' (at least one value)."""
    values = sorted(values)
    if len(values) == 1:
        return f"only {values[0]}"
    if len(values) <= MAX_LISTED_VALUES:
        return listed(values)
    return f"{len(values)} values from {values[0]} to {values[-1]}"


def listed(values: Sequence) -> str:
    """'2', '2 and 5', '2, 5 and 7'."""
    return ", ".join(map(str, values[:-1])) + f" and {values[-1]}" if len(values) > 1 else str(values[0])


def _number(value: float) -> str:
    """A pixel value as people write it: 255, not 255.0 or 2.55e+02; 0.1875 as it is."""
    return str(int(value)) if value.is_integer() else f"{value:.6g}"


def check_band_count(subject: str, data_bands: int) -> None:
    """Refuse a label raster with several data bands: a class raster has one, an image three or more."""
    if data_bands > 1:
        raise InputError(
            f"{subject} has {data_bands} bands: it looks like an image, not a label layer. Pick the class "
            "raster (one band of class values) or the building polygons that go with the image."
        )


def _value_counts(values: np.ndarray, low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values, their counts) of an integer array whose values lie in [low, high]."""
    if high - low < COUNTED_RANGE:
        held = np.arange(low, high + 1)
        counts = np.array([np.count_nonzero(values == value) for value in held])
        return held[counts > 0], counts[counts > 0]
    if values.dtype.kind == "u" and values.dtype.itemsize <= 2:  # 8 and 16 bit: a bincount, no sort
        counts = np.bincount(values.ravel())
        held = np.flatnonzero(counts)
        return held, counts[held]
    return np.unique(values, return_counts=True)


class LabelValues:
    """The raw values of a label raster's labelled (non-nodata) pixels, gathered window by window as
    they are read (each pixel once, for exact shares), and what is wrong with them as class labels."""

    def __init__(self, subject: str, nodata: float | None = None) -> None:
        self.subject = subject  # how sentences name the raster, e.g. "The label layer '/data/labels.tif'"
        self.nodata = nodata  # said in the summary only: nodata pixels are never added
        self.counts: dict[int, int] = {}  # pixels per class value, while the values look like classes
        self.labelled_px = 0
        self.low, self.high = float("inf"), float("-inf")
        self.whole_numbers = True
        self.too_many = False

    @property
    def is_classes(self) -> bool:
        return self.whole_numbers and not self.too_many

    def add(self, values: np.ndarray, has_data: np.ndarray) -> None:
        """Count one window's raw values where ``has_data``; once they cannot be classes only their range is kept."""
        labelled = values if has_data.all() else values[has_data]
        if labelled.dtype.kind == "f":
            finite = np.isfinite(labelled)
            if not finite.all():  # NaN or infinity outside the nodata mask: no class value
                self.whole_numbers = False
                labelled = labelled[finite]
        if not labelled.size:
            return
        self.labelled_px += labelled.size
        low, high = float(labelled.min()), float(labelled.max())
        self.low, self.high = min(self.low, low), max(self.high, high)
        if not self.is_classes:
            return
        if labelled.dtype.kind == "f":
            if np.any(labelled != np.floor(labelled)):
                self.whole_numbers = False
                self.counts.clear()
                return
            labelled = labelled.astype(np.int64)
        for value, count in zip(*(part.tolist() for part in _value_counts(labelled, int(low), int(high)))):
            self.counts[value] = self.counts.get(value, 0) + count
        if len(self.counts) > MAX_CLASS_VALUES:
            self.too_many = True
            self.counts.clear()

    def problems(self, building_values: Sequence[int]) -> list[str]:
        """One sentence per problem of these values as labels whose ``building_values`` mean building."""
        if not self.labelled_px:
            return [
                f"{self.subject} has no labelled pixel where it overlaps the other layer (all no data): check "
                "its no-data value and its extent."
            ]
        if not self.whole_numbers:
            return [
                f"{self.subject} holds continuous values ({_number(self.low)} to {_number(self.high)}, not "
                f"whole numbers), not classes: {PICK_CLASSES}."
            ]
        if self.too_many:
            return [
                f"{self.subject} holds more than {MAX_CLASS_VALUES} different values (from {_number(self.low)} "
                f"to {_number(self.high)}): these are continuous values (a DEM, a probability raster or an image "
                f"band), not classes: {PICK_CLASSES}."
            ]
        held = sorted(self.counts)
        marked = [value for value in building_values if value in self.counts]
        if not marked:
            which = (
                f"building value {building_values[0]} is not"
                if len(building_values) == 1
                else f"none of the building values {listed(building_values)} is"
            )
            return [f"{self.subject} holds {values_text(held)}; {which} among them: {self._set_building_values()}."]
        share = sum(self.counts[value] for value in marked) / self.labelled_px
        if share > MAX_BUILDING_SHARE:
            which = (
                f"building value {marked[0]} covers" if len(marked) == 1 else f"building values {listed(marked)} cover"
            )
            return [
                f"{self.subject} holds {values_text(held)}, and {which} {100 * share:.1f} % of its labelled "
                f"pixels: that is the background, not buildings; {self._set_building_values()}."
            ]
        return []

    def check(self, building_values: Sequence[int]) -> None:
        problems = self.problems(building_values)
        if problems:
            raise InputError(" ".join(problems))

    def binary_building_values(self, building_values: Sequence[int]) -> list[int] | None:
        """[1] for 0/1 labels that hold none of ``building_values`` (a binary raster's building value is
        1), else None."""
        held = set(self.counts)
        if self.is_classes and 1 in held and held <= {0, 1} and not held & set(building_values):
            return [1]
        return None

    def summary(self) -> str:
        """'The label layer 'x' holds 0 and 1 (255 = no data).'; for classes only (else see ``problems``)."""
        nodata = f" ({_number(self.nodata)} = no data)" if self.nodata is not None else ""
        return f"{self.subject} holds {values_text(sorted(self.counts))}{nodata}."

    def _set_building_values(self) -> str:
        binary = " (1 for 0/1 labels)" if set(self.counts) <= {0, 1} else ""
        return f"set the building values to the classes that mark buildings{binary}"
