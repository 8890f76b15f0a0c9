"""Does a pixel's prediction depend on where the tile grid falls? The starter model on each real scene
of ``../shared/data`` (or ``$UNET_SHARED_DATA``), predicted as it is and from a copy georeferenced a
few pixels off (the same pixels, so the ground-anchored tiles fall elsewhere on them): by half a
stride (a multiple of the network's 16 px pooling grid) and by an odd (77, 45) px (off that grid).
Float32 arithmetic, so what differs is placement, not rounding. For the default tiling (twice the
training tile, a quarter of it overlapping, each tile's border quarter of the overlap left out of
the blend) and for the training tile with the same rule, prints the mask IoU and the mean
|probability difference| away from the scene's edges (``EDGE_PX`` in), and the prediction time.

Run from the repository root: ``.venv/bin/python bench/bench_tile_grid.py [--scenes banepa_1 ...]``.
Exits 0 with a message when the data folder is absent.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from bench_presets import available_scenes, shared_data  # beside this file; sets sys.path
from rasterio.transform import Affine

from model.net.modelfile import read_payload
from model.prediction.predict import predict_raster
from model.prediction.tiling import prediction_tile_px
from model.training.start_model import STARTER_MODEL

EDGE_PX = 256  # left out at the scene's edges, where the shifted copy's tiles see other context


def shifted_copy(image: Path, shift_px: tuple[int, int], path: Path) -> Path:
    """The same pixels, georeferenced ``shift_px`` (column, row) pixels further east and south."""
    with rasterio.open(image) as source:
        profile = dict(source.profile)
        profile["transform"] = source.transform * Affine.translation(*shift_px)
        with rasterio.open(path, "w", **profile) as copy:
            copy.write(source.read())
            copy.write_mask(source.read_masks(1))
    return path


def probability(image: Path, model: Path, tile_px: int, output: Path) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    predict_raster(
        image,
        model,
        probability_path=output,
        probability_dtype="float32",
        processing_pixel_size_map_units="native",
        device="cpu",
        precision="float32",
        tile_size_px=tile_px,
    )
    seconds = time.perf_counter() - started
    with rasterio.open(output) as dataset:
        return dataset.read(1), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", nargs="+", help="scene names (default: all)")
    parser.add_argument("--model", type=Path, default=STARTER_MODEL)
    args = parser.parse_args()
    scenes = args.scenes or available_scenes("image.tif")
    if not scenes:
        return 0
    info = read_payload(args.model)["info"]
    threshold, training_tile_px = info["threshold"], info["tile_size_px"]
    tilings = {"default": prediction_tile_px(training_tile_px), "training tile": training_tile_px}
    print(f"{args.model.name}, threshold {threshold:.2f}; the same pixels, georeferenced with the grid shifted:")
    print(f"{'scene':<12} {'tiling':<14} {'tile':>5} {'shift':>10} {'mask IoU':>9} {'mean |dp|':>10} {'seconds':>8}")
    with tempfile.TemporaryDirectory(prefix="bench_tile_grid_") as scratch:
        folder = Path(scratch)
        for scene in scenes:
            image = shared_data() / scene / "image.tif"
            with rasterio.open(image) as dataset:
                valid = dataset.read_masks(1) > 0
            for name, tile_px in tilings.items():
                half_stride = (tile_px - tile_px // 4) // 2
                base, seconds = probability(image, args.model, tile_px, folder / "base.tif")
                interior = np.zeros_like(valid)
                interior[EDGE_PX:-EDGE_PX, EDGE_PX:-EDGE_PX] = True
                interior &= valid
                for shift in ((half_stride, half_stride), (77, 45)):
                    copy = shifted_copy(image, shift, folder / "shifted.tif")
                    other, _ = probability(copy, args.model, tile_px, folder / "other.tif")
                    ours, theirs = (base >= threshold) & interior, (other >= threshold) & interior
                    iou = (ours & theirs).sum() / max((ours | theirs).sum(), 1)
                    difference = np.abs(base - other)[interior].mean()
                    print(
                        f"{scene:<12} {name:<14} {tile_px:>5} {str(shift):>10} {iou:>9.4f} {difference:>10.5f} "
                        f"{seconds:>8.1f}",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
