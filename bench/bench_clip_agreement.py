"""Does a pixel get the same prediction in a clip of a scene saved as its own file as in the scene?

For each real scene of ``../shared/data`` (or ``$UNET_SHARED_DATA``), a 700 px clip starting at an
odd offset (137, 211) is written as its own GeoTIFF and predicted with the starter model, as is the
whole scene (float32 arithmetic, so that what differs is placement and statistics, not rounding).
Prints the mean and largest |probability difference| of the clip's pixels, over the whole clip and
over its interior (more than a tile of the grid the network runs on from its edges, where the clip
holds all the context a tile sees), and the share of mask pixels that change, twice: with the model's own normalisation
(``per_image`` for the starter: the clip's statistics differ from the scene's) and with the scene's
statistics fixed in a copy of the model, so that only the tile grid and the resampling differ.

Run from the repository root: ``.venv/bin/python bench/bench_clip_agreement.py``; compare two
versions of the code by running it from each checkout. Exits 0 with a message when the data folder
is absent.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import torch
from bench_presets import available_scenes, shared_data, write_window  # beside this file; sets sys.path
from rasterio.windows import Window

from model.net.modelfile import load_model, save_model
from model.net.normalization import normalization_for
from model.prediction.predict import predict_raster
from model.training.start_model import STARTER_MODEL

CLIP = Window(137, 211, 700, 700)


def with_scene_statistics(model: Path, image: Path, path: Path) -> Path:
    """A copy of ``model`` normalising every image with ``image``'s own statistics."""
    loaded = load_model(model)
    with rasterio.open(image) as dataset:
        mean, std = normalization_for(dataset, loaded.info.bands, loaded.info.normalization)
    save_model(
        path, loaded.net, dataclasses.replace(loaded.info, normalization={"mode": "fixed", "mean": mean, "std": std})
    )
    return path


def agreement(image: Path, clip: Path, model: Path, folder: Path) -> str:
    probabilities = []
    for name, source in (("whole", image), ("clip", clip)):
        result = predict_raster(
            source, model, probability_path=folder / f"{name}.tif", probability_dtype="float32", precision="float32"
        )
        with rasterio.open(result.probability_path) as output:
            probabilities.append(output.read(1, window=CLIP if name == "whole" else None, masked=True))
    whole, part = probabilities
    with rasterio.open(image) as dataset:
        scale = result.processing_pixel_size_map_units[0] / abs(dataset.transform.a)
    margin_px = math.ceil(load_model(model).info.tile_size_px * scale)  # a processing tile, in the image's pixels
    difference = np.abs(whole - part)
    interior = difference[margin_px:-margin_px, margin_px:-margin_px]
    changed = np.ma.mean((whole >= 0.5) != (part >= 0.5))
    resampled = "resampled" if result.resampled else "as it is"
    return (
        f"{resampled:>9}  clip mean {difference.mean():.4f} max {difference.max():.4f}  "
        f"interior ({margin_px} px in) mean {interior.mean():.4f} max {interior.max():.4f}  "
        f"mask pixels changed {changed:.2%}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=STARTER_MODEL)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data, scenes = shared_data(), available_scenes("image.tif")
    for scene in scenes:
        with tempfile.TemporaryDirectory() as temporary:
            folder = Path(temporary)
            image, clip = data / scene / "image.tif", folder / "clip_source.tif"
            write_window(image, CLIP, clip)
            fixed = with_scene_statistics(args.model, image, folder / "fixed.pt")
            for label, model in (("model's own", args.model), ("scene's fixed", fixed)):
                print(f"{scene:>11} {label:>13} normalisation: {agreement(image, clip, model, folder)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
