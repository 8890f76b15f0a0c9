"""Turning raw band values (uint8, uint16, float; any number of bands) into network inputs.

Two modes, recorded in the model file:
- ``fixed``: (value - mean) / std with the numbers stored in the model file. Training with
  ``normalization="dataset"`` stores its training images' pooled statistics (so a pixel's
  prediction never depends on the extent processed, and an exported model needs nothing but its
  own numbers); ``"fixed"`` (the paper preset) stores mean 0, std 255 (values scaled to 0..1).
- ``per_image``: each image is standardised by its own per-band mean and standard deviation over
  valid pixels, the default recipe's choice: it adapts to the brightness, contrast and bit depth
  of imagery the model never saw (on a held-out scene, a clearly better IoU than the training
  images' fixed statistics: README, benchmark). Its cost: statistics depend on the extent
  processed, and a nearly uniform image (fields, water) would be stretched to a town's contrast,
  so the model file also stores ``min_std``, half the training images' pooled standard deviation,
  below which no image is stretched.
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
    high: float  # the 99.9th percentile of all bands: the data's own value scale (16-bit imagery)
    valid_pixels: int  # valid pixels of the decimated read: the weight of this image when pooling


def image_statistics(dataset: rasterio.io.DatasetReader, bands: Sequence[int]) -> BandStatistics:
    """Per-band mean and std over valid pixels and the data's high value, from a decimated read
    (memory stays small for any raster size; overviews are used when the file has them)."""
    scale = max(dataset.width, dataset.height) / STATS_SAMPLE_PX
    shape = (len(bands), max(1, round(dataset.height / max(scale, 1))), max(1, round(dataset.width / max(scale, 1))))
    values = dataset.read(list(bands), out_shape=shape, masked=True).astype(np.float64)
    valid = ~np.ma.getmaskarray(values).any(axis=0)
    if not valid.any():
        raise InputError(f"The image '{dataset.name}' has no valid pixels in the chosen bands.")
    pixels = values.data[:, valid]
    std = pixels.std(axis=1)
    return BandStatistics(
        pixels.mean(axis=1).tolist(),
        np.where(std > 1e-6, std, 1.0).tolist(),
        float(np.percentile(pixels, 99.9)),
        int(valid.sum()),
    )


def image_band_stats(dataset: rasterio.io.DatasetReader, bands: Sequence[int]) -> tuple[list[float], list[float]]:
    statistics = image_statistics(dataset, bands)
    return statistics.mean, statistics.std


def pooled_statistics(parts: Sequence[BandStatistics]) -> tuple[list[float], list[float]]:
    """Per-band mean and std of several images taken together, each weighted by its valid pixels."""
    weights = np.array([part.valid_pixels for part in parts], np.float64)
    means = np.array([part.mean for part in parts])
    second_moments = np.array([part.std for part in parts]) ** 2 + means**2
    mean = weights @ means / weights.sum()
    variance = weights @ second_moments / weights.sum() - mean**2
    std = np.sqrt(np.maximum(variance, 0.0))
    return mean.tolist(), np.where(std > 1e-6, std, 1.0).tolist()


def with_contrast_floor(std: Sequence[float], settings: dict) -> list[float]:
    """Per-image standard deviations raised to the model's ``min_std`` (when it has one): an image
    of fields or water, nearly uniform, is not stretched to the contrast of a town."""
    floor = settings.get("min_std")
    if not floor or len(floor) != len(std):
        return list(std)
    return [max(value, minimum) for value, minimum in zip(std, floor)]


def normalization_for(dataset: rasterio.io.DatasetReader, bands: Sequence[int], settings: dict) -> tuple[list, list]:
    """The (mean, std) to apply to this image under a model's normalisation settings."""
    mode = settings.get("mode")
    if mode == "per_image":
        mean, std = image_band_stats(dataset, bands)
        return mean, with_contrast_floor(std, settings)
    if mode == "fixed":
        return list(settings["mean"]), list(settings["std"])
    raise InputError(f"Unknown normalisation mode {mode!r} in the model file.")


def normalize(batch: torch.Tensor, mean, std) -> torch.Tensor:
    """(N, C, H, W) raw values -> float32 standardised values. ``mean`` and ``std`` are per band
    (C,) for the whole batch, or per sample and band (N, C) when crops come from several images."""

    def as_4d(values) -> torch.Tensor:
        tensor = torch.as_tensor(values, dtype=torch.float32, device=batch.device)
        return tensor.view(1, -1, 1, 1) if tensor.ndim == 1 else tensor.view(*tensor.shape, 1, 1)

    return (batch.float() - as_4d(mean)) / as_4d(std)
