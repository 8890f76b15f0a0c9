"""Tiny georeferenced image / class-raster pairs for the engine tests: class-2 pixels are bright
roofs on darker, noisy ground, so a few training steps learn them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.transform import from_origin

UTM_36_TRANSFORM = from_origin(500000, 9000000, 0.5, 0.5)


def write_pair(
    folder: Path,
    name: str,
    labels: np.ndarray,
    *,
    seed: int = 0,
    rng: np.random.Generator | None = None,
    crs: str = "EPSG:32636",
    transform: Affine = UTM_36_TRANSFORM,
) -> tuple[str, str]:
    """Writes ``<name>.tif`` (RGB uint8) and ``<name>_labels.tif`` (the class raster ``labels``)."""
    rng = rng or np.random.default_rng(seed)
    image = rng.normal(70, 12, (3, *labels.shape))
    image[:, labels == 2] += 110
    profile = dict(driver="GTiff", width=labels.shape[1], height=labels.shape[0], crs=crs, transform=transform)
    image_path, label_path = folder / f"{name}.tif", folder / f"{name}_labels.tif"
    with rasterio.open(image_path, "w", count=3, dtype="uint8", **profile) as dst:
        dst.write(np.clip(image, 0, 255).astype(np.uint8))
    with rasterio.open(label_path, "w", count=1, dtype="uint8", **profile) as dst:
        dst.write(labels, 1)
    return str(image_path), str(label_path)
