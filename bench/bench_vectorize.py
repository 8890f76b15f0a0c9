"""Vectorization benchmark: streamed mask -> polygons against a bare in-memory polygonisation.

Run from the repository root: ``.venv/bin/python bench/bench_vectorize.py [--size-px N]``.

A synthetic mask (rectangles and L shapes of building size, many cut by the processing windows)
is vectorised by ``polygons_from_mask`` (streamed by windows, pieces merged back, attributes,
mean probability) and, side by side in the same run, by a bare loop: one
``rasterio.features.shapes`` call over the whole mask already in memory, turning each shape into
a shapely polygon and nothing else. Printed: megapixels and polygons per second, the ratio engine
/ bare, the cost of regularisation, and GeoPackage writing speed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import shapely.geometry
from rasterio.features import shapes
from rasterio.transform import from_origin

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.io.rasters import KIND_TAG, MASK_NODATA  # noqa: E402
from model.io.vector_io import write_polygons  # noqa: E402
from model.vectors.vectorize import polygons_from_mask  # noqa: E402


def synthetic_mask(size_px: int, seed: int = 0) -> np.ndarray:
    """Buildings 8-40 px wide on a 48 px grid with random offsets, about one in six an L shape."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size_px, size_px), np.uint8)
    for top in range(0, size_px - 48, 48):
        for left in range(0, size_px - 48, 48):
            height, width = rng.integers(8, 40, 2)
            y, x = top + rng.integers(0, 48 - height), left + rng.integers(0, 48 - width)
            mask[y : y + height, x : x + width] = 1
            if rng.random() < 1 / 6:
                mask[y + height // 2 : y + height, x + width // 2 : x + width] = 0
    return mask


def write(path: Path, data: np.ndarray, kind: str, nodata: int) -> Path:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=data.dtype,
        crs="EPSG:32633",
        transform=from_origin(500000, 100000, 0.3, 0.3),
        nodata=nodata,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    ) as dataset:
        dataset.write(data, 1)
        dataset.update_tags(**{KIND_TAG: kind})
    return path


def timed(function) -> tuple[float, object]:
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-px", type=int, default=4096)
    arguments = parser.parse_args()
    size = arguments.size_px
    megapixels = size * size / 1e6
    mask = synthetic_mask(size)
    probability = np.where(mask == 1, 200, 40).astype(np.uint8)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        mask_path = write(folder / "mask.tif", mask, "mask", MASK_NODATA)
        probability_path = write(folder / "probability.tif", probability, "probability", 255)

        def bare() -> list:
            with rasterio.open(mask_path) as dataset:
                data = dataset.read(1)
            building = data == 1
            return [
                shapely.geometry.shape(geometry)
                for geometry, _ in shapes(data, mask=building, connectivity=4, transform=dataset.transform)
            ]

        runs = {"bare": [], "engine": []}
        for _ in range(2):  # interleaved, best of two: other processes disturb single runs
            seconds, bare_polygons = timed(bare)
            runs["bare"].append(seconds)
            seconds, features = timed(lambda: list(polygons_from_mask(mask_path)))
            runs["engine"].append(seconds)
        bare_s, engine_s = min(runs["bare"]), min(runs["engine"])
        assert len(features) == len(bare_polygons), (len(features), len(bare_polygons))
        print(
            f"{size}x{size} px mask, {len(features)} buildings: engine {engine_s:.2f} s "
            f"({megapixels / engine_s:.1f} MP/s, {len(features) / engine_s:.0f} polygons/s), "
            f"bare shapes {bare_s:.2f} s, engine/bare = {engine_s / bare_s:.2f}"
        )
        for label, options in (
            ("with mean probability", {"probability_path": probability_path}),
            ("with regularisation", {"regularize": True}),
            ("with simplify 0.5 m and min area 5 m2", {"simplify_m": 0.5, "min_area_m2": 5.0}),
        ):
            seconds, extra = timed(lambda options=options: list(polygons_from_mask(mask_path, **options)))
            print(
                f"  {label}: {seconds:.2f} s ({megapixels / seconds:.1f} MP/s, {len(extra)} polygons), "
                f"{seconds / engine_s:.2f}x the plain engine"
            )
        with rasterio.open(mask_path) as dataset:
            crs_wkt = dataset.crs.to_wkt()
        seconds, count = timed(lambda: write_polygons(features, folder / "buildings.gpkg", crs_wkt))
        print(f"  GeoPackage writing: {count} features in {seconds:.2f} s ({count / seconds:.0f} features/s)")


if __name__ == "__main__":
    main()
