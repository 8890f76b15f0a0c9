"""Where tiles go on a raster and how overlapping tile predictions are blended.

Tiles sit on a regular grid with stride ``tile - overlap`` anchored to the ground, not to the
raster's corner: tile origins fall on multiples of the stride counted in pixels from the CRS's
origin (``ground_phase_px``), so two files that share pixels (adjacent map sheets of one
orthophoto, a clip saved as its own file) run the same tiles over them and predict them alike. A
row or column also gets a tile flush with the raster's first pixel and one flush with its last, so
the edges see real pixels (as the network saw at its training crops' borders; nodata out there made
it mark buildings along the edge); those two stay on the ground's grid of the network's size
multiple (they reach past the edge by less than that, padded as nodata), because a shift off its
pooling grid changes what the network says (by 0.003-0.026 on average, bench_tile_grid.py). A
raster no longer than a tile gets one (smaller) tile per axis, rounded up to the network's size
multiple and padded.

Tiles are twice the model's training tile by default (``prediction_tile_px``) and blend with a
flat-top window: weight 1 in the tile's centre and, over the ``overlap`` pixels at each side, a
border quarter of (almost) no weight and then a raised-cosine ramp ``sin^2``. Near a tile's border
the network sees zero padding instead of the ground, so what it says there depends on where the
tile happens to end; keeping those pixels out makes a pixel's result a property of the ground
around it, whatever the grid (bench_tile_grid.py, starter model on the real scenes: grids shifted
by half a stride agree at a mean |difference| of 0.0005-0.0017 with these defaults, 0.006-0.030
with tiles of the training size; a shift off the 16 px pooling grid changes more, 0.003-0.026, a
property of the network that the ground anchoring keeps out between files). On a regular grid two
neighbouring ramps sum to exactly 1 (``sin^2 + cos^2``; a border quarter meets the other tile's
flat top), so the blend is a partition of unity. Weights never reach 0 and every pixel is divided
by the sum of the weights covering it, so the edges of a raster no longer than a tile (where its
one tile alone covers them) normalise exactly.

Wide rasters are cut into column panels (``plan_panels``) so that memory follows the panel's
width, not the raster's. A panel owns the output columns ``[left, right)`` and runs every tile of
the one global layout that touches them; tiles straddling a panel border are run by both panels,
so each owned pixel gets exactly the tiles, weights and normalisation it would get in one panel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine

from ..errors import InputError

# A tile's border quarter of the overlap still gets this weight, not 0, so a pixel that only one
# tile covers (on the edge of a raster no longer than a tile) keeps that tile's value.
BORDER_WEIGHT = 1e-6
PREDICTION_TILE_FACTOR = 2  # prediction tiles are this many times the training tile's side
# Pixels per batch when none is given: 8 tiles of 256 px, what a laptop's memory takes (~0.6 GB at width 16)
BATCH_PIXELS = 8 * 256 * 256


@dataclass(frozen=True)
class TileLayout:
    """Tile placement over a ``width`` x ``height`` raster (all sizes in pixels)."""

    width: int
    height: int
    tile_width_px: int
    tile_height_px: int
    overlap_px: int
    columns: tuple[int, ...]  # left pixel of every tile column (negative left of the raster)
    rows: tuple[int, ...]  # top pixel of every tile row (negative above the raster)

    @property
    def tile_count(self) -> int:
        return len(self.columns) * len(self.rows)

    def final_row_end(self, row_index: int) -> int:
        """Rows above this are covered by no tile row after ``row_index``: complete once it is done
        (it may lie above the raster's first row, or below its last)."""
        return self.rows[row_index + 1] if row_index + 1 < len(self.rows) else self.rows[-1] + self.tile_height_px


@dataclass(frozen=True)
class Panel:
    """Output columns ``[left, right)`` and the tile columns ``[first_column, end_column)`` of the
    layout that touch them; those tiles span the pixel columns ``[extent_left, extent_right)``."""

    left: int
    right: int
    first_column: int
    end_column: int
    extent_left: int
    extent_right: int

    @property
    def extent_width(self) -> int:
        return self.extent_right - self.extent_left


def plan_panels(layout: TileLayout, panel_width_px: int, columns: tuple[int, int] | None = None) -> tuple[Panel, ...]:
    """Column panels ``panel_width_px`` wide (the last one narrower) covering the layout's raster, or
    only its output columns ``columns`` ``[start, end)``: each still runs every tile touching them."""
    if panel_width_px < 1:
        raise InputError(f"The panel width must be at least 1 px, got {panel_width_px}.")
    start, end = columns or (0, layout.width)
    panels = []
    for left in range(start, end, panel_width_px):
        right = min(left + panel_width_px, end)
        # Tile starts are sorted, so the tiles touching [left, right) are one contiguous run.
        touching = [
            index for index, start in enumerate(layout.columns) if start < right and start + layout.tile_width_px > left
        ]
        first, last = touching[0], touching[-1]
        panels.append(
            Panel(
                left,
                right,
                first,
                last + 1,
                layout.columns[first],
                layout.columns[last] + layout.tile_width_px,
            )
        )
    return tuple(panels)


def touching_rows(layout: TileLayout, start: int, end: int) -> tuple[int, int]:
    """The tile rows ``[first, end)`` (indices) touching the output rows ``[start, end)``: every tile
    that adds to their blend, so a layout of those rows alone predicts them as the whole layout does."""
    if not 0 <= start < end <= layout.height:
        raise InputError(f"Output rows [{start}, {end}) are not within the raster's {layout.height} rows.")
    touching = [index for index, top in enumerate(layout.rows) if top < end and top + layout.tile_height_px > start]
    return touching[0], touching[-1] + 1


def prediction_tile_px(training_tile_px: int) -> int:
    """The default prediction tile for a model trained on ``training_tile_px`` crops: larger, so the
    border quarters that the blend leaves out cost little (a 512 px tile with a 128 px overlap runs
    as many network pixels per output pixel as a 256 px tile with 64 px)."""
    return PREDICTION_TILE_FACTOR * training_tile_px


def tiles_per_batch(batch_size: int | None, tile_px: int) -> int:
    """``batch_size`` tiles, or None: as many ``tile_px`` tiles as ``BATCH_PIXELS`` hold (at least one)."""
    return batch_size if batch_size is not None else max(1, BATCH_PIXELS // (tile_px * tile_px))


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def tile_starts(
    length_px: int, tile_px: int, stride_px: int, phase_px: int = 0, multiple_px: int = 1
) -> tuple[int, ...]:
    """Start offsets of tiles covering ``[0, length_px)``: every offset inside the raster that is a
    multiple of ``stride_px`` once ``phase_px`` (the ground grid's index of pixel 0) is added, plus
    a first tile flush with pixel 0 and a last one flush with the far edge, both on the ground's
    grid of ``multiple_px`` (the network's pooling grid), so they reach past the edge by less than
    that. One tile at 0 when ``length_px`` is no more than a tile."""
    if length_px <= tile_px:
        return (0,)
    last = length_px - tile_px
    first_start = -(phase_px % multiple_px)
    last_start = last + (-(phase_px + last)) % multiple_px
    # from the first anchored start at or after the first tile's, so no gap exceeds the stride
    anchored = range(first_start + (-phase_px - first_start) % stride_px, last_start, stride_px)
    return tuple(sorted({first_start, last_start, *anchored}))


def ground_phase_px(transform: Affine) -> tuple[int, int]:
    """(column, row) index of a raster's first pixel on the CRS's own pixel grid of that pixel size:
    the origin's coordinates in pixels. Rasters cut from one orthophoto share the grid, so their
    pixels have the same index whatever file holds them. A rotated or sheared grid has no such
    index: (0, 0), tiles start at its corner."""
    if transform.b or transform.d or not transform.a or not transform.e:
        return 0, 0
    return math.floor(transform.c / transform.a + 0.5), math.floor(transform.f / transform.e + 0.5)


def plan_tiles(
    width: int,
    height: int,
    tile_size_px: int,
    overlap_px: int,
    size_multiple_px: int,
    phase_px: tuple[int, int] = (0, 0),
) -> TileLayout:
    """The tiles over a ``width`` x ``height`` raster whose first pixel has the ground grid index
    ``phase_px`` (column, row; ``ground_phase_px``)."""
    if tile_size_px <= 0 or tile_size_px % size_multiple_px:
        raise InputError(
            f"The tile size must be a positive multiple of {size_multiple_px} px "
            f"(the network halves it {int(math.log2(size_multiple_px))} times); got {tile_size_px}."
        )
    if not 0 <= overlap_px <= tile_size_px // 2:
        raise InputError(
            f"The tile overlap must be between 0 and half the tile size ({tile_size_px // 2} px); got {overlap_px}."
        )
    tile_w = min(tile_size_px, round_up(width, size_multiple_px))
    tile_h = min(tile_size_px, round_up(height, size_multiple_px))
    stride = tile_size_px - overlap_px
    return TileLayout(
        width,
        height,
        tile_w,
        tile_h,
        overlap_px,
        tile_starts(width, tile_w, stride, phase_px[0], size_multiple_px),
        tile_starts(height, tile_h, stride, phase_px[1], size_multiple_px),
    )


def ramp_1d(length_px: int, overlap_px: int) -> np.ndarray:
    """Flat-top window over ``length_px``: at both ends, over ``overlap_px`` pixels, a quarter of
    ``BORDER_WEIGHT`` then a sin^2 ramp over the middle half; 1 in between."""
    weights = np.ones(length_px, np.float32)
    ramp_px = min(overlap_px, length_px // 2)
    if ramp_px:
        border_px = ramp_px // 4
        rise_px = ramp_px - 2 * border_px
        # Sampled at pixel centres so the ramps of two tiles ``length - overlap`` apart mirror
        # each other exactly and sum to 1.
        position = (np.arange(ramp_px) - border_px + 0.5) / rise_px
        ramp = np.sin(0.5 * np.pi * np.clip(position, 0.0, 1.0)) ** 2
        ramp[:border_px] = BORDER_WEIGHT
        weights[:ramp_px] = ramp
        weights[length_px - ramp_px :] = ramp[::-1]
    return weights


def blend_weights(tile_height_px: int, tile_width_px: int, overlap_px: int) -> np.ndarray:
    """(tile_height_px, tile_width_px) float32 weights, the outer product of two 1-D windows."""
    return np.outer(ramp_1d(tile_height_px, overlap_px), ramp_1d(tile_width_px, overlap_px))
