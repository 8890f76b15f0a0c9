"""Generates the bundled sample dataset: synthetic orthophoto scenes with 5-class label rasters.

Classes follow the paper's scheme: 0 other (bare ground), 1 vegetation, 2 building, 3 water,
4 road. Buildings are rotated rectangles with varied roof colours (some close to road and
concrete greys) that cast a shadow, so a model must use shape and context, not colour alone.
Scenes 1 and 2 are for training, scene 3 is held out for testing.

Run from anywhere: ``python resources/sample/make_sample.py`` (deterministic; rewrites the .tif
files beside this script). Needs numpy, rasterio and shapely.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.features import rasterize
from rasterio.transform import from_origin
from shapely import affinity
from shapely.geometry import LineString, box

HERE = Path(__file__).resolve().parent
PIXEL_SIZE_M = 0.3
CRS = "EPSG:32736"  # UTM zone 36S: a metric CRS, as orthophotos usually come
OTHER, VEGETATION, BUILDING, WATER, ROAD = range(5)
GROUND_RGB = (152, 128, 98)
VEGETATION_RGB = (62, 98, 48)
WATER_RGB = (38, 62, 88)
ROAD_RGB = (118, 116, 112)
ROOF_RGB = [(176, 72, 52), (198, 200, 204), (132, 130, 128), (92, 64, 52), (228, 222, 206), (150, 90, 60)]
SCENES = {  # name: (size_px, seed, has_water, building_count)
    "scene_1": (640, 11, True, 70),
    "scene_2": (640, 12, False, 80),
    "scene_3": (512, 13, True, 50),
}


def smooth_field(rng: np.random.Generator, size_px: int, cell_px: int) -> np.ndarray:
    """Smooth random field in [0, 1]: coarse noise up-sampled bilinearly."""
    cells = size_px // cell_px + 2
    coarse = rng.random((cells, cells))
    coordinates = np.arange(size_px) / cell_px
    low = coordinates.astype(int)
    frac = coordinates - low
    rows = coarse[low] * (1 - frac)[:, None] + coarse[low + 1] * frac[:, None]
    return rows[:, low] * (1 - frac)[None, :] + rows[:, low + 1] * frac[None, :]


def box_blur(image: np.ndarray, radius_px: int = 1) -> np.ndarray:
    padded = np.pad(image, [(radius_px, radius_px), (radius_px, radius_px)] + [(0, 0)] * (image.ndim - 2), mode="edge")
    out = np.zeros_like(image, dtype=np.float32)
    width = 2 * radius_px + 1
    for dy in range(width):
        for dx in range(width):
            out += padded[dy : dy + image.shape[0], dx : dx + image.shape[1]]
    return out / width**2


def make_scene(size_px: int, seed: int, has_water: bool, building_count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (size_px, size_px)
    labels = np.full(shape, OTHER, np.uint8)
    labels[smooth_field(rng, size_px, 48) > 0.62] = VEGETATION
    if has_water:
        labels[smooth_field(rng, size_px, 160) > 0.8] = WATER

    roads = []
    for _ in range(rng.integers(2, 4)):
        angle = rng.uniform(0, np.pi)
        centre = rng.uniform(0.2, 0.8, 2) * size_px
        direction = np.array([np.cos(angle), np.sin(angle)]) * size_px * 1.5
        road = LineString([centre - direction, centre + direction]).buffer(rng.uniform(4, 7), cap_style=2)
        roads.append((road, np.degrees(angle)))
    road_mask = rasterize([(road, 1) for road, _ in roads], out_shape=shape, dtype="uint8").astype(bool)
    labels[road_mask] = ROAD

    buildings, roofs = [], []
    for _attempt in range(building_count * 200):  # bounded: a crowded scene simply gets fewer
        if len(buildings) == building_count:
            break
        road, road_angle = roads[rng.integers(len(roads))]
        anchor = road.exterior.interpolate(rng.uniform(0, road.exterior.length))
        width, depth = rng.uniform(10, 30), rng.uniform(9, 22)
        offset = rng.uniform(4, 22)
        candidate = box(-width / 2, offset, width / 2, offset + depth)
        candidate = affinity.rotate(candidate, road_angle + rng.choice([0, 180]) + rng.normal(0, 4), origin=(0, 0))
        candidate = affinity.translate(candidate, anchor.x, anchor.y)
        if not box(2, 2, size_px - 2, size_px - 2).contains(candidate) or any(
            candidate.intersects(r) for r, _ in roads
        ):
            continue
        if any(candidate.distance(other) < 2 for other in buildings):
            continue
        buildings.append(candidate)
        roofs.append(ROOF_RGB[rng.integers(len(ROOF_RGB))])

    base = np.zeros(shape + (3,), np.float32)
    for value, rgb in ((OTHER, GROUND_RGB), (VEGETATION, VEGETATION_RGB), (WATER, WATER_RGB), (ROAD, ROAD_RGB)):
        base[labels == value] = rgb
    texture = (smooth_field(rng, size_px, 6) - 0.5) * 40
    base += texture[..., None] * np.where(labels == VEGETATION, 1.0, 0.5)[..., None]

    shadow_shift_px = (3, 3)
    shadows = rasterize(
        [(affinity.translate(b, *shadow_shift_px), 1) for b in buildings], out_shape=shape, dtype="uint8"
    )
    base[shadows.astype(bool)] *= 0.45
    for building, rgb in zip(buildings, roofs):
        footprint = rasterize([(building, 1)], out_shape=shape, dtype="uint8").astype(bool)
        ridge = rasterize([(affinity.scale(building, 1.0, 0.08), 1)], out_shape=shape, dtype="uint8").astype(bool)
        base[footprint] = rgb
        base[ridge & footprint] *= 0.85
        labels[footprint] = BUILDING

    image = box_blur(base) + rng.normal(0, 6, base.shape)
    return np.clip(image, 0, 255).astype(np.uint8).transpose(2, 0, 1), labels


def write_scene(name: str, image: np.ndarray, labels: np.ndarray, origin_xy_m: tuple[float, float]) -> None:
    transform = from_origin(*origin_xy_m, PIXEL_SIZE_M, PIXEL_SIZE_M)
    common = dict(
        driver="GTiff",
        width=labels.shape[1],
        height=labels.shape[0],
        crs=CRS,
        transform=transform,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    with rasterio.open(
        HERE / f"{name}.tif", "w", count=3, dtype="uint8", photometric="RGB", predictor=2, **common
    ) as dst:
        dst.write(image)
    with rasterio.open(HERE / f"{name}_labels.tif", "w", count=1, dtype="uint8", **common) as dst:
        dst.write(labels, 1)
        dst.update_tags(1, classes="0 other, 1 vegetation, 2 building, 3 water, 4 road")


def main() -> None:
    for index, (name, (size_px, seed, has_water, building_count)) in enumerate(SCENES.items()):
        image, labels = make_scene(size_px, seed, has_water, building_count)
        write_scene(name, image, labels, (500_000.0 + index * 400.0, 9_000_000.0))
        print(f"{name}: {size_px}x{size_px} px, building fraction {np.mean(labels == BUILDING):.3f}")


if __name__ == "__main__":
    main()
