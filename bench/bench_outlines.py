"""How building outlines compare with the mapped ones: plain, simplified and squared.

For each real scene of ``../shared/data`` (or ``$UNET_SHARED_DATA``), the starter model's mask is
vectorised three ways (the pixel outline; simplified by ``--simplify`` m, the dock's default; and
squared, "Square corners" / ``REGULARIZE``, with the same tolerance) and each polygon is matched to
the OpenStreetMap building it overlaps most (``buildings.geojson``; one-to-one, IoU >= 0.5).
Per way it prints the matched buildings' median vertex count (the mapped ones': 5, a closed
rectangle), their mean IoU with the mapped outline, the mean error of their main direction (the
oriented rectangle's, modulo 90 degrees) and the share of corners within 10 degrees of a right
angle among corners that turn by more than 10 degrees.

The starter model was trained on these scenes, so its masks are better here than elsewhere: this
measures outlines, not detection. ``--pictures FOLDER`` also draws, per scene, the image around its
centre with the mapped outlines and the simplified and squared ones over it (PNG). Run from the
repository root: ``.venv/bin/python bench/bench_outlines.py [--pictures build/outlines]``. Exits 0
with a message when the data folder is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import shapely
import torch
from bench_presets import available_scenes, shared_data  # beside this file; sets sys.path
from rasterio.warp import transform_geom
from rasterio.windows import Window

from model.evaluation.metrics import match_objects
from model.prediction.predict import predict_raster
from model.training.start_model import STARTER_MODEL
from model.vectors.vectorize import polygons_from_mask, rectangle_angle_deg

RIGHT_ANGLE_TOLERANCE_DEG = 10.0
MATCH_IOU = 0.5


def mapped_buildings(scene: Path, crs) -> list[shapely.Polygon]:
    """The mapped buildings in ``crs``; a few OSM outlines cross themselves: made valid, their largest part kept."""
    features = json.loads((scene / "buildings.geojson").read_text())["features"]
    buildings = []
    for feature in features:
        shape = shapely.make_valid(shapely.geometry.shape(transform_geom("EPSG:4326", crs, feature["geometry"])))
        parts = [part for part in getattr(shape, "geoms", [shape]) if isinstance(part, shapely.Polygon)]
        if parts:
            buildings.append(max(parts, key=lambda part: part.area))
    return buildings


def main_direction_deg(polygon: shapely.Polygon) -> float:
    return rectangle_angle_deg(shapely.oriented_envelope(polygon)) % 90.0


def corner_turns_deg(polygon: shapely.Polygon) -> np.ndarray:
    """How much the outline turns at each vertex, 0 to 180 degrees."""
    points = np.array(polygon.exterior.coords[:-1])
    edges = np.roll(points, -1, axis=0) - points
    headings = np.arctan2(edges[:, 1], edges[:, 0])
    return np.degrees(np.abs((headings - np.roll(headings, 1) + np.pi) % (2 * np.pi) - np.pi))


def outline_figures(polygons: list[shapely.Polygon], mapped: list[shapely.Polygon]) -> str:
    pairs = [(polygons[p], mapped[t], iou) for p, t, iou in match_objects(polygons, mapped, MATCH_IOU).pairs]
    if not pairs:
        return "no building matched"
    vertices = [len(polygon.exterior.coords) for polygon, _, _ in pairs]
    direction_errors = []
    for polygon, building, _ in pairs:
        error = abs(main_direction_deg(polygon) - main_direction_deg(building))
        direction_errors.append(min(error, 90.0 - error))
    turns = np.concatenate([corner_turns_deg(polygon) for polygon, _, _ in pairs])
    corners = turns[turns > RIGHT_ANGLE_TOLERANCE_DEG]
    right = np.abs(corners - 90.0) <= RIGHT_ANGLE_TOLERANCE_DEG
    return (
        f"{len(pairs):4d} matched  vertices median {np.median(vertices):5.0f}  "
        f"IoU {np.mean([iou for _, _, iou in pairs]):.3f}  "
        f"direction error {np.mean(direction_errors):5.1f} deg  right corners {right.mean():6.1%}"
    )


PICTURE_PX = 400  # the side of the window drawn, image pixels


def draw_outlines(image_path: Path, outlines: dict[str, list[shapely.Polygon]], path: Path) -> None:
    """The image around its centre with each named set of outlines over it, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    with rasterio.open(image_path) as dataset:
        col, row = (dataset.width - PICTURE_PX) // 2, (dataset.height - PICTURE_PX) // 2
        window = Window(col, row, PICTURE_PX, PICTURE_PX)
        pixels = np.moveaxis(dataset.read([1, 2, 3], window=window), 0, -1)
        inverse = ~dataset.window_transform(window)
    figure, axes = pyplot.subplots(1, len(outlines), figsize=(5 * len(outlines), 5.3))
    for axis, (name, polygons) in zip(axes, outlines.items()):
        axis.imshow(pixels)
        for polygon in polygons:
            xs, ys = zip(*(inverse * point for point in polygon.exterior.coords))
            if all(-50 < value < PICTURE_PX + 50 for value in xs + ys):
                axis.plot(xs, ys, color="yellow" if name != "mapped (OSM)" else "cyan", linewidth=1.2)
        axis.set_xlim(0, PICTURE_PX), axis.set_ylim(PICTURE_PX, 0), axis.set_title(name), axis.axis("off")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    pyplot.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=STARTER_MODEL)
    parser.add_argument("--simplify", type=float, default=0.2, help="simplification tolerance, m (the dock's 0.2)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pictures", type=Path, help="folder for a PNG of the outlines per scene")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data, scenes = shared_data(), available_scenes("buildings.geojson")
    ways = {
        "pixel outline": {},
        f"simplified {args.simplify:g} m": {"simplify_m": args.simplify},
        f"squared {args.simplify:g} m": {"simplify_m": args.simplify, "regularize": True},
    }
    for scene in scenes:
        with tempfile.TemporaryDirectory() as temporary:
            mask = Path(temporary) / "mask.tif"
            predict_raster(data / scene / "image.tif", args.model, mask_path=mask)
            with rasterio.open(mask) as dataset:
                mapped = mapped_buildings(data / scene, dataset.crs)
            print(
                f"{scene}: {len(mapped)} mapped buildings, median vertices "
                f"{np.median([len(b.exterior.coords) for b in mapped]):.0f}"
            )
            drawn = {"mapped (OSM)": mapped}
            for name, options in ways.items():
                polygons = [polygon for polygon, _ in polygons_from_mask(mask, min_area_m2=2.0, **options)]
                print(f"  {name:>16}: {outline_figures(polygons, mapped)}")
                if name != "pixel outline":
                    drawn[name] = polygons
            if args.pictures:
                draw_outlines(data / scene / "image.tif", drawn, args.pictures / f"{scene}_outlines.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
