"""Coarse imagery: predicted at the model's own resolution (resampled up, Predict's default) or at the
image's own pixels, for models trained with and without scale augmentation.

Coarse copies of a real scene of ``../shared/data`` (or ``$UNET_SHARED_DATA``), banepa_1 unless
``--scene`` names another, are made at each ``--pixel-size-m`` (pixel averages for the image, the
majority for the labels, no data kept as no data), as a satellite or a coarser orthophoto would see
the same ground. Each model given predicts each copy twice, at its training resolution and at the
copy's own pixels, and the mask is scored against the copy's labels. Prints test IoU and F1 side by
side. Use models that never saw the scene (``bench_presets.py --keep``) for a fair test.

Run from the repository root:
``.venv/bin/python bench/bench_coarse_imagery.py --models a.pt b.pt [--pixel-size-m 0.3 0.5]``.
Exits 0 with a message when the data folder is absent.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from bench_presets import BUILDING_VALUES, available_scenes, shared_data  # beside this file; sets sys.path
from rasterio.enums import Resampling
from rasterio.warp import reproject

from model.evaluation.evaluate import evaluate
from model.io.ground import ground_pixel_size_m
from model.prediction.predict import predict_raster

LABEL_NODATA = 255  # the scenes' labels: 0 background, 1 building, 255 no data


def coarse_copy(source: Path, path: Path, factor: float, resampling: Resampling) -> None:
    """``source`` on pixels ``factor`` times larger over the same ground, no data kept as no data."""
    with rasterio.open(source) as dataset:
        width, height = max(1, round(dataset.width / factor)), max(1, round(dataset.height / factor))
        transform = dataset.transform * dataset.transform.scale(dataset.width / width, dataset.height / height)
        nodata = dataset.nodata if dataset.nodata is not None else (LABEL_NODATA if dataset.count == 1 else 0)
        profile = {**dataset.profile, "width": width, "height": height, "transform": transform, "nodata": nodata}
        for tiling in ("blockxsize", "blockysize", "tiled"):  # the source's blocks may not fit the smaller size
            profile.pop(tiling, None)
        with rasterio.open(path, "w", **profile) as target:
            for band in range(1, dataset.count + 1):
                destination = np.full((height, width), nodata, np.dtype(dataset.dtypes[band - 1]))
                reproject(
                    rasterio.band(dataset, band),
                    destination,
                    src_transform=dataset.transform,
                    src_crs=dataset.crs,
                    src_nodata=nodata,
                    dst_transform=transform,
                    dst_crs=dataset.crs,
                    dst_nodata=nodata,
                    resampling=resampling,
                )
                target.write(destination, band)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, nargs="+", required=True)
    parser.add_argument("--scene", default="banepa_1")
    parser.add_argument("--pixel-size-m", type=float, nargs="+", default=[0.3, 0.5])
    args = parser.parse_args()
    if args.scene not in available_scenes("labels.tif"):
        return 0
    scene = shared_data() / args.scene
    with rasterio.open(scene / "image.tif") as dataset:
        native_m = sum(ground_pixel_size_m(dataset.crs, dataset.transform, dataset.width, dataset.height)) / 2
    print(f"{args.scene}: {native_m:.3f} m per pixel; coarse copies at {args.pixel_size_m} m")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_coarse_") as scratch:
        folder = Path(scratch)
        for size_m in args.pixel_size_m:
            image, labels = folder / f"image_{size_m:g}m.tif", folder / f"labels_{size_m:g}m.tif"
            coarse_copy(scene / "image.tif", image, size_m / native_m, Resampling.average)
            coarse_copy(scene / "labels.tif", labels, size_m / native_m, Resampling.mode)
            for model in args.models:
                for tag, how, pixel_size in (("model", "model's resolution", None), ("own", "own pixels", "native")):
                    mask = folder / f"{model.stem}_{size_m:g}m_{tag}.tif"
                    predict_raster(image, model, mask_path=mask, processing_pixel_size_map_units=pixel_size)
                    scores = evaluate(mask, labels, BUILDING_VALUES, object_scores=False).scores()
                    rows.append((f"{size_m:g} m", model.stem, how, scores["iou"], scores["f1"]))
                    print(f"  {rows[-1][0]:>6}  {model.stem[:48]:<48}  {how:<20} IoU {scores['iou']:.3f}", flush=True)
    print(f"\n{'imagery':>8}  {'model':<48}  {'predicted at':<20} {'IoU':>6} {'F1':>6}")
    for size, model_name, how, iou, f1 in rows:
        print(f"{size:>8}  {model_name[:48]:<48}  {how:<20} {iou:>6.3f} {f1:>6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
