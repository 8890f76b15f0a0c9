"""Prediction: a trained U-Net over a raster of any size, streamed tile by tile.

The input is never read whole: ``tile_loop.py`` streams it in column panels of overlapping,
blended tiles, with memory bounded by the panel width whatever the raster's size. The default panel
width is a multiple of the output's 256 px GeoTIFF blocks, so every compressed block is written once
(other widths are correct too; GDAL then rewrites the blocks cut by a panel border).

The network runs at the model's training pixel size for finer imagery and on the image's own pixels
for coarser imagery up to a limit (``resolution.py``): another resolution is resampled window by
window (a GDAL warped VRT), predicted on that processing grid into a temporary raster, and that
raster is warped back onto the input's grid. Outputs are always on the input's exact grid.

Output encodings are those of ``rasters.py``: probability uint8 ``round(p * 254)`` (nodata 255) or
float32 (nodata -1), mask uint8 1/0 (nodata 255) with ``p >= threshold`` as building. Input
nodata stays nodata. Files are written under temporary names and renamed when complete.

This module holds the options, the area of interest and the resampling; the tile loop is
``tile_loop.py``, the processing grid is chosen in ``resolution.py``, the network runs in
``runner.py``, the reader and writer threads are ``background.py`` and the output files ``outputs.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from ..errors import InputError
from ..io.files import (
    GEOTIFF_SUFFIXES,
    check_output_location,
    check_output_paths,
    check_output_suffix,
    temporary_beside,
)
from ..io.outputs import OUTPUT_BLOCK_PX, OutputRasters
from ..io.rasters import Grid, check_bands, open_raster, valid_mask
from ..net.device import PRECISIONS, describe_device, resolve_device
from ..net.modelfile import LoadedModel, ModelInfo, load_model
from ..net.normalization import normalization_for
from ..progress import CancelFn, ProgressFn, Reporter
from .resolution import EDGE_TOLERANCE_PX, processing_grid
from .runner import TileRunner
from .tile_loop import TileSettings, predict_grid
from .tiling import prediction_tile_px, tiles_per_batch

PROBABILITY_DTYPES = ("uint8", "float32")
# Processing pixels beyond a window's edge predicted when resampling, so that the warp back onto the
# window's pixels has all its source pixels (bilinear needs one; two for safety at fractional scales).
RESAMPLE_MARGIN_PX = 2
# Memory follows the panel width; a panel of at least 16 tiles keeps the tiles run twice at panel
# borders to a few percent.
PANEL_WIDTH_PX = 4096
PANEL_WIDTH_TILES = 16


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
    batch_size: int | None = None,
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

    ``threshold`` None uses the model's tuned threshold. ``tile_size_px`` None uses twice the model's
    training tile (``tiling.prediction_tile_px``); ``overlap_px`` None a quarter of the tile;
    ``batch_size`` None as many tiles as ``tiling.BATCH_PIXELS`` hold. ``processing_pixel_size_map_units`` None
    runs at the model's training pixel size (converted to the input CRS's units, degrees
    included), or on the input's own pixels where they are coarser, up to four times the model's
    (``resolution.not_enlarged``); a number (or [x, y]) in the input CRS's units overrides it; "native" uses the
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
    if batch_size is not None and batch_size < 1:
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
        mean, std = normalization_for(dataset, bands, info.normalization, info.value_scales)
        processing = processing_grid(dataset, info, processing_pixel_size_map_units)
        if window is not None:
            check_window(window, grid, image_path)
        runner = TileRunner(loaded.net, torch_device, mean, std, precision, tta)
        written = grid if window is None else grid.window_grid(window)
        final = OutputRasters(written, probability_path, probability_dtype, mask_path, threshold, overviews)
        try:
            batch = tiles_per_batch(batch_size, tile_size_px)
            settings = TileSettings(runner, tile_size_px, overlap_px, batch, panel_width_px)
            if processing is None:
                tiles = predict_grid(dataset, bands, grid, final, settings, reporter, window)
            else:
                tiles = _predict_resampled(dataset, bands, grid, processing, final, settings, reporter, window)
            reporter.check()
            if tiles == 0 and window is None:  # (a window in nodata is a shard's or an area's own business)
                raise InputError(
                    f"The image '{image_path}' has no valid pixels in bands {bands}: every pixel is nodata "
                    "or NaN, so there is nothing to predict. Check the image and its nodata value."
                )
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
    """(tile size, overlap) in pixels: the given ones, else ``prediction_tile_px`` and a quarter of it."""
    tile_size_px = int(tile_size_px or prediction_tile_px(info.tile_size_px))
    return tile_size_px, int(tile_size_px // 4 if overlap_px is None else overlap_px)


def extent_window(image_path: str | Path, extent: tuple[float, float, float, float]) -> Window:
    """The window of ``image_path``'s pixels that the area ``(left, bottom, right, top)``, in the
    image's CRS, touches (whole pixels, clipped to the image): what ``predict_raster`` takes."""
    with open_raster(image_path, "image") as dataset:
        grid = Grid.of(dataset)
    left, bottom, right, top = extent
    if not all(math.isfinite(value) for value in extent) or not (left < right and bottom < top):
        raise InputError(
            f"The area of interest ({left:g}, {bottom:g} : {right:g}, {top:g}) is not an extent: give four "
            "numbers with left < right and bottom < top (xmin, ymin, xmax, ymax)."
        )
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
    settings: TileSettings,
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
    written = final.grid  # the input grid, or its window
    panel_width = settings.panel_width_px
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
                tiles = predict_grid(warped, bands, processing, staged, settings, reporter.sub(0.0, 0.9), staged_window)
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
                Window(left, top, min(panel_width, written.width - left), min(OUTPUT_BLOCK_PX, written.height - top))
                for left in range(0, written.width, panel_width)
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
