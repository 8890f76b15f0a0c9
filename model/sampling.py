"""Training data: image/label pairs held in memory as arrays, spatial train/validation split, and
random crops drawn across scenes in proportion to their usable area.

Each scene is read once (window reads of the whole grid; the label aligned onto the image grid by
``LabelSource``), so drawing a crop is an array slice, never a file access.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from rasterio.windows import Window

from .errors import InputError
from .normalization import image_band_stats
from .rasters import LABEL_IGNORE, Grid, LabelSource, check_bands, open_raster, valid_mask

# alpha bands are masks, not data: never fed to the network by default
_ALPHA = "alpha"
STRIP_ROWS = 1024
IN_MEMORY_LIMIT_BYTES = 2 * 1024**3  # larger scenes are memory-mapped from a scratch folder


@dataclass
class Scene:
    name: str
    image: np.ndarray  # (bands, H, W), the raster's own dtype
    label: np.ndarray  # (H, W) uint8: 1 building, 0 background, LABEL_IGNORE not scored
    mean: list[float]  # per-band statistics of this image (per-image normalisation)
    std: list[float]
    pixel_size: tuple[float, float]
    crs_units: str
    value_scale: float  # the dtype's full range (255 for uint8) for the paper's 0..1 scaling and gamma

    @property
    def height(self) -> int:
        return self.label.shape[0]

    @property
    def width(self) -> int:
        return self.label.shape[1]


def default_bands(image_path: str | Path) -> list[int]:
    with open_raster(image_path) as dataset:
        return [index + 1 for index, interp in enumerate(dataset.colorinterp) if interp.name != _ALPHA]


def _scene_array(shape: tuple, dtype, fill: int, scratch_dir: Optional[Path]) -> np.ndarray:
    """An array for a scene: in memory when small, else memory-mapped from a scratch file so a
    scene larger than RAM still trains (the OS pages in the crops drawn, not the whole file)."""
    if scratch_dir is None or np.prod(shape) * np.dtype(dtype).itemsize <= IN_MEMORY_LIMIT_BYTES:
        return np.full(shape, fill, dtype)
    scratch_dir.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=scratch_dir, suffix=".npy", delete=False)
    array = np.lib.format.open_memmap(handle.name, mode="w+", dtype=dtype, shape=shape)
    array[...] = fill
    return array


def load_scene(image_path: str | Path, label_path: str | Path, building_values: Sequence[int],
               bands: Sequence[int], min_size_px: int, scratch_dir: Optional[Path] = None) -> Scene:
    """Read one image/label pair strip by strip (labels aligned onto the image grid); scenes
    smaller than a crop are padded with ignored pixels."""
    with open_raster(image_path) as dataset, LabelSource(label_path, building_values, Grid.of(dataset)) as labels:
        bands = check_bands(dataset, bands)
        height, width = max(dataset.height, min_size_px), max(dataset.width, min_size_px)
        image = _scene_array((len(bands), height, width), dataset.dtypes[bands[0] - 1], 0, scratch_dir)
        label = _scene_array((height, width), np.uint8, LABEL_IGNORE, scratch_dir)
        data_max = 0.0
        for row in range(0, dataset.height, STRIP_ROWS):
            window = Window(0, row, dataset.width, min(STRIP_ROWS, dataset.height - row))
            rows = slice(row, row + int(window.height))
            strip = dataset.read(bands, window=window)
            strip_label = labels.read(window)
            valid = valid_mask(dataset, bands, window)
            strip_label[~valid] = LABEL_IGNORE
            image[:, rows, :dataset.width] = strip
            label[rows, :dataset.width] = strip_label
            if valid.any():
                data_max = max(data_max, float(np.nanmax(strip[:, valid])))
        integer = np.issubdtype(image.dtype, np.integer)
        value_scale = float(np.iinfo(image.dtype).max) if integer else max(data_max, 1.0)
        mean, std = image_band_stats(dataset, bands)
        crs_units = dataset.crs.linear_units if dataset.crs else ""
        pixel_size = Grid.of(dataset).pixel_size
    if not (label == 1).any():
        raise InputError(f"The label layer '{label_path}' marks no building pixel on the image '{image_path}' "
                         f"with building value(s) {list(building_values)}: check the building class values.")
    return Scene(Path(image_path).stem, image, label, mean, std, pixel_size, crs_units, value_scale)


def validation_blocks(scene: Scene, block_px: int, offset: int = 0) -> np.ndarray:
    """(H, W) bool: True in the validation blocks, one block in five on a diagonal pattern so
    validation areas are spread over the whole scene and never overlap training areas."""
    rows = np.arange(scene.height) // block_px
    cols = np.arange(scene.width) // block_px
    return ((cols[None, :] + 2 * rows[:, None] + offset) % 5) == 0


@dataclass
class Crop:
    scene: int
    row: int
    col: int


class CropSampler:
    """Random crop positions over several scenes, each scene drawn in proportion to its usable
    (labelled, training-side) area."""

    def __init__(self, scenes: Sequence[Scene], crop_px: int, usable: Sequence[np.ndarray],
                 rng: np.random.Generator) -> None:
        self.scenes = scenes
        self.crop_px = crop_px
        self.rng = rng
        areas = np.array([float(mask.sum()) for mask in usable])
        if areas.sum() == 0:
            raise InputError("No labelled pixels are left for training: check the label layers and nodata.")
        self.weights = areas / areas.sum()

    def draw(self, count: int) -> list[Crop]:
        picks = self.rng.choice(len(self.scenes), size=count, p=self.weights)
        crops = []
        for index in picks:
            scene = self.scenes[index]
            row = int(self.rng.integers(0, scene.height - self.crop_px + 1))
            col = int(self.rng.integers(0, scene.width - self.crop_px + 1))
            crops.append(Crop(int(index), row, col))
        return crops


def validation_crops(scene_index: int, scene: Scene, blocks: np.ndarray, crop_px: int) -> list[Crop]:
    """One crop per validation block (blocks are crop-sized), shifted inside the scene at its edges."""
    return [Crop(scene_index, min(row, scene.height - crop_px), min(col, scene.width - crop_px))
            for row in range(0, scene.height, crop_px) for col in range(0, scene.width, crop_px)
            if blocks[row, col]]


def gather(scenes: Sequence[Scene], crops: Sequence[Crop], crop_px: int,
           hidden: Optional[Sequence[np.ndarray]] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack crops into (N, C, S, S) float32 images, (N, S, S) uint8 labels and (N,) scene ids.
    Pixels in a scene's ``hidden`` mask (validation areas, when training) are blanked to the
    band means and their labels ignored, so training never sees them."""
    images = np.empty((len(crops), scenes[0].image.shape[0], crop_px, crop_px), np.float32)
    labels = np.empty((len(crops), crop_px, crop_px), np.uint8)
    for slot, crop in enumerate(crops):
        scene = scenes[crop.scene]
        window = (slice(crop.row, crop.row + crop_px), slice(crop.col, crop.col + crop_px))
        images[slot] = scene.image[(slice(None),) + window]
        labels[slot] = scene.label[window]
        if hidden is not None:
            blank = hidden[crop.scene][window]
            images[slot][:, blank] = np.asarray(scene.mean, np.float32)[:, None]
            labels[slot][blank] = LABEL_IGNORE
    return images, labels, np.array([crop.scene for crop in crops])
