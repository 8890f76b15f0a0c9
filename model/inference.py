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
"""
from __future__ import annotations

import queue
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, TypeVar, Union

import numpy as np
import rasterio
import torch
from affine import Affine
from rasterio.enums import MaskFlags, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from .device import PRECISIONS, autocast_settings, describe_device, precision_name, resolve_device
from .errors import InputError
from .files import (GEOTIFF_SUFFIXES, check_output_location, check_output_paths, check_output_suffix,
                    incomplete_output, publish, temporary_beside)
from .ground import ground_pixel_size_m
from .modelfile import LoadedModel, ModelInfo, load_model
from .normalization import normalization_for, normalize
from .progress import CancelFn, ProgressFn, Reporter
from .rasters import (KIND_TAG, MASK_NODATA, PROBABILITY_F32_NODATA, PROBABILITY_U8_NODATA,
                      PROBABILITY_U8_SCALE, Grid, check_bands, metres_per_unit, open_raster, valid_mask,
                      written_geotiff_problem)
from .tiling import Panel, TileLayout, blend_weights, plan_panels, plan_tiles, ramp_1d, rows_extent

PROBABILITY_DTYPES = ("uint8", "float32")
OUTPUT_BLOCK_PX = 256
# Pixel sizes within this relative difference of the model's are processed as they are:
# resampling by a few percent costs a blur and buys nothing.
PIXEL_SIZE_TOLERANCE = 0.05
# Memory follows the panel width; a panel of at least 16 tiles keeps the tiles run twice at panel
# borders to a few percent.
PANEL_WIDTH_PX = 4096
PANEL_WIDTH_TILES = 16
# Beyond this factor between the input's and the processing pixel size the result is
# meaningless (buildings a few pixels wide, or a few hundred): refuse rather than guess.
MAX_RESAMPLE_FACTOR = 16.0
BatchT = TypeVar("BatchT")  # whatever TileRunner.run_ahead is given, handed back with its result


@dataclass
class PredictionResult:
    probability_path: Optional[Path]
    mask_path: Optional[Path]
    threshold: float
    device_description: str = ""
    tile_count: int = 0  # tiles the network ran on (tiles wholly in nodata are skipped)
    seconds: float = 0.0
    processing_pixel_size: tuple[float, float] = (0.0, 0.0)  # in the input CRS's units
    resampled: bool = False
    precision: str = "float32"


def predict_raster(image_path: Union[str, Path], model: Union[str, Path, LoadedModel], *,
                   probability_path: Union[str, Path, None] = None, mask_path: Union[str, Path, None] = None,
                   threshold: Optional[float] = None, probability_dtype: str = "uint8", batch_size: int = 8,
                   device: str = "auto", tile_size_px: Optional[int] = None, overlap_px: Optional[int] = None,
                   tta: bool = False, processing_pixel_size: Union[float, Sequence[float], str, None] = None,
                   precision: str = "auto", overviews: bool = False, panel_width_px: Optional[int] = None,
                   rows: Optional[tuple[int, int]] = None,
                   progress: Optional[ProgressFn] = None, cancelled: Optional[CancelFn] = None) -> PredictionResult:
    """Predict building probability for ``image_path`` and write a probability and/or mask GeoTIFF.

    ``threshold`` None uses the model's tuned threshold. ``tile_size_px`` None uses the model's
    training tile size; ``overlap_px`` None a quarter of the tile. ``processing_pixel_size`` None
    runs at the model's training pixel size (converted to the input CRS's units, degrees
    included); a number (or [x, y]) in the input CRS's units overrides it; "native" uses the
    input's own pixels. ``precision`` "auto" is what the hardware does natively
    (``device.autocast_settings``: bfloat16 on recent GPUs and CPUs with bfloat16 instructions,
    float16 on older GPUs, else float32). ``tta`` averages the 8 flips / 90° rotations of every
    tile (8x slower).
    ``panel_width_px`` None is ``PANEL_WIDTH_TILES`` tiles but at least ``PANEL_WIDTH_PX``; it
    bounds memory and does not change the result. ``rows`` ``(start, end)`` predicts only those
    rows of the input (a shard, see ``shards.py``): the outputs cover them, every pixel as in a
    prediction of the whole input (the tiles touching them run, with the whole input's
    normalisation); on the input's own pixels only.
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
    check_prediction_outputs(image_path, Path(model) if not isinstance(model, LoadedModel) else None,
                             probability_path, mask_path)

    with open_raster(image_path, "image") as dataset:
        bands = check_bands(dataset, info.bands, fix=f"The model was trained on {len(info.bands)}-band imagery "
                            f"(bands {info.bands}): predict on an image with the same bands as the training images.")
        grid = Grid.of(dataset)
        mean, std = normalization_for(dataset, bands, info.normalization)
        processing = processing_grid(dataset, info, processing_pixel_size)
        if rows is not None and processing is not None:
            raise InputError("A share of the rows is predicted on the image's own pixels only, and this image's "
                             "pixels differ from the model's: set the processing pixel size to 'native', or "
                             "resample the image to the model's pixel size first (gdalwarp -tr).")
        runner = TileRunner(loaded.net, torch_device, mean, std, precision, tta)
        written = grid if rows is None else grid.window_grid(Window(0, rows[0], grid.width, rows[1] - rows[0]))
        final = OutputRasters(written, probability_path, probability_dtype, mask_path, threshold, overviews)
        try:
            if processing is None:
                tiles = _predict_grid(dataset, bands, grid, final, runner, tile_size_px, overlap_px,
                                      batch_size, panel_width_px, reporter, rows)
            else:
                tiles = _predict_resampled(dataset, bands, grid, processing, final, runner, tile_size_px,
                                           overlap_px, batch_size, panel_width_px, reporter)
            reporter.check()
            final.commit()
        except BaseException:
            final.abort()
            raise
    reporter.report(1.0, "Prediction written.")
    used = processing or grid
    return PredictionResult(final.probability_path, final.mask_path, threshold, describe_device(torch_device),
                            tiles, time.perf_counter() - started, used.pixel_size, processing is not None,
                            runner.precision_name)


def tiling_options(info: ModelInfo, tile_size_px: Optional[int], overlap_px: Optional[int]) -> tuple[int, int]:
    """(tile size, overlap) in pixels: the given ones, else the model's tile and a quarter of it."""
    tile_size_px = int(tile_size_px or info.tile_size_px)
    return tile_size_px, int(tile_size_px // 4 if overlap_px is None else overlap_px)


def check_prediction_outputs(image_path: Path, model_path: Optional[Path], probability_path: Optional[Path],
                             mask_path: Optional[Path]) -> None:
    """Refuse outputs that would overwrite an input or each other, or could not be GeoTIFFs where asked."""
    outputs = {"probability raster": probability_path, "mask raster": mask_path}
    check_output_paths({"image": image_path, "model file": model_path}, outputs)
    for name, path in outputs.items():
        if path is not None:
            check_output_location(path, name)
            check_output_suffix(path, GEOTIFF_SUFFIXES, "a GeoTIFF", name)


# ---------------------------------------------------------------------------------------------
# Processing resolution

def model_pixel_size_in_input_units(dataset: rasterio.io.DatasetReader, info: ModelInfo) -> Optional[tuple[float, float]]:
    """The model's training pixel size expressed in the input CRS's units, or None when unknown.

    Sizes are matched on the ground (``ground.py``): a model trained on 0.15 m Web Mercator pixels
    near the equator gets 0.15 ground metres on a Web Mercator image at 50 degrees (0.23 Web
    Mercator "metres"), on UTM, feet or degrees alike. Model files from before ground sizes were
    stored fall back to their CRS's unit name (metres, feet; degrees at the centre latitude)."""
    native = Grid.of(dataset).pixel_size
    input_ground = ground_pixel_size_m(dataset.crs, dataset.transform, dataset.width, dataset.height)
    if info.ground_pixel_size_m and input_ground:
        return (native[0] * float(info.ground_pixel_size_m[0]) / input_ground[0],
                native[1] * float(info.ground_pixel_size_m[1]) / input_ground[1])
    if not info.pixel_size:
        return None
    size_x, size_y = (float(value) for value in info.pixel_size)
    model_metres = metres_per_unit(info.crs_units or "")
    if model_metres is None or input_ground is None:
        return size_x, size_y  # units unknown on one side: assume the same units
    # the old model's pixel in metres, over the input's ground metres per unit
    return (size_x * model_metres * native[0] / input_ground[0], size_y * model_metres * native[1] / input_ground[1])


def processing_grid(dataset: rasterio.io.DatasetReader, info: ModelInfo,
                    processing_pixel_size: Union[float, Sequence[float], str, None]) -> Optional[Grid]:
    """The grid the network runs on, or None to run on the input's own pixels."""
    grid = Grid.of(dataset)
    if isinstance(processing_pixel_size, str):
        if processing_pixel_size != "native":
            raise InputError(f"The processing pixel size must be a number, [x, y] or 'native', "
                             f"not {processing_pixel_size!r}.")
        return None
    if dataset.crs is None:
        if processing_pixel_size is None:
            return None  # pixels without a georeference have no size to match: run on them as they are
        raise InputError(f"The image '{dataset.name}' has no coordinate reference system, so it cannot be "
                         "resampled to a pixel size: leave the processing pixel size empty.")
    if processing_pixel_size is None:
        target = model_pixel_size_in_input_units(dataset, info)
        if target is None:
            return None
    else:
        values = [float(value) for value in np.atleast_1d(processing_pixel_size)]
        target = (values[0], values[-1])
    if min(target) <= 0:
        raise InputError(f"The processing pixel size must be positive, got {target}.")
    native = grid.pixel_size
    factors = (target[0] / native[0], target[1] / native[1])
    if all(abs(factor - 1.0) <= PIXEL_SIZE_TOLERANCE for factor in factors):
        return None
    if any(not 1 / MAX_RESAMPLE_FACTOR <= factor <= MAX_RESAMPLE_FACTOR for factor in factors):
        raise InputError(f"The image's pixels ({native[0]:.6g} x {native[1]:.6g}) differ from the processing "
                         f"pixel size ({target[0]:.6g} x {target[1]:.6g}) by more than {MAX_RESAMPLE_FACTOR:g} "
                         "times: use imagery close to the model's training resolution, or set the processing "
                         "pixel size explicitly ('native' to run on the image's own pixels).")
    width = max(1, round(grid.width / factors[0]))
    height = max(1, round(grid.height / factors[1]))
    # Scaling the input's geotransform keeps its origin, orientation and extent.
    transform = grid.transform * Affine.scale(grid.width / width, grid.height / height)
    return Grid(grid.crs_wkt, transform, width, height)


# ---------------------------------------------------------------------------------------------
# Running the network

class TileRunner:
    """Normalises raw tiles and runs the network on them: inference mode, channels_last, autocast,
    optional test-time augmentation. Returns float32 probabilities.

    Out of GPU memory, a batch is run again in halves (down to single tiles), and later batches
    keep the smaller size: the first time, ``take_notice`` returns a message saying so."""

    def __init__(self, net: torch.nn.Module, device: torch.device, mean: Sequence[float], std: Sequence[float],
                 precision: str = "auto", tta: bool = False) -> None:
        self.device = device
        self.mean, self.std = list(mean), list(std)
        self.tta = tta
        self._autocast_dtype, _ = autocast_settings(device, precision)
        self.precision_name = precision_name(self._autocast_dtype)
        self.batch_limit: Optional[int] = None  # tiles per forward pass once memory ran out
        self._notice: Optional[str] = None
        self._notice_from: Optional[int] = None
        # Mutating the caller's network is harmless: eval mode and memory format change no weights.
        self.net = net.to(device=device, memory_format=torch.channels_last).eval()

    def _autocast(self):
        if self._autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast_dtype)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            logits = self.net(batch.contiguous(memory_format=torch.channels_last))
        return torch.sigmoid(logits.float())[:, 0]

    def _probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        if not self.tta:
            return self._forward(batch)
        total = torch.zeros(batch.shape[0], batch.shape[2], batch.shape[3], device=self.device)
        for flip in (False, True):
            flipped = batch.flip(-1) if flip else batch
            for turns in range(4):
                probability = self._forward(torch.rot90(flipped, turns, (-2, -1)))
                probability = torch.rot90(probability, -turns, (-2, -1))
                total += probability.flip(-1) if flip else probability
        return total / 8

    def _in_parts(self, batch: torch.Tensor) -> torch.Tensor:
        """``_probabilities`` over the batch, in parts of at most ``batch_limit`` tiles, halving the
        limit whenever the GPU runs out of memory."""
        parts: list[torch.Tensor] = []
        start = 0
        while start < len(batch):
            size = min(self.batch_limit or len(batch), len(batch) - start)
            try:
                parts.append(self._probabilities(batch[start:start + size]))
                start += size
                continue
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise InputError("The GPU ran out of memory on a single tile: free GPU memory (close other "
                                     "programs using it), use a smaller tile size, or predict on the CPU.") from None
            # Outside the except block, so the exception's frames (holding GPU tensors) are freed.
            self.batch_limit = size // 2
            # One message per batch however often it halved: from the size that failed first.
            self._notice_from = self._notice_from or size
            self._notice = (f"Out of GPU memory with {self._notice_from} tiles per batch: continuing with "
                            f"{self.batch_limit} or fewer.")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def take_notice(self) -> Optional[str]:
        """A message about a reduced batch size, returned once (then None)."""
        notice, self._notice, self._notice_from = self._notice, None, None
        return notice

    @torch.inference_mode()
    def _start(self, raw: np.ndarray, valid: np.ndarray) -> Callable[[], np.ndarray]:
        """Queue a batch on the device; the returned function waits for its probabilities.

        On a GPU every copy is asynchronous: page-locked host buffers both ways (from pageable
        memory CUDA would block the host until the GPU had finished the batch before) and an event
        marking the result's arrival. On the CPU the work is done here."""
        tensor, valid_t = torch.from_numpy(raw), torch.from_numpy(valid)
        on_gpu = self.device.type == "cuda"
        if on_gpu:
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
            valid_t = valid_t.pin_memory().to(self.device, non_blocking=True)
        # Nodata and padding become the band mean (0 after normalising), the least surprising value.
        probabilities = self._in_parts(normalize(tensor, self.mean, self.std) * valid_t.unsqueeze(1))
        if not on_gpu:
            result = probabilities.numpy()
            return lambda: result
        host = torch.empty(probabilities.shape, dtype=probabilities.dtype, pin_memory=True)
        host.copy_(probabilities, non_blocking=True)
        arrived = torch.cuda.Event()
        arrived.record()

        def wait() -> np.ndarray:
            arrived.synchronize()
            return host.numpy()
        return wait

    def __call__(self, raw: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(N, C, H, W) raw band values and (N, H, W) validity -> (N, H, W) float32 probabilities."""
        return self._start(raw, valid)()

    def run_ahead(self, batches: Iterable[BatchT]) -> Iterator[tuple[BatchT, np.ndarray]]:
        """``(batch, probabilities)`` for batches that have ``.raw`` and ``.valid``, in order. The
        next batch is queued on the GPU before a batch's probabilities are handed over, so what the
        caller does with them (blending, encoding) overlaps the GPU's work instead of idling it."""
        pending: Optional[tuple[BatchT, Callable[[], np.ndarray]]] = None
        for batch in batches:
            started = (batch, self._start(batch.raw, batch.valid))
            if pending is not None:
                yield pending[0], pending[1]()
            pending = started
        if pending is not None:
            yield pending[0], pending[1]()


# ---------------------------------------------------------------------------------------------
# Background threads

class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


class Prefetcher:
    """Runs a producer in a background thread, ``depth`` items ahead of the consumer, so reading
    overlaps compute. Errors in the producer surface in the consumer; ``close`` stops it early."""

    def __init__(self, produce: Callable[[], Iterator], depth: int = 2) -> None:
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(produce,), daemon=True, name="unet-reader")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, produce: Callable[[], Iterator]) -> None:
        try:
            for item in produce():
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as error:  # handed to the consumer, which re-raises it
            self._put(_Failure(error))

    def __iter__(self) -> Iterator:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class BackgroundWriter:
    """Hands blocks of rows to ``write(col_off, row_off, rows)`` in a background thread
    (compression and disk writes overlap compute). The first error is re-raised on the next
    ``put`` or on ``finish``."""

    def __init__(self, write: Callable[[int, int, np.ndarray], None], depth: int = 1) -> None:
        self._write = write
        self._queue: queue.Queue = queue.Queue(depth)
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="unet-writer")
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:  # after an error keep draining so ``put`` never blocks forever
                try:
                    self._write(*item)
                except BaseException as error:
                    self._error = error

    def put(self, col_off: int, row_off: int, rows: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((col_off, row_off, rows))

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


# ---------------------------------------------------------------------------------------------
# Writing outputs

def _create_geotiff(path: Path, grid: Grid, dtype: str, nodata: float, kind: str) -> rasterio.io.DatasetWriter:
    block = OUTPUT_BLOCK_PX
    profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=1, dtype=dtype,
                   crs=grid.crs, transform=grid.transform, nodata=nodata, compress="deflate",
                   predictor=3 if dtype == "float32" else 2, BIGTIFF="IF_SAFER")
    if grid.width >= block and grid.height >= block:  # GeoTIFF tiles larger than the raster only waste space
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    dataset = rasterio.open(path, "w", **profile)
    dataset.update_tags(**{KIND_TAG: kind})
    return dataset


@dataclass
class _OutputFile:
    path: Path
    temporary: Path
    dataset: rasterio.io.DatasetWriter
    kind: str
    pending: list  # encoded rows not yet making a whole GeoTIFF block row


class OutputRasters:
    """The probability and/or mask GeoTIFFs of one prediction, fed with float32 probability rows
    (NaN = nodata) one column panel at a time, each top to bottom. Rows are encoded at once (1 byte
    a pixel for uint8 outputs) and written in whole GeoTIFF block rows of the panel, so each
    compressed block is written once whatever the size of GDAL's block cache when panel borders
    are multiples of the block size. Files live under temporary names until ``commit``."""

    def __init__(self, grid: Grid, probability_path: Optional[Path], probability_dtype: str,
                 mask_path: Optional[Path], threshold: float, overviews: bool = False) -> None:
        self.grid = grid
        self.probability_path, self.mask_path = probability_path, mask_path
        self.probability_dtype = probability_dtype
        self.threshold = threshold
        self.overviews = overviews
        self._pending_col_off = 0
        self._pending_row_off = 0
        self._pending_rows = 0
        self._files: list[_OutputFile] = []
        try:
            if probability_path is not None:
                nodata = PROBABILITY_U8_NODATA if probability_dtype == "uint8" else PROBABILITY_F32_NODATA
                self._open(probability_path, probability_dtype, nodata, "probability")
            if mask_path is not None:
                self._open(mask_path, "uint8", MASK_NODATA, "mask")
        except BaseException:
            self.abort()
            raise

    def _open(self, path: Path, dtype: str, nodata: float, kind: str) -> None:
        temporary = temporary_beside(path, ".part.tif")
        try:
            dataset = _create_geotiff(temporary, self.grid, dtype, nodata, kind)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        self._files.append(_OutputFile(path, temporary, dataset, kind, []))

    def _encode(self, kind: str, probability: np.ndarray, nodata: np.ndarray) -> np.ndarray:
        if kind == "mask":
            encoded = (probability >= self.threshold).view(np.uint8)  # NaN compares False
            encoded[nodata] = MASK_NODATA
        elif self.probability_dtype == "uint8":
            scaled = probability * PROBABILITY_U8_SCALE
            np.nan_to_num(scaled, copy=False)
            encoded = np.rint(scaled, out=scaled).astype(np.uint8)
            encoded[nodata] = PROBABILITY_U8_NODATA
        else:
            encoded = probability.copy()
            encoded[nodata] = PROBABILITY_F32_NODATA
        return encoded

    def _flush(self, rows: int) -> None:
        for output in self._files:
            block = np.concatenate(output.pending) if len(output.pending) > 1 else output.pending[0]
            window = Window(self._pending_col_off, self._pending_row_off, block.shape[1], rows)
            output.dataset.write(block[:rows], 1, window=window)
            output.pending = [block[rows:]] if rows < len(block) else []
        self._pending_row_off += rows
        self._pending_rows -= rows

    def write(self, col_off: int, row_off: int, probability: np.ndarray) -> None:
        """Within a panel (same ``col_off`` and width) rows must arrive top to bottom without gaps;
        a new ``col_off`` starts the next panel."""
        if self._pending_rows and col_off != self._pending_col_off:
            self._flush(self._pending_rows)  # the previous panel's last rows
        if not self._pending_rows:
            self._pending_col_off, self._pending_row_off = col_off, row_off
        nodata = np.isnan(probability)
        for output in self._files:
            output.pending.append(self._encode(output.kind, probability, nodata))
        self._pending_rows += probability.shape[0]
        complete = self._pending_rows - self._pending_rows % OUTPUT_BLOCK_PX
        if complete:
            self._flush(complete)

    def commit(self) -> None:
        if self._pending_rows:
            self._flush(self._pending_rows)
        for output in self._files:
            if self.overviews:
                longest = max(self.grid.width, self.grid.height)
                factors = [2 ** level for level in range(1, 16) if longest >> level >= OUTPUT_BLOCK_PX]
                if factors:
                    resampling = Resampling.nearest if output.kind == "mask" else Resampling.average
                    output.dataset.build_overviews(factors, resampling)
            output.dataset.close()
        for output in self._files:  # GDAL only logs a failed write (a full disk): check before any rename
            problem = written_geotiff_problem(output.temporary, self.grid.width, self.grid.height)
            if problem:
                raise incomplete_output(output.path, problem)
        for output in self._files:
            publish(output.temporary, output.path)
        self._files = []

    def abort(self) -> None:
        for output in self._files:
            try:
                output.dataset.close()
            finally:
                output.temporary.unlink(missing_ok=True)
        self._files = []


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


def _read_tiles(source: rasterio.io.DatasetReader, bands: list[int], layout: TileLayout,
                panels: Sequence[Panel], batch_size: int, row_off: int = 0) -> Iterator[_TileBatch]:
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
            strip_window = Window(panel.extent_left, row_off + top, panel.extent_width,
                                  min(tile_h, layout.height - top))
            strip = source.read(bands, window=strip_window)
            if strip.dtype not in (np.uint8, np.int16, np.float32):
                strip = strip.astype(np.float32)  # torch takes these as they are; others travel as float32
            strip_valid = (np.ones(strip.shape[1:], bool) if all_valid
                           else valid_mask(source, bands, strip_window))
            for column_index in range(panel.first_column, panel.end_column):
                flat_index += 1
                left = layout.columns[column_index] - panel.extent_left
                valid = strip_valid[:, left:left + tile_w]
                if not valid.any():
                    continue
                raw = strip[:, :, left:left + tile_w]
                if valid.shape != (tile_h, tile_w):
                    # Only rasters smaller than a tile leave tiles short of pixels: pad as nodata.
                    padded_raw = np.zeros((len(bands), tile_h, tile_w), strip.dtype)
                    padded_valid = np.zeros((tile_h, tile_w), bool)
                    padded_raw[:, :raw.shape[1], :raw.shape[2]] = raw
                    padded_valid[:valid.shape[0], :valid.shape[1]] = valid
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

    def add(self, raw: np.ndarray, valid: np.ndarray, row: int, column: int, flat_index: int) -> Optional[_TileBatch]:
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
            total[start:start + tile_px] += ramp
        return total[:length]

    def add(self, row_index: int, column_index: int, probability: np.ndarray, valid: np.ndarray) -> None:
        while self.row_index < row_index:
            self._finish_row()
        left = self.layout.columns[column_index] - self.panel.extent_left
        width = min(self.layout.tile_width_px, self.panel.extent_width - left)
        height = min(self.layout.tile_height_px, self.layout.height - self.layout.rows[row_index])
        self.sums[:height, left:left + width] += (probability * self.weights)[:height, :width]
        self.valid[:height, left:left + width] |= valid[:height, :width]

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


class _RowRange:
    """Passes on to ``sink`` only the rows ``[start, end)`` of what it is given, numbered from 0."""

    def __init__(self, sink: OutputRasters, start: int, end: int) -> None:
        self.sink, self.start, self.end = sink, start, end

    def write(self, col_off: int, row_off: int, probability: np.ndarray) -> None:
        first, last = max(row_off, self.start), min(row_off + len(probability), self.end)
        if first < last:
            self.sink.write(col_off, first - self.start, probability[first - row_off:last - row_off])


def _predict_grid(source: rasterio.io.DatasetReader, bands: list[int], grid: Grid, sink: OutputRasters,
                  runner: TileRunner, tile_size_px: int, overlap_px: int, batch_size: int, panel_width_px: int,
                  reporter: Reporter, rows: Optional[tuple[int, int]] = None) -> int:
    """Predict every tile of ``source`` (whose pixels are ``grid``) into ``sink``, panel by panel;
    returns the number of tiles run. With ``rows`` only the tile rows touching those output rows
    run, and only those rows reach ``sink``, numbered from 0."""
    multiple = runner.net.config.size_multiple_px
    layout = plan_tiles(grid.width, grid.height, tile_size_px, overlap_px, multiple)
    row_off = 0
    if rows is not None:
        row_off, bottom, first = rows_extent(layout, *rows)
        whole = layout
        layout = plan_tiles(grid.width, bottom - row_off, tile_size_px, overlap_px, multiple)
        if layout.rows != tuple(top - row_off for top in whole.rows[first:first + len(layout.rows)]):
            raise RuntimeError(f"The tile rows of rows {rows} do not line up with the whole raster's.")
        sink = _RowRange(sink, rows[0] - row_off, rows[1] - row_off)
    panels = plan_panels(layout, panel_width_px)
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
            reporter.report((batch.first_index + len(batch.rows)) / tile_total,
                            runner.take_notice() or f"Predicted {tiles} tiles of {tile_total}")
        band.finish()
        for band in bands_of_panels:
            band.finish()
    finally:
        reader.close()
        writer.finish()
    return tiles


def _predict_resampled(dataset: rasterio.io.DatasetReader, bands: list[int], grid: Grid, processing: Grid,
                       final: OutputRasters, runner: TileRunner, tile_size_px: int, overlap_px: int,
                       batch_size: int, panel_width_px: int, reporter: Reporter) -> int:
    """Predict on the processing grid into a temporary float32 raster, then warp it onto the input
    grid, panel by panel so that memory does not follow the width here either."""
    downsampling = processing.pixel_size[0] > grid.pixel_size[0]
    staged_path = temporary_beside(final.probability_path or final.mask_path, ".part.tif")
    try:
        staged = OutputRasters(processing, staged_path, "float32", None, final.threshold)
        try:
            with WarpedVRT(dataset, crs=dataset.crs, transform=processing.transform, width=processing.width,
                           height=processing.height, add_alpha=True,
                           resampling=Resampling.average if downsampling else Resampling.bilinear) as warped:
                tiles = _predict_grid(warped, bands, processing, staged, runner, tile_size_px, overlap_px,
                                      batch_size, panel_width_px, reporter.sub(0.0, 0.9))
            staged.commit()
        except BaseException:
            staged.abort()
            raise
        with rasterio.open(staged_path) as staged_dataset, \
                WarpedVRT(staged_dataset, crs=dataset.crs, transform=grid.transform, width=grid.width,
                          height=grid.height, resampling=Resampling.bilinear) as back:
            step = reporter.sub(0.9, 1.0)
            windows = [Window(left, top, min(panel_width_px, grid.width - left), min(OUTPUT_BLOCK_PX, grid.height - top))
                       for left in range(0, grid.width, panel_width_px)
                       for top in range(0, grid.height, OUTPUT_BLOCK_PX)]
            for done, window in enumerate(windows, 1):
                step.check()
                probability = back.read(1, window=window, masked=True)
                keep = ~np.ma.getmaskarray(probability) & valid_mask(dataset, bands, window)
                final.write(window.col_off, window.row_off, np.where(keep, probability.data, np.nan).astype(np.float32))
                step.report(done / len(windows), "Resampling back to the image grid")
    finally:
        staged_path.unlink(missing_ok=True)
    return tiles
