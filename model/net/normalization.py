"""Turning raw band values (uint8, uint16, float; any number of bands) into network inputs.

Two modes, recorded in the model file:
- ``fixed``: (value - mean) / std with the numbers stored in the model file. Training with
  ``normalization="dataset"``, the default recipe's choice, stores its training images' pooled
  statistics, so a pixel's prediction never depends on the extent or file processed, and an
  exported model needs nothing but its own numbers; the default augmentation's photometric changes
  stand in for other cameras and light (on the leave-one-scene-out benchmark as good as
  ``per_image``: README). ``"fixed"`` (the paper preset) stores mean 0, std 255 (values / 255).
  The numbers are in the units of a stored ``value_scale`` (255 for 8-bit training images) and are
  scaled to each image's own value scale, so a 0..1 float copy of an 8-bit image gets the same
  inputs as the original (model files before it: the training images' one value scale, when they
  shared one, else the numbers as they are).
- ``per_image``: each image is standardised by its own per-band mean and standard deviation over
  valid pixels: it adapts to the brightness, contrast and bit depth of imagery the model never saw.
  Its cost: statistics depend on the extent
  processed, and a nearly uniform image (fields, water) would be stretched to a town's contrast,
  so the model file also stores ``min_relative_std``, half the training images' pooled standard
  deviation as a fraction of their value scale (255 for 8-bit data): below that floor, scaled to
  each image's own value scale, no image is stretched. A floor in the images' units would squash a
  0..1 float image, whose whole range is below an 8-bit floor, to a constant. (Model files before
  it stored ``min_std`` in the training images' units; it still applies to them as it is.)

Pixels that are NaN or infinite count as nodata everywhere: statistics, training, prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
import torch

from ..errors import InputError

STATS_SAMPLE_PX = 1024  # longest side of the decimated read used for image statistics


@dataclass(frozen=True)
class BandStatistics:
    mean: list[float]
    std: list[float]
    value_scale: float  # what "full range" means for this image (``value_scale``)
    valid_pixels: int  # valid pixels of the decimated read: the weight of this image when pooling


def image_statistics(dataset: rasterio.io.DatasetReader, bands: Sequence[int]) -> BandStatistics:
    """Per-band mean and std over valid pixels and the data's value scale, from a decimated read
    (memory stays small for any raster size; overviews are used when the file has them)."""
    scale = max(dataset.width, dataset.height) / STATS_SAMPLE_PX
    shape = (len(bands), max(1, round(dataset.height / max(scale, 1))), max(1, round(dataset.width / max(scale, 1))))
    values = dataset.read(list(bands), out_shape=shape, masked=True).astype(np.float64)
    valid = ~np.ma.getmaskarray(values).any(axis=0) & np.isfinite(values.data).all(axis=0)
    if not valid.any():
        raise InputError(
            f"The image '{dataset.name}' has no valid pixels in bands {list(bands)}: every pixel is nodata or "
            "NaN. Check the image and its nodata value, or pick the bands that hold the imagery."
        )
    pixels = values.data[:, valid]
    std = pixels.std(axis=1)
    scale = value_scale(np.dtype(dataset.dtypes[bands[0] - 1]), float(np.percentile(pixels, 99.9)))
    return BandStatistics(
        pixels.mean(axis=1).tolist(), np.where(std > 1e-6, std, 1.0).tolist(), scale, int(valid.sum())
    )


def value_scale(dtype: np.dtype, high: float) -> float:
    """The full range of an image's values: 255 for 8-bit data; 1 or 255 for float data within them,
    the usual float copies of 8-bit imagery (reflectance 0..1, or 0..255), so that they are scaled
    exactly as their original; else the data's own high value ``high`` (11-14 bit data in uint16)."""
    if dtype == np.uint8:
        return 255.0
    if dtype.kind == "f":
        for full_range in (1.0, 255.0):
            if 0 < high <= full_range * (1 + 1e-6):
                return full_range
    return max(high, 1e-6)


def pooled_statistics(parts: Sequence[BandStatistics]) -> tuple[list[float], list[float]]:
    """Per-band mean and std of several images taken together, each weighted by its valid pixels."""
    weights = np.array([part.valid_pixels for part in parts], np.float64)
    means = np.array([part.mean for part in parts])
    second_moments = np.array([part.std for part in parts]) ** 2 + means**2
    mean = weights @ means / weights.sum()
    variance = weights @ second_moments / weights.sum() - mean**2
    std = np.sqrt(np.maximum(variance, 0.0))
    return mean.tolist(), np.where(std > 1e-6, std, 1.0).tolist()


def relative(part: BandStatistics) -> BandStatistics:
    """An image's statistics in units of its own value scale (8-bit data divided by 255)."""
    return BandStatistics(
        [value / part.value_scale for value in part.mean],
        [value / part.value_scale for value in part.std],
        1.0,
        part.valid_pixels,
    )


def relative_contrast_floor(parts: Sequence[BandStatistics], fraction: float) -> list[float]:
    """``fraction`` of the images' pooled per-band standard deviation, each image's in units of its
    own value scale: the ``min_relative_std`` a per-image model file stores."""
    return [value * fraction for value in pooled_statistics([relative(part) for part in parts])[1]]


def pooled_in_value_scale(parts: Sequence[BandStatistics], scale: float) -> tuple[list[float], list[float]]:
    """The images' pooled per-band mean and std, each image taken in units of its own value scale and
    the result expressed in ``scale``: images of other bit depths pool as what they show."""
    mean, std = pooled_statistics([relative(part) for part in parts])
    return [value * scale for value in mean], [value * scale for value in std]


def fixed_value_scale(settings: dict, value_scales: Sequence[float] | None = None) -> float | None:
    """The value scale a fixed normalisation's numbers are in: stored with them, else the training
    images' one value scale (model files before it stored it apart), else None: applied as they are."""
    if settings.get("value_scale"):
        return float(settings["value_scale"])
    if value_scales and len(set(value_scales)) == 1:
        return float(value_scales[0])
    return None


def image_value_scale(dataset: rasterio.io.DatasetReader, bands: Sequence[int]) -> float:
    """The image's value scale (``value_scale``), without reading a pixel for 8-bit data."""
    if np.dtype(dataset.dtypes[bands[0] - 1]) == np.uint8:
        return 255.0
    return image_statistics(dataset, bands).value_scale


def with_contrast_floor(statistics: BandStatistics, settings: dict) -> list[float]:
    """An image's per-band standard deviations raised to the model's contrast floor (when it has one):
    an image of fields or water, nearly uniform, is not stretched to the contrast of a town."""
    std = list(statistics.std)
    floor = settings.get("min_relative_std")
    if floor is not None:
        floor = [value * statistics.value_scale for value in floor]
    else:
        floor = settings.get("min_std")  # model files before the relative floor: in their images' units
    if not floor or len(floor) != len(std):
        return std
    return [max(value, minimum) for value, minimum in zip(std, floor)]


def normalization_for(
    dataset: rasterio.io.DatasetReader,
    bands: Sequence[int],
    settings: dict,
    value_scales: Sequence[float] | None = None,
) -> tuple[list, list]:
    """The (mean, std) to apply to this image under a model's normalisation settings (``value_scales``:
    the model's training images', for files whose fixed numbers carry no value scale of their own)."""
    mode = settings.get("mode")
    if mode == "per_image":
        statistics = image_statistics(dataset, bands)
        return statistics.mean, with_contrast_floor(statistics, settings)
    if mode == "fixed":
        scale = fixed_value_scale(settings, value_scales)
        ratio = image_value_scale(dataset, bands) / scale if scale else 1.0
        return [value * ratio for value in settings["mean"]], [value * ratio for value in settings["std"]]
    raise InputError(f"Unknown normalisation mode {mode!r} in the model file.")


def normalize(batch: torch.Tensor, mean, std) -> torch.Tensor:
    """(N, C, H, W) raw values -> float32 standardised values. ``mean`` and ``std`` are per band
    (C,) for the whole batch, or per sample and band (N, C) when crops come from several images."""

    def as_4d(values) -> torch.Tensor:
        tensor = torch.as_tensor(values, dtype=torch.float32, device=batch.device)
        return tensor.view(1, -1, 1, 1) if tensor.ndim == 1 else tensor.view(*tensor.shape, 1, 1)

    return (batch.float() - as_4d(mean)) / as_4d(std)
