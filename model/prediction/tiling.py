"""Where tiles go on a raster and how overlapping tile predictions are blended.

Tiles sit on a regular grid with stride ``tile - overlap`` anchored to the ground, not to the
raster's corner: tile origins fall on multiples of the stride counted in pixels from the CRS's
origin (``ground_phase_px``), so two files that share pixels (adjacent map sheets of one orthophoto,
a clip saved as its own file) run the same tiles over them and predict them alike. A row or column
also gets a tile starting on the raster's first pixel and one ending on its last, so no tile hangs
outside a raster at least one tile wide and the edges see real pixels. A raster narrower than a
tile gets one (smaller) tile per axis, rounded up to the network's size multiple and padded.

Blending uses a flat-top window: weight 1 in the tile's centre and a raised-cosine ramp
``sin^2`` over the ``overlap`` pixels at each side. On a regular grid two neighbouring ramps sum
to exactly 1 (``sin^2 + cos^2``), so the blend is a partition of unity and a prediction that
agrees across tiles comes out unchanged, while disagreements near tile borders (where the network
sees zero padding instead of context) fade smoothly instead of showing a seam. Weights never
reach 0 and every pixel is divided by the sum of the weights covering it, so pixels on the raster
edge, or where the edge tiles overlap the regular grid by more than ``overlap``, normalise exactly.

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


@dataclass(frozen=True)
class TileLayout:
    """Tile placement over a ``width`` x ``height`` raster (all sizes in pixels)."""

    width: int
    height: int
    tile_width_px: int
    tile_height_px: int
    overlap_px: int
    columns: tuple[int, ...]  # left pixel of every tile column
    rows: tuple[int, ...]  # top pixel of every tile row

    @property
    def tile_count(self) -> int:
        return len(self.columns) * len(self.rows)

    def final_row_end(self, row_index: int) -> int:
        """Rows above this are covered by no tile row after ``row_index``: complete once it is done."""
        return self.rows[row_index + 1] if row_index + 1 < len(self.rows) else self.height


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
                min(layout.columns[last] + layout.tile_width_px, layout.width),
            )
        )
    return tuple(panels)


def rows_extent(layout: TileLayout, start: int, end: int) -> tuple[int, int, int]:
    """For the output rows ``[start, end)``: the pixel rows ``[top, bottom)`` spanned by every tile
    row touching them, and the index of the first such tile row (the row analogue of a panel).

    A layout planned over ``[top, bottom)`` alone, its row phase moved on by ``top``, is the whole
    layout's tile rows from that index, shifted by ``top`` (``top`` and ``bottom`` are where a tile
    row starts and ends, the rows between are on the same ground grid), so rows predicted over that
    extent get exactly the tiles and weights of a whole prediction."""
    if not 0 <= start < end <= layout.height:
        raise InputError(f"Output rows [{start}, {end}) are not within the raster's {layout.height} rows.")
    touching = [index for index, top in enumerate(layout.rows) if top < end and top + layout.tile_height_px > start]
    first, last = touching[0], touching[-1]
    return layout.rows[first], min(layout.rows[last] + layout.tile_height_px, layout.height), first


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def tile_starts(length_px: int, tile_px: int, stride_px: int, phase_px: int = 0) -> tuple[int, ...]:
    """Start offsets of tiles covering ``[0, length_px)``: every offset inside the raster that is a
    multiple of ``stride_px`` once ``phase_px`` (the ground grid's index of pixel 0) is added, plus
    a first tile on pixel 0 and a last one ending on the edge."""
    if length_px <= tile_px:
        return (0,)
    last = length_px - tile_px
    anchored = range((-phase_px) % stride_px, last, stride_px)
    return tuple(sorted({0, last, *anchored}))


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
        tile_starts(width, tile_w, stride, phase_px[0]),
        tile_starts(height, tile_h, stride, phase_px[1]),
    )


def ramp_1d(length_px: int, overlap_px: int) -> np.ndarray:
    """Flat-top window: sin^2 ramps over ``overlap_px`` pixels at both ends, 1 in between."""
    weights = np.ones(length_px, np.float32)
    ramp_px = min(overlap_px, length_px // 2)
    if ramp_px:
        # Sampled at pixel centres so the ramps of two tiles ``length - overlap`` apart mirror
        # each other exactly and sum to 1.
        ramp = np.sin(0.5 * np.pi * (np.arange(ramp_px) + 0.5) / ramp_px) ** 2
        weights[:ramp_px] = ramp
        weights[length_px - ramp_px :] = ramp[::-1]
    return weights


def blend_weights(tile_height_px: int, tile_width_px: int, overlap_px: int) -> np.ndarray:
    """(tile_height_px, tile_width_px) float32 weights, the outer product of two 1-D windows."""
    return np.outer(ramp_1d(tile_height_px, overlap_px), ramp_1d(tile_width_px, overlap_px))
