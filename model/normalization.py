"""Turning raw band values (uint8, uint16, float; any number of bands) into network inputs.

Two modes, recorded in the model file:
- ``per_image``: each image is standardised by its own per-band mean and standard deviation over
  valid pixels. Robust to scenes of different brightness or bit depth; the default.
- ``fixed``: (value - mean) / std with the numbers stored in the model file; the paper preset
  uses mean 0, std 255 (values scaled to 0..1).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import rasterio
import torch

from .errors import InputError

STATS_SAMPLE_PX = 1024  # longest side of the decimated read used for image statistics


def image_band_stats(dataset: rasterio.io.DatasetReader, bands: Sequence[int]) -> tuple[list[float], list[float]]:
    """Per-band mean and std over valid pixels, from a decimated read (memory stays small for any
    raster size; overviews are used when the file has them)."""
    scale = max(dataset.width, dataset.height) / STATS_SAMPLE_PX
    shape = (len(bands), max(1, round(dataset.height / max(scale, 1))), max(1, round(dataset.width / max(scale, 1))))
    values = dataset.read(list(bands), out_shape=shape, masked=True).astype(np.float64)
    valid = ~np.ma.getmaskarray(values).any(axis=0)
    if not valid.any():
        raise InputError(f"The image '{dataset.name}' has no valid pixels in the chosen bands.")
    pixels = values.data[:, valid]
    std = pixels.std(axis=1)
    return pixels.mean(axis=1).tolist(), np.where(std > 1e-6, std, 1.0).tolist()


def normalization_for(dataset: rasterio.io.DatasetReader, bands: Sequence[int], settings: dict) -> tuple[list, list]:
    """The (mean, std) to apply to this image under a model's normalisation settings."""
    mode = settings.get("mode")
    if mode == "per_image":
        return image_band_stats(dataset, bands)
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
