"""Prediction: a trained U-Net over a raster of any size, streamed tile by tile.

The input is never read whole. The raster is cut into column panels (``tiling.plan_panels``,
``panel_width_px`` wide, 4096 px for 256 px tiles), predicted one after the other, each top to
bottom. A background thread reads overlapping tiles (a few batches ahead), the calling thread runs
the network on batches, blends each tile into a band of rows one tile high and one panel wide with
the flat-top weights of ``tiling.py``, and hands every block of rows that no later tile touches to
a background writer, which writes it as a window of the output GeoTIFFs. Memory is a few batches of
tiles plus that band (about 5 bytes x tile height x panel width) and the writer's pending block
rows, whatever the raster's width and height.

Panels do not change the result: all panels share one tile layout, a panel runs every tile that
touches the columns it writes (the tiles straddling a panel border run twice, a few percent of the
work on rasters wider than one panel), so each pixel is blended from the same tiles with the same
weights as without panels. The default panel width is a multiple of the output's 256 px GeoTIFF
blocks, so every compressed block is still written once (other widths are correct too; GDAL then
rewrites the blocks cut by a panel border).

The network runs at the model's training pixel size: another resolution is resampled window by
window (a GDAL warped VRT), predicted on that processing grid into a temporary raster, and that
raster is warped back onto the input's grid. Outputs are always on the input's exact grid.

Output encodings are those of ``rasters.py``: probability uint8 ``round(p * 254)`` (nodata 255) or
float32 (nodata -1), mask uint8 1/0 (nodata 255) with ``p >= threshold`` as building. Input
nodata stays nodata. Files are written under temporary names and renamed when complete.

This module holds the tile loop; the processing grid is chosen in ``resolution.py``, the network
runs in ``runner.py``, the reader and writer threads are ``background.py`` and the output files
``outputs.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from .background import BackgroundWriter, Prefetcher
from .device import PRECISIONS, describe_device, resolve_device
from .errors import InputError
from .files import GEOTIFF_SUFFIXES, check_output_location, check_output_paths, check_output_suffix, temporary_beside
from .modelfile import LoadedModel, ModelInfo, load_model
from .normalization import normalization_for
from .outputs import OUTPUT_BLOCK_PX, OutputRasters
from .progress import CancelFn, ProgressFn, Reporter
from .rasters import Grid, check_bands, open_raster, valid_mask
from .resolution import processing_grid
from .runner import TileRunner
from .tiling import Panel, TileLayout, blend_weights, plan_panels, plan_tiles, ramp_1d, rows_extent

PROBABILITY_DTYPES = ("uint8", "float32")
# Pixel sizes within this relative difference of the model's are processed as they are:
# resampling by a few percent costs a blur and buys nothing.
PIXEL_SIZE_TOLERANCE = 0.05
# An area of interest's edge this close to a pixel edge (in pixels) is on it: no sliver pixel added.
EDGE_TOLERANCE_PX = 1e-6
# Processing pixels beyond a window's edge predicted when resampling, so that the warp back onto the
# window's pixels has all its source pixels (bilinear needs one; two for safety at fractional scales).
RESAMPLE_MARGIN_PX = 2
# Memory follows the panel width; a panel of at least 16 tiles keeps the tiles run twice at panel
# borders to a few percent.
PANEL_WIDTH_PX = 4096
PANEL_WIDTH_TILES = 16
# Beyond this factor between the input's and the processing pixel size the result is
# meaningless (buildings a few pixels wide, or a few hundred): refuse rather than guess.
MAX_RESAMPLE_FACTOR = 16.0


@dataclass
class PredictionResult:
    probability_path: Path | None
    mask_path: Path | None
    threshold: float
    device_description: str = ""
    tile_count: int = 0  # tiles the network ran on (tiles wholly in nodata are skipped)
    seconds: float = 0.0
    processing_pixel_size_map_units: tuple[float, float] = (0.0, 0.0)  # of the input CRS
    resampled: bool = False
    precision: str = "float32"


def predict_raster(
    image_path: str | Path,
    model: str | Path | LoadedModel,
    *,
    probability_path: str | Path | None = None,
    mask_path: str | Path | None = None,
    threshold: float | None = None,
    probability_dtype: str = "uint8",
    batch_size: int = 8,
    device: str = "auto",
    tile_size_px: int | None = None,
    overlap_px: int | None = None,
    tta: bool = False,
    processing_pixel_size_map_units: float | Sequence[float] | str | None = None,
    precision: str = "auto",
    overviews: bool = False,
    panel_width_px: int | None = None,
    window: Window | None = None,
    progress: ProgressFn | None = None,
    cancelled: CancelFn | None = None,
) -> PredictionResult:
    """Predict building probability for ``image_path`` and write a probability and/or mask GeoTIFF.

    ``threshold`` None uses the model's tuned threshold. ``tile_size_px`` None uses the model's
    training tile size; ``overlap_px`` None a quarter of the tile. ``processing_pixel_size_map_units`` None
    runs at the model's training pixel size (converted to the input CRS's units, degrees
    included); a number (or [x, y]) in the input CRS's units overrides it; "native" uses the
    input's own pixels. ``precision`` "auto" is what the hardware does natively
    (``device.autocast_settings``: bfloat16 on recent GPUs and CPUs with bfloat16 instructions,
    float16 on older GPUs, else float32). ``tta`` averages the 8 flips / 90° rotations of every
    tile (8x slower).
    ``panel_width_px`` None is ``PANEL_WIDTH_TILES`` tiles but at least ``PANEL_WIDTH_PX``; it
    bounds memory and does not change the result. ``window`` (in the input's pixels; see
    ``extent_window``) predicts only that part of the input: an area of interest, or a shard's rows
    (``shards.py``). The outputs cover the window, every pixel as in a prediction of the whole input:
    the tiles of the whole input's layout that touch it run, with the whole input's normalisation.
    """
    started = time.perf_counter()
    reporter = Reporter.of(progress, cancelled)
    if probability_path is None and mask_path is None:
        raise InputError("Choose at least one output: a probability raster, a mask raster or both.")
    if probability_dtype not in PROBABILITY_DTYPES:
        raise InputError(f"The probability raster type must be one of {PROBABILITY_DTYPES}, not {probability_dtype!r}.")
    if precision not in PRECISIONS:
        raise InputError(f"Precision must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
    if batch_size < 1:
        raise InputError(f"The batch size must be at least 1, got {batch_size}.")
    torch_device = resolve_device(device)
    loaded = model if isinstance(model, LoadedModel) else load_model(Path(model), torch_device)
    info = loaded.info
    threshold = float(info.threshold if threshold is None else threshold)
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"The threshold must be between 0 and 1, got {threshold}.")
    tile_size_px, overlap_px = tiling_options(info, tile_size_px, overlap_px)
    if panel_width_px is None:
        panel_width_px = max(PANEL_WIDTH_PX, PANEL_WIDTH_TILES * tile_size_px)
    image_path = Path(image_path)
    probability_path = Path(probability_path) if probability_path is not None else None
    mask_path = Path(mask_path) if mask_path is not None else None
    check_prediction_outputs(
        image_path, Path(model) if not isinstance(model, LoadedModel) else None, probability_path, mask_path
    )

    with open_raster(image_path, "image") as dataset:
        bands = check_bands(
            dataset,
            info.bands,
            fix=f"The model was trained on {len(info.bands)}-band imagery "
            f"(bands {info.bands}): predict on an image with the same bands as the training images.",
        )
        grid = Grid.of(dataset)
        mean, std = normalization_for(dataset, bands, info.normalization)
        processing = processing_grid(dataset, info, processing_pixel_size_map_units)
        if window is not None:
            check_window(window, grid, image_path)
        runner = TileRunner(loaded.net, torch_device, mean, std, precision, tta)
        written = grid if window is None else grid.window_grid(window)
        final = OutputRasters(written, probability_path, probability_dtype, mask_path, threshold, overviews)
        try:
            if processing is None:
                tiles = _predict_grid(
                    dataset,
                    bands,
                    grid,
                    final,
                    runner,
                    tile_size_px,
                    overlap_px,
                    batch_size,
                    panel_width_px,
                    reporter,
                    window,
                )
            else:
                tiles = _predict_resampled(
                    dataset,
                    bands,
                    grid,
                    processing,
                    final,
                    runner,
                    tile_size_px,
                    overlap_px,
                    batch_size,
                    panel_width_px,
                    reporter,
                    window,
                )
            reporter.check()
            final.commit()
        except BaseException:
            final.abort()
            raise
    reporter.report(1.0, "Prediction written.")
    used = processing or grid
    return PredictionResult(
        final.probability_path,
        final.mask_path,
        threshold,
        describe_device(torch_device),
        tiles,
        time.perf_counter() - started,
        used.pixel_size_map_units,
        processing is not None,
        runner.precision_name,
    )


def tiling_options(info: ModelInfo, tile_size_px: int | None, overlap_px: int | None) -> tuple[int, int]:
    """(tile size, overlap) in pixels: the given ones, else the model's tile and a quarter of it."""
    tile_size_px = int(tile_size_px or info.tile_size_px)
    return tile_size_px, int(tile_size_px // 4 if overlap_px is None else overlap_px)


def extent_window(image_path: str | Path, extent: tuple[float, float, float, float]) -> Window:
    """The window of ``image_path``'s pixels that the area ``(left, bottom, right, top)``, in the
    image's CRS, touches (whole pixels, clipped to the image): what ``predict_raster`` takes."""
    with open_raster(image_path, "image") as dataset:
        grid = Grid.of(dataset)
    left, bottom, right, top = extent
    area = rasterio.windows.from_bounds(left, bottom, right, top, grid.transform)
    # outward to whole pixels; the tolerance keeps an extent on pixel edges from gaining a pixel
    first_column = max(0, math.floor(area.col_off + EDGE_TOLERANCE_PX))
    first_row = max(0, math.floor(area.row_off + EDGE_TOLERANCE_PX))
    end_column = min(grid.width, math.ceil(area.col_off + area.width - EDGE_TOLERANCE_PX))
    end_row = min(grid.height, math.ceil(area.row_off + area.height - EDGE_TOLERANCE_PX))
    if end_column <= first_column or end_row <= first_row:
        raise InputError(
            f"The area of interest ({left:.2f}, {bottom:.2f} : {right:.2f}, {top:.2f}) does not overlap the "
            f"image '{image_path}': move the map or pick another extent."
        )
    return Window(first_column, first_row, end_column - first_column, end_row - first_row)


def check_window(window: Window, grid: Grid, image_path: Path) -> None:
    """Refuse a window that is not whole pixels inside the image."""
    offsets = (window.col_off, window.row_off, window.width, window.height)
    if any(value != int(value) for value in offsets) or not (
        0 <= window.col_off < window.col_off + window.width <= grid.width
        and 0 <= window.row_off < window.row_off + window.height <= grid.height
    ):
        raise InputError(
            f"The window {tuple(offsets)} (column, row, width, height) is not whole pixels inside the image "
            f"'{image_path}' ({grid.width} x {grid.height} pixels)."
        )


def check_prediction_outputs(
    image_path: Path, model_path: Path | None, probability_path: Path | None, mask_path: Path | None
) -> None:
    """Refuse outputs that would overwrite an input or each other, or could not be GeoTIFFs where asked."""
    outputs = {"probability raster": probability_path, "mask raster": mask_path}
    check_output_paths({"image": image_path, "model file": model_path}, outputs)
    for name, path in outputs.items():
        if path is not None:
            check_output_location(path, name)
            check_output_suffix(path, GEOTIFF_SUFFIXES, "a GeoTIFF", name)


# ---------------------------------------------------------------------------------------------
# The tile loop


@dataclass
class _TileBatch:
    raw: np.ndarray  # (N, C, H, W) band values
    valid: np.ndarray  # (N, H, W) bool
    panel: int  # index of the panel all its tiles belong to
    rows: list[int]  # tile row index of every tile
    columns: list[int]  # tile column index of every tile
    first_index: int  # position of the first tile in the reading order, for progress


def _read_tiles(
    source: rasterio.io.DatasetReader,
    bands: list[int],
    layout: TileLayout,
    panels: Sequence[Panel],
    batch_size: int,
    row_off: int = 0,
) -> Iterator[_TileBatch]:
    """Batches of tiles, panel by panel, each in row-major order; tiles wholly in nodata are left
    out and a batch never spans two panels. ``layout`` starts at row ``row_off`` of ``source``.

    Each tile row of a panel is one read of a strip of rows (one GDAL call, each file block decoded
    once per strip, whatever the size of GDAL's block cache), cut into tiles in memory."""
    tile_h, tile_w = layout.tile_height_px, layout.tile_width_px
    # Without nodata values, masks or alpha every pixel is valid: skip reading the masks.
    all_valid = all(MaskFlags.all_valid in source.mask_flag_enums[band - 1] for band in bands)
    flat_index = 0
    for panel_index, panel in enumerate(panels):
        batch = _TileBatchBuilder(batch_size, panel_index)
        for row_index, top in enumerate(layout.rows):
            strip_window = Window(
                panel.extent_left, row_off + top, panel.extent_width, min(tile_h, layout.height - top)
            )
            strip = source.read(bands, window=strip_window)
            if strip.dtype not in (np.uint8, np.int16, np.float32):
                strip = strip.astype(np.float32)  # torch takes these as they are; others travel as float32
            strip_valid = np.ones(strip.shape[1:], bool) if all_valid else valid_mask(source, bands, strip_window)
            for column_index in range(panel.first_column, panel.end_column):
                flat_index += 1
                left = layout.columns[column_index] - panel.extent_left
                valid = strip_valid[:, left : left + tile_w]
                if not valid.any():
                    continue
                raw = strip[:, :, left : left + tile_w]
                if valid.shape != (tile_h, tile_w):
                    # Only rasters smaller than a tile leave tiles short of pixels: pad as nodata.
                    padded_raw = np.zeros((len(bands), tile_h, tile_w), strip.dtype)
                    padded_valid = np.zeros((tile_h, tile_w), bool)
                    padded_raw[:, : raw.shape[1], : raw.shape[2]] = raw
                    padded_valid[: valid.shape[0], : valid.shape[1]] = valid
                    raw, valid = padded_raw, padded_valid
                full = batch.add(raw, valid, row_index, column_index, flat_index - 1)
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
        columns = [layout.columns[index] - panel.extent_left for index in range(panel.first_column, panel.end_column)]
        self.total_x = self._coverage(panel.extent_width, columns, layout.tile_width_px)[self.owned]
        self.total_y = self._coverage(layout.height, layout.rows, layout.tile_height_px)
        self.sums = np.zeros((layout.tile_height_px, panel.extent_width), np.float32)
        self.valid = np.zeros((layout.tile_height_px, panel.extent_width), bool)
        self.row_index = 0

    def _coverage(self, length: int, starts: Sequence[int], tile_px: int) -> np.ndarray:
        total = np.zeros(length + tile_px, np.float32)
        ramp = ramp_1d(tile_px, self.layout.overlap_px)
        for start in starts:
            total[start : start + tile_px] += ramp
        return total[:length]

    def add(self, row_index: int, column_index: int, probability: np.ndarray, valid: np.ndarray) -> None:
        while self.row_index < row_index:
            self._finish_row()
        left = self.layout.columns[column_index] - self.panel.extent_left
        width = min(self.layout.tile_width_px, self.panel.extent_width - left)
        height = min(self.layout.tile_height_px, self.layout.height - self.layout.rows[row_index])
        self.sums[:height, left : left + width] += (probability * self.weights)[:height, :width]
        self.valid[:height, left : left + width] |= valid[:height, :width]

    def _finish_row(self) -> None:
        top = self.layout.rows[self.row_index]
        end = self.layout.final_row_end(self.row_index)
        done = end - top
        probability = self.sums[:done, self.owned] / self.total_x
        probability /= self.total_y[top:end, None]
        probability[~self.valid[:done, self.owned]] = np.nan
        self.emit(self.panel.left, top, probability)
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


def _predict_grid(
    source: rasterio.io.DatasetReader,
    bands: list[int],
    grid: Grid,
    sink: ProbabilitySink,
    runner: TileRunner,
    tile_size_px: int,
    overlap_px: int,
    batch_size: int,
    panel_width_px: int,
    reporter: Reporter,
    window: Window | None = None,
) -> int:
    """Predict every tile of ``source`` (whose pixels are ``grid``) into ``sink``, panel by panel;
    returns the number of tiles run. With ``window`` only the tiles of the whole grid's layout that
    touch it run, and only its pixels reach ``sink``, numbered from its corner: each exactly as in a
    prediction of the whole grid."""
    multiple = runner.net.config.size_multiple_px
    layout = plan_tiles(grid.width, grid.height, tile_size_px, overlap_px, multiple)
    row_off, columns = 0, None
    if window is not None:
        start, end = int(window.row_off), int(window.row_off + window.height)
        row_off, bottom, first = rows_extent(layout, start, end)
        whole = layout
        layout = plan_tiles(grid.width, bottom - row_off, tile_size_px, overlap_px, multiple)
        if layout.rows != tuple(top - row_off for top in whole.rows[first : first + len(layout.rows)]):
            raise RuntimeError(f"The tile rows of rows [{start}, {end}) do not line up with the whole raster's.")
        columns = (int(window.col_off), int(window.col_off + window.width))
        sink = _WindowCrop(sink, Window(window.col_off, start - row_off, window.width, window.height))
    panels = plan_panels(layout, panel_width_px, columns)
    tile_total = len(layout.rows) * sum(panel.end_column - panel.first_column for panel in panels)
    writer = BackgroundWriter(sink.write)
    reader = Prefetcher(lambda: _read_tiles(source, bands, layout, panels, batch_size, row_off))
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


def _processing_window(grid: Grid, processing: Grid, window: Window) -> Window:
    """The processing grid's pixels under ``window`` of the input grid, plus a margin for the warp back."""
    left, bottom, right, top = rasterio.windows.bounds(window, grid.transform)
    area = rasterio.windows.from_bounds(left, bottom, right, top, processing.transform)
    first_column = max(0, math.floor(area.col_off) - RESAMPLE_MARGIN_PX)
    first_row = max(0, math.floor(area.row_off) - RESAMPLE_MARGIN_PX)
    end_column = min(processing.width, math.ceil(area.col_off + area.width) + RESAMPLE_MARGIN_PX)
    end_row = min(processing.height, math.ceil(area.row_off + area.height) + RESAMPLE_MARGIN_PX)
    return Window(first_column, first_row, end_column - first_column, end_row - first_row)


def _predict_resampled(
    dataset: rasterio.io.DatasetReader,
    bands: list[int],
    grid: Grid,
    processing: Grid,
    final: OutputRasters,
    runner: TileRunner,
    tile_size_px: int,
    overlap_px: int,
    batch_size: int,
    panel_width_px: int,
    reporter: Reporter,
    window: Window | None = None,
) -> int:
    """Predict on the processing grid into a temporary float32 raster, then warp it onto the input
    grid (or its ``window``), panel by panel so that memory does not follow the width here either."""
    downsampling = processing.pixel_size_map_units[0] > grid.pixel_size_map_units[0]
    beside = final.probability_path or final.mask_path
    assert beside is not None  # predict_raster refuses a run without outputs
    staged_path = temporary_beside(beside, ".part.tif")
    staged_window = None if window is None else _processing_window(grid, processing, window)
    staged_grid = processing if staged_window is None else processing.window_grid(staged_window)
    written = grid if window is None else grid.window_grid(window)
    try:
        staged = OutputRasters(staged_grid, staged_path, "float32", None, final.threshold)
        try:
            with WarpedVRT(
                dataset,
                crs=dataset.crs,
                transform=processing.transform,
                width=processing.width,
                height=processing.height,
                add_alpha=True,
                resampling=Resampling.average if downsampling else Resampling.bilinear,
            ) as warped:
                tiles = _predict_grid(
                    warped,
                    bands,
                    processing,
                    staged,
                    runner,
                    tile_size_px,
                    overlap_px,
                    batch_size,
                    panel_width_px,
                    reporter.sub(0.0, 0.9),
                    staged_window,
                )
            staged.commit()
        except BaseException:
            staged.abort()
            raise
        with (
            rasterio.open(staged_path) as staged_dataset,
            WarpedVRT(
                staged_dataset,
                crs=dataset.crs,
                transform=written.transform,
                width=written.width,
                height=written.height,
                resampling=Resampling.bilinear,
            ) as back,
        ):
            step = reporter.sub(0.9, 1.0)
            blocks = [
                Window(left, top, min(panel_width_px, written.width - left), min(OUTPUT_BLOCK_PX, written.height - top))
                for left in range(0, written.width, panel_width_px)
                for top in range(0, written.height, OUTPUT_BLOCK_PX)
            ]
            col_off, row_off = (0, 0) if window is None else (int(window.col_off), int(window.row_off))
            for done, block in enumerate(blocks, 1):
                step.check()
                probability = back.read(1, window=block, masked=True)
                in_image = Window(block.col_off + col_off, block.row_off + row_off, block.width, block.height)
                keep = ~np.ma.getmaskarray(probability) & valid_mask(dataset, bands, in_image)
                final.write(block.col_off, block.row_off, np.where(keep, probability.data, np.nan).astype(np.float32))
                step.report(done / len(blocks), "Resampling back to the image grid")
    finally:
        staged_path.unlink(missing_ok=True)
    return tiles
