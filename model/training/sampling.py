"""Training data: image/label pairs, spatial train/validation split, and random crops drawn across
scenes in proportion to their usable area, a share of them centred on buildings so scenes where
buildings are rare still teach what a building looks like.

Each scene is read once, strip by strip (the label aligned onto the image grid by ``LabelSource``). An
image of up to ``IN_MEMORY_LIMIT_BYTES`` is held in memory, so drawing a crop is an array slice; a
larger one stays in its file and each crop is read from it by window (``WindowedImage``), so a scene of
any size needs no copy of itself. Labels are held whole (one byte a pixel), memory-mapped from a
scratch file beside the model when over the limit.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from ..errors import InputError
from ..io.ground import ground_pixel_size_m
from ..io.rasters import LABEL_IGNORE, Grid, LabelSource, check_bands, open_raster, raster_windows, valid_mask
from ..net.normalization import BandStatistics, image_statistics

# alpha bands are masks, not data: never fed to the network by default
_ALPHA = "alpha"
STRIP_ROWS = 1024
IN_MEMORY_LIMIT_BYTES = 2 * 1024**3  # larger images are read crop by crop, larger labels memory-mapped
SCRATCH_MARGIN_BYTES = 1024**3  # left free beside a scene's scratch labels, for the model and checkpoints
# held per scene pixel while training: the validation areas, the training areas and their temporaries
# (one byte each), and the labels themselves unless memory-mapped
MASK_BYTES_PER_PX = 4
MEMORY_SHARE = 0.8  # of this computer's memory, at most, for one scene
MIN_IMAGE_PX = 32  # smaller images hold too little to train on (or to hold out validation from)
INDEX_STEP_PX = 4  # crop positions are scored on a grid this coarse: memory stays small for any scene
MIN_USABLE_FRACTION = 0.25  # a random crop with less labelled, training-side area is drawn again ...
REDRAWS = 8  # ... at most this many times


class WindowedImage:
    """A scene's bands read from their file crop by crop, for images too large to hold: ``image[:, rows,
    cols]`` reads what an in-memory copy would hold there (float voids as 0, zeros past the edges of an
    image smaller than a crop). The file stays open for the run; it must stay where it is until then."""

    def __init__(self, path: Path, bands: Sequence[int], shape: tuple[int, int, int]) -> None:
        self.path, self.bands, self.shape = path, list(bands), shape
        self.dataset = open_raster(path)

    def __getitem__(self, index: tuple[slice, slice, slice]) -> np.ndarray:
        _, rows, cols = index
        window = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
        # past the file's edges only when the image is smaller than a crop (a slower, padded read)
        past = rows.stop > self.dataset.height or cols.stop > self.dataset.width
        try:
            values = self.dataset.read(self.bands, window=window, boundless=past, fill_value=0)
            if values.dtype.kind == "f":  # as the strips of an in-memory copy: a void would spread through the net
                valid = valid_mask(self.dataset, self.bands, window, boundless=past, values=values)
                values = np.where(valid, values, 0)
        except (rasterio.errors.RasterioError, rasterio.errors.RasterioIOError) as error:
            raise InputError(
                f"The image '{self.path}' could not be read during training ({error}): an image this large is "
                "read crop by crop, so keep it unchanged where it is until training ends, or copy it again "
                "if it is damaged."
            ) from error
        return values


@dataclass
class Scene:
    name: str
    image: np.ndarray | WindowedImage  # (bands, H, W), the raster's own dtype
    label: np.ndarray  # (H, W) uint8: 1 building, 0 background, LABEL_IGNORE not scored
    statistics: BandStatistics  # per-band mean / std of this image, its value scale, its valid pixel count
    pixel_size_map_units: tuple[float, float]  # the model file keeps it as pixel_size, for older plugins
    crs_units: str
    ground_pixel_size_m: tuple[float, float] | None = None

    @property
    def mean(self) -> list[float]:
        return self.statistics.mean

    @property
    def std(self) -> list[float]:
        return self.statistics.std

    @property
    def value_scale(self) -> float:
        """What the paper's 0..1 scaling and the value-scale augmentations divide by."""
        return self.statistics.value_scale

    @property
    def height(self) -> int:
        return self.label.shape[0]

    @property
    def width(self) -> int:
        return self.label.shape[1]


def mean_ground_pixel_size_m(scenes: Sequence[Scene]) -> tuple[float, float] | None:
    """The scenes' ground pixel size averaged, each weighted by its valid pixels (a model trained on
    0.10 m and 0.20 m imagery is not a 0.10 m model); None when a scene's CRS has no ground size."""
    sizes = [scene.ground_pixel_size_m for scene in scenes]
    if not sizes or any(size is None for size in sizes):
        return None
    weights = np.array([max(scene.statistics.valid_pixels, 1) for scene in scenes], np.float64)
    x, y = weights @ np.array(sizes, np.float64) / weights.sum()
    return float(x), float(y)


def default_bands(image_path: str | Path) -> list[int]:
    with open_raster(image_path) as dataset:
        return [index + 1 for index, interp in enumerate(dataset.colorinterp) if interp.name != _ALPHA]


def _scene_array(shape: tuple, dtype, fill: int, scratch_dir: Path | None) -> np.ndarray:
    """An array for a scene's labels: in memory when small, else memory-mapped from a scratch file so a
    scene larger than RAM still trains (the OS pages in the crops drawn, not the whole file)."""
    if scratch_dir is None or np.prod(shape) * np.dtype(dtype).itemsize <= IN_MEMORY_LIMIT_BYTES:
        return np.full(shape, fill, dtype)
    scratch_dir.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=scratch_dir, suffix=".npy", delete=False)
    array = np.lib.format.open_memmap(handle.name, mode="w+", dtype=dtype, shape=shape)
    array[...] = fill
    return array


def physical_memory_bytes() -> int | None:
    """This computer's memory, or None where it cannot be told."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # Windows has no sysconf
        pass
    try:
        import ctypes

        class MemoryStatus(ctypes.Structure):
            _fields_ = [("length", ctypes.c_ulong), ("load", ctypes.c_ulong)] + [
                (name, ctypes.c_ulonglong)
                for name in (
                    "total",
                    "available",
                    "page_total",
                    "page_free",
                    "virtual_total",
                    "virtual_free",
                    "extended",
                )
            ]

        status = MemoryStatus()
        status.length = ctypes.sizeof(MemoryStatus)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
            return int(status.total)
    except (AttributeError, OSError):
        pass
    return None


def check_memory(image_path: str | Path, shape: tuple[int, int], image_bytes: int) -> None:
    """Refuse, before anything is allocated, a scene whose training masks (and image, when held) would not
    fit this computer's memory: running out of it kills the process, and in the dock QGIS with it."""
    height, width = shape
    needed = height * width * MASK_BYTES_PER_PX + image_bytes
    memory = physical_memory_bytes()
    if memory is not None and needed > MEMORY_SHARE * memory:
        raise InputError(
            f"The image '{image_path}' is {width:,} x {height:,} px: training it needs about "
            f"{needed / 1024**3:,.1f} GB of memory, and this computer has {memory / 1024**3:,.1f} GB. "
            "Train on a smaller part of it (clip the image to the labelled area)."
        )


def check_scratch_space(image_path: str | Path, shape: tuple[int, int], scratch_dir: Path | None) -> None:
    """Refuse, before anything is written, a scene whose scratch labels (one byte a pixel, memory-mapped
    beside the model) would not fit the free disk: a memory map over a full disk dies of a bus error,
    which in the dock would take QGIS down with it."""
    height, width = shape
    needed = height * width
    if scratch_dir is None or needed <= IN_MEMORY_LIMIT_BYTES:
        return
    folder = scratch_dir
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if needed + SCRATCH_MARGIN_BYTES > free:
        raise InputError(
            f"The image '{image_path}' is {width:,} x {height:,} px: training keeps its labels in a scratch file "
            f"of {needed / 1024**3:,.1f} GB beside the model, and '{folder}' has {free / 1024**3:,.1f} GB free. "
            "Train on a smaller part of it (clip the image to the labelled area) or free disk space there."
        )


def load_scene(
    image_path: str | Path,
    label_path: str | Path,
    building_values: Sequence[int],
    bands: Sequence[int],
    min_size_px: int,
    scratch_dir: Path | None = None,
) -> Scene:
    """Read one image/label pair strip by strip (labels aligned onto the image grid); scenes
    smaller than a crop are padded with ignored pixels. Labels that cannot be the buildings meant are
    refused (``label_checks``), judged on the raw values the strips held."""
    with open_raster(image_path) as dataset, LabelSource(label_path, building_values, Grid.of(dataset)) as labels:
        bands = check_bands(dataset, bands)
        if min(dataset.width, dataset.height) < MIN_IMAGE_PX:
            raise InputError(
                f"The image '{image_path}' is only {dataset.width} x {dataset.height} px: training "
                f"needs images of at least {MIN_IMAGE_PX} px on each side (better, several "
                "hundred)."
            )
        height, width = max(dataset.height, min_size_px), max(dataset.width, min_size_px)
        shape, dtype = (len(bands), height, width), np.dtype(dataset.dtypes[bands[0] - 1])
        check_scratch_space(image_path, (height, width), scratch_dir)
        image_bytes = int(np.prod(shape)) * dtype.itemsize
        by_window = scratch_dir is not None and image_bytes > IN_MEMORY_LIMIT_BYTES
        check_memory(image_path, (height, width), 0 if by_window else image_bytes)
        image = WindowedImage(Path(image_path), bands, shape) if by_window else np.zeros(shape, dtype)
        label = _scene_array((height, width), np.uint8, LABEL_IGNORE, scratch_dir)
        for window in raster_windows(dataset.width, dataset.height, STRIP_ROWS):
            rows = slice(window.row_off, window.row_off + window.height)
            strip = dataset.read(bands, window=window)
            strip_label = labels.read(window)
            valid = valid_mask(dataset, bands, window, values=strip)
            strip_label[~valid] = LABEL_IGNORE
            if isinstance(image, np.ndarray):
                if strip.dtype.kind == "f":  # a NaN void would spread through every convolution that sees it
                    strip = np.where(valid, strip, 0)
                image[:, rows, : dataset.width] = strip
            label[rows, : dataset.width] = strip_label
        statistics = image_statistics(dataset, bands)
        crs_units = dataset.crs.linear_units if dataset.crs else ""
        pixel_size_map_units = Grid.of(dataset).pixel_size_map_units
        ground = ground_pixel_size_m(dataset.crs, dataset.transform, dataset.width, dataset.height)
    labels.check_values()
    if not (label == 1).any():
        if labels.polygons is not None:
            raise InputError(
                f"The polygon layer '{label_path}' has no building polygon over the image "
                f"'{image_path}': check that it holds buildings for this image's area."
            )
        raise InputError(  # the label values passed: their buildings lie where the image has no data
            f"The label layer '{label_path}' marks buildings only where the image '{image_path}' has no "
            "data: check that both cover the same area and the image's no-data value."
        )
    return Scene(Path(image_path).stem, image, label, statistics, pixel_size_map_units, crs_units, ground)


def validation_block_px(scene: Scene, crop_px: int) -> int:
    """Crop-sized validation blocks, smaller on images under five crops across, so one block in
    five never hides most of a small image."""
    return min(crop_px, max(16, min(scene.height, scene.width) // 5 // 16 * 16))


def validation_blocks(scene: Scene, block_px: int, offset: int = 0) -> np.ndarray:
    """(H, W) bool: True in the validation blocks, one block in five on a diagonal pattern so
    validation areas are spread over the whole scene and never overlap training areas."""
    # each block index taken modulo 5 first: the (H, W) sum is one byte a pixel, not eight
    rows = (2 * (np.arange(scene.height) // block_px) % 5).astype(np.uint8)
    cols = ((np.arange(scene.width) // block_px + offset) % 5).astype(np.uint8)
    return (cols[None, :] + rows[:, None]) % 5 == 0


@dataclass
class Crop:
    scene: int
    row: int
    col: int


class _SceneIndex:
    """Where crops may go in one scene: a coarse summed-area table of its usable pixels (to score a
    crop's usable share in O(1)) and the positions of its usable building pixels."""

    def __init__(self, scene: Scene, usable: np.ndarray, crop_px: int) -> None:
        self.height, self.width, self.crop_px = scene.height, scene.width, crop_px
        coarse = usable[::INDEX_STEP_PX, ::INDEX_STEP_PX]
        self.table = np.zeros((coarse.shape[0] + 1, coarse.shape[1] + 1), np.int64)
        self.table[1:, 1:] = coarse.cumsum(0).cumsum(1)
        self.buildings = np.argwhere(coarse & (scene.label[::INDEX_STEP_PX, ::INDEX_STEP_PX] == 1)) * INDEX_STEP_PX

    def usable_fraction(self, row: int, col: int) -> float:
        side = self.crop_px // INDEX_STEP_PX
        r0, c0 = row // INDEX_STEP_PX, col // INDEX_STEP_PX
        r1, c1 = min(r0 + side, self.table.shape[0] - 1), min(c0 + side, self.table.shape[1] - 1)
        t = self.table
        return float(t[r1, c1] - t[r0, c1] - t[r1, c0] + t[r0, c0]) / max(side * side, 1)

    def clamp(self, row: int, col: int) -> tuple[int, int]:
        return (int(min(max(row, 0), self.height - self.crop_px)), int(min(max(col, 0), self.width - self.crop_px)))


class CropSampler:
    """Random crop positions over several scenes, each scene drawn in proportion to its usable
    (labelled, training-side) area. A ``building_share`` of the crops is centred (with a random
    shift of up to a quarter crop) on a random building pixel; the others are uniform positions,
    drawn again while they hold less than a quarter of usable pixels (nodata, unlabelled land or
    held-out validation blocks teach nothing), the best of a few draws kept."""

    def __init__(
        self,
        scenes: Sequence[Scene],
        crop_px: int,
        usable: Sequence[np.ndarray],
        rng: np.random.Generator,
        building_share: float = 0.0,
    ) -> None:
        self.scenes = scenes
        self.crop_px = crop_px
        self.rng = rng
        self.building_share = building_share
        areas = np.array([float(mask.sum()) for mask in usable])
        if areas.sum() == 0:
            raise InputError("No labelled pixels are left for training: check the label layers and nodata.")
        self.weights = areas / areas.sum()
        self.indexes = [_SceneIndex(scene, mask, crop_px) for scene, mask in zip(scenes, usable)]

    def draw(self, count: int) -> list[Crop]:
        picks = self.rng.choice(len(self.scenes), size=count, p=self.weights)
        return [Crop(int(index), *self._position(self.indexes[index])) for index in picks]

    def _position(self, index: _SceneIndex) -> tuple[int, int]:
        half, shift = self.crop_px // 2, self.crop_px // 4
        if len(index.buildings) and self.rng.random() < self.building_share:
            row, col = index.buildings[self.rng.integers(len(index.buildings))]
            jitter = self.rng.integers(-shift, shift + 1, 2)
            return index.clamp(row - half + jitter[0], col - half + jitter[1])
        best, best_fraction = (0, 0), -1.0
        for _ in range(REDRAWS):
            row = int(self.rng.integers(0, index.height - self.crop_px + 1))
            col = int(self.rng.integers(0, index.width - self.crop_px + 1))
            fraction = index.usable_fraction(row, col)
            if fraction >= MIN_USABLE_FRACTION:
                return row, col
            if fraction > best_fraction:
                best, best_fraction = (row, col), fraction
        return best


def validation_crops(scene_index: int, scene: Scene, blocks: np.ndarray, crop_px: int) -> list[Crop]:
    """The crops of a regular crop-sized grid (shifted inside the scene at its edges) that hold
    validation pixels: each validation pixel is scored once per epoch (twice at most at the edges)."""
    crops = []
    for row in range(0, scene.height, crop_px):
        for col in range(0, scene.width, crop_px):
            row0, col0 = min(row, scene.height - crop_px), min(col, scene.width - crop_px)
            window = blocks[row0 : row0 + crop_px, col0 : col0 + crop_px] & (
                scene.label[row0 : row0 + crop_px, col0 : col0 + crop_px] != LABEL_IGNORE
            )
            if window.any():
                crops.append(Crop(scene_index, row0, col0))
    return crops


def evenly_spread(crops: list[Crop], limit: int) -> list[Crop]:
    """At most ``limit`` crops, evenly spaced through the list (the same ones every epoch), so
    validation takes the same short time on any scene size."""
    if len(crops) <= limit:
        return crops
    return [crops[int(i)] for i in np.linspace(0, len(crops) - 1, limit).round()]


def gather(
    scenes: Sequence[Scene], crops: Sequence[Crop], crop_px: int, blanked: Sequence[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack crops into (N, C, S, S) float32 images, (N, S, S) uint8 labels and (N,) scene ids.
    Pixels in a scene's ``blanked`` mask (its validation areas when training, the rest when validating)
    are set to the band means and their labels ignored: training never sees validation pixels."""
    images = np.empty((len(crops), scenes[0].image.shape[0], crop_px, crop_px), np.float32)
    labels = np.empty((len(crops), crop_px, crop_px), np.uint8)
    for slot, crop in enumerate(crops):
        scene = scenes[crop.scene]
        window = (slice(crop.row, crop.row + crop_px), slice(crop.col, crop.col + crop_px))
        images[slot] = scene.image[(slice(None),) + window]
        labels[slot] = scene.label[window]
        if blanked is not None:
            blank = blanked[crop.scene][window]
            images[slot][:, blank] = np.asarray(scene.mean, np.float32)[:, None]
            labels[slot][blank] = LABEL_IGNORE
    return images, labels, np.array([crop.scene for crop in crops])
