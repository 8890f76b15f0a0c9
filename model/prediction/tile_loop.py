"""The tile loop: a trained U-Net over a raster of any size, streamed tile by tile.

The input is never read whole. The raster is cut into column panels (``tiling.plan_panels``,
``panel_width_px`` wide, 4096 px for 256 px tiles), predicted one after the other, each top to
bottom. A background thread reads overlapping tiles (a few batches ahead), the calling thread runs
the network on batches, blends each tile into a band of rows one tile high and one panel wide with
the flat-top weights of ``tiling.py``, and hands every block of rows that no later tile touches to
a background writer, which writes it as a window of the output GeoTIFFs. Memory is a few batches of
tiles plus that band (about 5 bytes x tile height x panel width) and the writer's pending block
rows, whatever the raster's width and height.

Tile origins are anchored to the ground (``tiling.ground_phase_px``): a pixel is predicted from the
same tiles in any file that holds it and its neighbourhood. The tiles flush with the raster's edges
reach past them by less than the network's size multiple; what lies out there is read as nodata.
Panels do not change the result: all panels share one tile layout, a panel runs every tile that
touches the columns it writes (the tiles straddling a panel border run twice, a few percent of the
work on rasters wider than one panel), so each pixel is blended from the same tiles with the same
weights as without panels. A window of the raster (an area of interest, a shard) is predicted the
same way: the whole raster's layout, only the tiles touching the window.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Callable, Protocol

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from ..io.background import BackgroundWriter, Prefetcher
from ..io.rasters import Grid, has_float_bands, valid_mask
from ..progress import Reporter
from .runner import TileRunner
from .tiling import Panel, TileLayout, blend_weights, ground_phase_px, plan_panels, plan_tiles, ramp_1d, touching_rows


@dataclass
class _TileBatch:
    raw: np.ndarray  # (N, C, H, W) band values
    valid: np.ndarray  # (N, H, W) bool
    panel: int  # index of the panel all its tiles belong to
    rows: list[int]  # tile row index of every tile
    columns: list[int]  # tile column index of every tile
    first_index: int  # position of the first tile in the reading order, for progress


def _read_strip(
    source: rasterio.io.DatasetReader, bands: list[int], window: Window, all_valid: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(bands, H, W) values and (H, W) validity of ``window``, which may reach past the raster's
    edges: pixels out there are nodata (0, invalid). One GDAL read for the part inside."""
    top, left = int(window.row_off), int(window.col_off)
    height, width = int(window.height), int(window.width)
    first_row, first_column = max(top, 0), max(left, 0)
    inside = Window(
        first_column,
        first_row,
        min(left + width, source.width) - first_column,
        min(top + height, source.height) - first_row,
    )
    values = source.read(bands, window=inside)
    valid = np.ones(values.shape[1:], bool) if all_valid else valid_mask(source, bands, inside, values=values)
    if values.dtype not in (np.uint8, np.int16, np.float32):
        values = values.astype(np.float32)  # torch takes these as they are; others travel as float32
    if (inside.height, inside.width) == (height, width):
        return values, valid
    strip = np.zeros((len(bands), height, width), values.dtype)
    strip_valid = np.zeros((height, width), bool)
    rows = slice(first_row - top, first_row - top + int(inside.height))
    columns = slice(first_column - left, first_column - left + int(inside.width))
    strip[:, rows, columns], strip_valid[rows, columns] = values, valid
    return strip, strip_valid


def _read_tiles(
    source: rasterio.io.DatasetReader,
    bands: list[int],
    layout: TileLayout,
    panels: Sequence[Panel],
    batch_size: int,
) -> Iterator[_TileBatch]:
    """Batches of tiles, panel by panel, each in row-major order; tiles wholly in nodata are left
    out and a batch never spans two panels.

    Each tile row of a panel is one read of a strip of rows (one GDAL call, each file block decoded
    once per strip, whatever the size of GDAL's block cache), cut into tiles in memory."""
    tile_h, tile_w = layout.tile_height_px, layout.tile_width_px
    # Without nodata values, masks or alpha every pixel is valid, floats aside (NaN): skip reading the masks.
    all_valid = not has_float_bands(source, bands) and all(
        MaskFlags.all_valid in source.mask_flag_enums[band - 1] for band in bands
    )
    flat_index = 0
    for panel_index, panel in enumerate(panels):
        batch = _TileBatchBuilder(batch_size, panel_index)
        for row_index, top in enumerate(layout.rows):
            strip_window = Window(panel.extent_left, top, panel.extent_width, tile_h)
            strip, strip_valid = _read_strip(source, bands, strip_window, all_valid)
            for column_index in range(panel.first_column, panel.end_column):
                flat_index += 1
                left = layout.columns[column_index] - panel.extent_left
                valid = strip_valid[:, left : left + tile_w]
                if not valid.any():
                    continue
                full = batch.add(strip[:, :, left : left + tile_w], valid, row_index, column_index, flat_index - 1)
                if full is not None:
                    yield full
        if batch.raw:
            yield batch.take()


class _TileBatchBuilder:
    def __init__(self, batch_size: int, panel: int) -> None:
        self.batch_size = batch_size
        self.panel = panel
        self.raw: list[np.ndarray] = []
        self.valid: list[np.ndarray] = []
        self.rows: list[int] = []
        self.columns: list[int] = []
        self.first = 0

    def add(self, raw: np.ndarray, valid: np.ndarray, row: int, column: int, flat_index: int) -> _TileBatch | None:
        if not self.raw:
            self.first = flat_index
        self.raw.append(raw)
        self.valid.append(valid)
        self.rows.append(row)
        self.columns.append(column)
        return self.take() if len(self.raw) == self.batch_size else None

    def take(self) -> _TileBatch:
        # np.stack copies the tiles out of the strip, so the strip can go as soon as it is cut.
        batch = _TileBatch(np.stack(self.raw), np.stack(self.valid), self.panel, self.rows, self.columns, self.first)
        self.raw, self.valid, self.rows, self.columns = [], [], [], []
        return batch


class _RowBand:
    """Blended sums for the rows of the current tile row over one panel's tiles. Normalising by
    the total weight is separable (weights are outer products on a Cartesian tile grid), so only
    the weighted sum is stored; tiles skipped for being all nodata only cover nodata pixels, which
    are not scored. Only the panel's own columns are emitted: the band's outer columns lack the
    tiles of the neighbouring panel."""

    def __init__(self, layout: TileLayout, panel: Panel, emit: Callable[[int, int, np.ndarray], None]) -> None:
        self.layout = layout
        self.panel = panel
        self.emit = emit
        self.weights = blend_weights(layout.tile_height_px, layout.tile_width_px, layout.overlap_px)
        self.owned = slice(panel.left - panel.extent_left, panel.right - panel.extent_left)
        # The panel's tiles are all the tiles touching its owned columns, so their coverage there
        # is the whole layout's.
        columns = layout.columns[panel.first_column : panel.end_column]
        self.total_x = self._coverage(panel.left, panel.right, columns, layout.tile_width_px)
        self.total_y = self._coverage(0, layout.height, layout.rows, layout.tile_height_px)
        self.sums = np.zeros((layout.tile_height_px, panel.extent_width), np.float32)
        self.valid = np.zeros((layout.tile_height_px, panel.extent_width), bool)
        self.row_index = 0

    def _coverage(self, start: int, end: int, starts: Sequence[int], tile_px: int) -> np.ndarray:
        """The sum of the weights of the tiles at ``starts`` over the pixels ``[start, end)``."""
        total = np.zeros(end - start, np.float32)
        ramp = ramp_1d(tile_px, self.layout.overlap_px)
        for tile_start in starts:
            first, last = max(tile_start, start), min(tile_start + tile_px, end)
            if first < last:
                total[first - start : last - start] += ramp[first - tile_start : last - tile_start]
        return total

    def add(self, row_index: int, column_index: int, probability: np.ndarray, valid: np.ndarray) -> None:
        while self.row_index < row_index:
            self._finish_row()
        left = self.layout.columns[column_index] - self.panel.extent_left
        self.sums[:, left : left + self.layout.tile_width_px] += probability * self.weights
        self.valid[:, left : left + self.layout.tile_width_px] |= valid

    def _finish_row(self) -> None:
        top = self.layout.rows[self.row_index]
        end = self.layout.final_row_end(self.row_index)
        done = end - top
        # only the rows inside the raster are written; the rows of tiles reaching past its edges are not
        first, last = max(top, 0), min(end, self.layout.height)
        if first < last:
            probability = self.sums[first - top : last - top, self.owned] / self.total_x
            probability /= self.total_y[first:last, None]
            probability[~self.valid[first - top : last - top, self.owned]] = np.nan
            self.emit(self.panel.left, first, probability)
        # Shift the band up to the next tile row's top (numpy copies overlapping slices safely).
        kept = len(self.sums) - done
        self.sums[:kept] = self.sums[done:]
        self.sums[kept:] = 0
        self.valid[:kept] = self.valid[done:]
        self.valid[kept:] = False
        self.row_index += 1

    def finish(self) -> None:
        while self.row_index < len(self.layout.rows):
            self._finish_row()


class ProbabilitySink(Protocol):
    """Where predicted probabilities go, a block at a time: the output rasters, or a window of them."""

    def write(self, col_off: int, row_off: int, probability: np.ndarray) -> None: ...


class _WindowCrop:
    """Passes on to ``sink`` only the part of what it is given inside ``window``, numbered from the
    window's corner."""

    def __init__(self, sink: ProbabilitySink, window: Window) -> None:
        self.sink = sink
        self.top, self.left = int(window.row_off), int(window.col_off)
        self.bottom, self.right = self.top + int(window.height), self.left + int(window.width)

    def write(self, col_off: int, row_off: int, probability: np.ndarray) -> None:
        height, width = probability.shape
        first, last = max(row_off, self.top), min(row_off + height, self.bottom)
        left, right = max(col_off, self.left), min(col_off + width, self.right)
        if first < last and left < right:
            part = probability[first - row_off : last - row_off, left - col_off : right - col_off]
            self.sink.write(left - self.left, first - self.top, part)


@dataclass(frozen=True)
class TileSettings:
    """How the tiles run: the network, tile size and overlap, tiles per batch and panel width."""

    runner: TileRunner
    tile_size_px: int
    overlap_px: int
    batch_size: int
    panel_width_px: int


def predict_grid(
    source: rasterio.io.DatasetReader,
    bands: list[int],
    grid: Grid,
    sink: ProbabilitySink,
    settings: TileSettings,
    reporter: Reporter,
    window: Window | None = None,
) -> int:
    """Predict every tile of ``source`` (whose pixels are ``grid``) into ``sink``, panel by panel;
    returns the number of tiles run. With ``window`` only the tiles of the whole grid's layout that
    touch it run, and only its pixels reach ``sink``, numbered from its corner: each exactly as in a
    prediction of the whole grid."""
    runner = settings.runner
    tile_size_px, overlap_px = settings.tile_size_px, settings.overlap_px
    multiple = runner.net.config.size_multiple_px
    phase = ground_phase_px(grid.transform)
    layout = plan_tiles(grid.width, grid.height, tile_size_px, overlap_px, multiple, phase)
    columns = None
    if window is not None:
        first, end = touching_rows(layout, int(window.row_off), int(window.row_off + window.height))
        layout = replace(layout, rows=layout.rows[first:end])
        columns = (int(window.col_off), int(window.col_off + window.width))
        sink = _WindowCrop(sink, window)
    panels = plan_panels(layout, settings.panel_width_px, columns)
    tile_total = len(layout.rows) * sum(panel.end_column - panel.first_column for panel in panels)
    writer = BackgroundWriter(sink.write)
    reader = Prefetcher(lambda: _read_tiles(source, bands, layout, panels, settings.batch_size))
    # Every panel gets a band, including panels without a tile to run (all nodata), so that
    # every output pixel is written.
    bands_of_panels = (_RowBand(layout, panel, writer.put) for panel in panels)
    band, panel_index = next(bands_of_panels), 0
    tiles = 0
    try:
        for batch, probabilities in runner.run_ahead(reader):
            reporter.check()
            while panel_index < batch.panel:
                band.finish()
                band, panel_index = next(bands_of_panels), panel_index + 1
            for index, (row, column) in enumerate(zip(batch.rows, batch.columns)):
                band.add(row, column, probabilities[index], batch.valid[index])
            tiles += len(batch.rows)
            reporter.report(
                (batch.first_index + len(batch.rows)) / tile_total,
                runner.take_notice() or f"Predicted {tiles} tiles of {tile_total}",
            )
        band.finish()
        for band in bands_of_panels:
            band.finish()
    finally:
        reader.close()
        writer.finish()
    return tiles
