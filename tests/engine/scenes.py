"""GeoTIFFs for the tests: ``write_geotiff``, the one writer every test's raster helper goes through, and
tiny georeferenced image / class-raster pairs, whose class-2 pixels are bright roofs on darker, noisy
ground, so a few training steps learn them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import from_origin

from model.io.rasters import KIND_TAG

# the real scenes (image.tif, labels.tif per scene folder); tests that read them skip without them
SHARED_DATA = Path(os.environ.get("UNET_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
UTM_36_TRANSFORM = from_origin(500000, 9000000, 0.5, 0.5)
UTM_33_TRANSFORM = from_origin(500000, 100, 0.5, 0.5)


def write_geotiff(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | CRS | None = "EPSG:32633",
    transform: Affine = UTM_33_TRANSFORM,
    nodata: float | None = None,
    kind: str | None = None,
    **creation_options,
) -> Path:
    """``data`` ((bands, H, W), or (H, W) for one band) as a GeoTIFF of its own dtype; ``kind`` is the
    plugin's tag saying what a raster is ("mask", "probability", ...)."""
    data = data if data.ndim == 3 else data[np.newaxis]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
        **creation_options,
    ) as dataset:
        dataset.write(data)
        if kind:
            dataset.update_tags(**{KIND_TAG: kind})
    return path


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
    image_path, label_path = folder / f"{name}.tif", folder / f"{name}_labels.tif"
    write_geotiff(image_path, np.clip(image, 0, 255).astype(np.uint8), crs=crs, transform=transform)
    write_geotiff(label_path, labels.astype(np.uint8), crs=crs, transform=transform)
    return str(image_path), str(label_path)
