"""The default recipe against the paper's (and variants of either), on real scenes, after the same
training time.

Trains each run on two scenes of ``../shared/data`` (or ``$UNET_SHARED_DATA``), zanzibar_1 + kampala_1
unless ``--test-scene`` names another, with the same wall-clock budget (``time_budget_s``: the budget
cuts the running epoch, which is still validated and saved), then predicts the third scene (banepa_1),
which none saw, and scores the mask
against its labels (0 background, 1 building, 255 no data). Prints IoU, F1, precision, recall
and kappa side by side, the crops each run trained on per second, and how much the probability of
the same pixels changes between the whole test scene and a shifted 700 px clip of it (extent
dependence: what per-image normalisation costs).

A run is a preset with optional overrides, e.g. ``default``, ``paper`` or
``default:normalization=per_image,base_width=32``; each runs once per ``--minutes`` value.

The paper preset is kept as published except for its epoch size: 100,000 crops per epoch
(20,000 of them validation) cannot finish on a CPU budget, and its validation alone would eat
the budget, so it runs with ``--paper-patches`` crops per epoch (20 % of them validation).

Run from the repository root: ``.venv/bin/python bench/bench_presets.py [--minutes 20]``.
Exits 0 with a message when the data folder is absent.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.enums import MaskFlags
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.evaluation.evaluate import evaluate  # noqa: E402  (after the path set-up above)
from model.prediction.predict import predict_raster  # noqa: E402
from model.training.augment import AugmentConfig  # noqa: E402
from model.training.trainer import PAPER_PRESET, TrainConfig, train  # noqa: E402

SCENES = ("zanzibar_1", "kampala_1", "banepa_1")  # the real scenes of ../shared/data
TEST_SCENE = "banepa_1"  # the default; --test-scene picks another, and the two others train
BUILDING_VALUES = [1]
SCORES = ("iou", "f1", "precision", "recall", "kappa")


def shared_data() -> Path:
    return Path(os.environ.get("UNET_SHARED_DATA") or ROOT / ".." / "shared" / "data")


def available_scenes(needed: str) -> list[str]:
    """The real scenes whose folder holds ``needed``; says so when there are none."""
    data = shared_data()
    scenes = [name for name in SCENES if (data / name / needed).is_file()]
    if not scenes:
        print(f"skipped: the real scenes are not in {data} (set UNET_SHARED_DATA to their folder)")
    return scenes


def parse_run(spec: str) -> tuple[str, dict]:
    """'default:normalization=per_image,base_width=32' -> ('default', {...}); numbers become numbers;
    'augmentation.colour_jitter=0.3' changes one augmentation setting of the preset's, and
    'augmentation.zoom_range=0.7/1.5' gives a range."""
    preset, _, options = spec.partition(":")
    overrides: dict = {}
    augmentation: dict = {}
    for item in filter(None, options.split(",")):
        name, _, text = item.partition("=")
        target = overrides
        if name.startswith("augmentation."):
            target, name = augmentation, name.removeprefix("augmentation.")
        if "/" in text:
            target[name] = tuple(float(part) for part in text.split("/"))
            continue
        try:
            target[name] = int(text)
        except ValueError:
            try:
                target[name] = float(text)
            except ValueError:
                target[name] = text
    if augmentation:
        preset_augmentation = PAPER_PRESET["augmentation"] if preset == "paper" else AugmentConfig()
        overrides["augmentation"] = replace(preset_augmentation, **augmentation)
    return preset, overrides


def run_preset(
    spec: str, data: Path, folder: Path, budget_s: float, seed: int, paper_patches: int, device: str, test_scene: str
) -> dict:
    """Train one run under the budget, predict the test scene, score it; a dict of figures."""
    preset, overrides = parse_run(spec)
    if preset == "paper":
        overrides.setdefault("patches_per_epoch", paper_patches)
    # a new network unless the spec names a start: the default preset would otherwise adapt the starter
    # model, which was trained on the test scene too
    if "init_model" not in overrides:
        overrides.setdefault("from_scratch", True)
    run_name = file_name(f"{spec}@{budget_s / 60:g}min")
    config = TrainConfig.for_preset(
        preset,
        images=[str(data / name / "image.tif") for name in train_scenes(test_scene)],
        labels=[str(data / name / "labels.tif") for name in train_scenes(test_scene)],
        building_values=BUILDING_VALUES,
        output_model=str(folder / f"{run_name}.pt"),
        seed=seed,
        device=device,
        time_budget_s=budget_s,
        **overrides,
    )
    print(f"  [{spec}] {config.sizing or 'paper preset'}", flush=True)
    started = time.monotonic()
    result = train(
        config,
        on_epoch=lambda r: print(
            f"  [{spec}] epoch {r['epoch']}: {r['train_batches']} batches, train loss {r['train_loss']:.4f}, "
            f"val IoU {r['val_iou']:.4f}, {r['seconds']:.0f} s",
            flush=True,
        ),
    )
    train_s = time.monotonic() - started
    test = data / test_scene
    started = time.monotonic()
    prediction = predict_raster(
        test / "image.tif",
        result.model_path,
        mask_path=folder / f"{run_name}_mask.tif",
        probability_path=folder / f"{run_name}_probability.tif",
        probability_dtype="float32",
        device=device,
    )
    predict_s = time.monotonic() - started
    scores = evaluate(prediction.mask_path, test / "labels.tif", BUILDING_VALUES).scores()
    shift = extent_dependence(
        test / "image.tif", result.model_path, prediction.probability_path, folder, run_name, device
    )
    best = result.history[result.best_epoch - 1]
    crops = sum(record["train_batches"] for record in result.history) * config.batch_size
    return {
        "scores": scores,
        "threshold": prediction.threshold,
        "epochs": len(result.history),
        "train_loss": result.history[-1]["train_loss"],
        "crops": crops,
        "val_iou": best["val_iou_tuned"],
        "train_s": train_s,
        "predict_s": predict_s,
        "device": result.device_description,
        "precision": result.precision,
        "config": config,
        "shift": shift,
    }


def file_name(run: str) -> str:
    """A file name for a run: its spec in safe characters, cut to 80 with a digest of the whole spec (file
    systems refuse names past 255 bytes, and a run of many overrides gets there)."""
    name = run.replace(":", "_").replace(",", "_").replace("=", "-").replace("/", "-")
    return name if len(name) <= 80 else f"{name[:71]}_{hashlib.sha1(run.encode()).hexdigest()[:8]}"


def train_scenes(test_scene: str) -> list[str]:
    return [name for name in SCENES if name != test_scene]


CLIP = Window(137, 211, 700, 700)  # a shifted clip of the test scene, as a user's smaller extent


def write_window(source_path: Path, window: Window, path: Path) -> None:
    """The window of a raster as a GeoTIFF: georeferencing, nodata and (the image's) mask kept.
    Written under another name and renamed, so an interrupted write is never taken for a whole one; an
    existing file is kept (reruns reuse it)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"partial_{path.name}")
    # an internal mask travels with the file through the rename (a .msk sidecar would not)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(source_path) as source:
        profile = {
            **source.profile,
            "width": window.width,
            "height": window.height,
            "transform": source.window_transform(window),
        }
        with rasterio.open(partial, "w", **profile) as target:
            target.write(source.read(window=window))
            if MaskFlags.per_dataset in source.mask_flag_enums[0]:  # labels say no data by their nodata value
                target.write_mask(source.read_masks(1, window=window))
    os.replace(partial, path)


def extent_dependence(
    image: Path, model: Path, full_probability: Path, folder: Path, run_name: str, device: str
) -> float:
    """Mean |difference| of the building probability of the same pixels predicted in the whole test
    scene and in a shifted clip of it: what the normalisation (and tile placement) make of extent."""
    clip = folder / f"{run_name}_clip.tif"
    write_window(image, CLIP, clip)
    clipped = predict_raster(
        clip,
        model,
        probability_path=folder / f"{run_name}_clip_probability.tif",
        probability_dtype="float32",
        device=device,
    )
    with rasterio.open(full_probability) as full, rasterio.open(clipped.probability_path) as part:
        a, b = full.read(1, window=CLIP, masked=True), part.read(1, masked=True)
    return float(np.abs(a - b).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--minutes", type=float, nargs="+", default=[10.0, 30.0], help="training budgets per run (default 10 30)"
    )
    parser.add_argument(
        "--runs",
        nargs="+",
        default=["default", "paper"],
        help="presets with optional overrides (default: default paper)",
    )
    parser.add_argument(
        "--paper-patches",
        type=int,
        default=1000,
        help="paper preset crops per epoch, 20 %% of them validation (paper: 100,000)",
    )
    parser.add_argument("--test-scene", choices=SCENES, default=TEST_SCENE, help="scene predicted (default banepa_1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    parser.add_argument("--keep", help="folder to keep the models and masks in (default: a temporary one)")
    args = parser.parse_args()

    data = shared_data()
    missing = [name for name in SCENES if not (data / name / "labels.tif").is_file()]
    if missing:
        print(f"skipped: the real scenes {missing} are not in {data} (set UNET_SHARED_DATA to their folder)")
        return 0

    print(
        f"Runs {args.runs} after {args.minutes} min of training each on {' + '.join(train_scenes(args.test_scene))}, "
        f"tested on {args.test_scene}; torch threads {torch.get_num_threads()}, device {args.device}"
    )
    print(
        f"Paper preset: {args.paper_patches} crops per epoch instead of {PAPER_PRESET['patches_per_epoch']:,} "
        f"({round(args.paper_patches * PAPER_PRESET['validation_fraction'])} validation crops); "
        f"every other paper value kept.",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench_presets_") as scratch:
        folder = Path(args.keep or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        results = {}
        for minutes in args.minutes:
            for spec in args.runs:
                results[f"{spec}@{minutes:g}min"] = run_preset(
                    spec, data, folder, minutes * 60, args.seed, args.paper_patches, args.device, args.test_scene
                )

    names = list(results)
    width = 12
    print()
    for index, name in enumerate(names):
        print(f"  column {index + 1}: {name}")
    print(f"\n{'':<28}" + "".join(f"{'column ' + str(i + 1):>{width}}" for i in range(len(names))))
    rows = [(f"test {score} ({args.test_scene})", lambda r, s=score: f"{r['scores'][s]:.4f}") for score in SCORES]
    rows += [
        ("best-epoch val IoU", lambda r: f"{r['val_iou']:.4f}"),
        ("last epoch's train loss", lambda r: f"{r['train_loss']:.4g}"),  # shows a diverged run
        ("threshold", lambda r: f"{r['threshold']:.2f}"),
        ("mean |dp| whole vs clip", lambda r: f"{r['shift']:.4f}"),
        ("base width / batch norm", lambda r: f"{r['config'].base_width}/{'yes' if r['config'].batch_norm else 'no'}"),
        ("epochs (last one cut)", lambda r: str(r["epochs"])),
        ("training crops seen", lambda r: str(r["crops"])),
        ("crops per second", lambda r: f"{r['crops'] / r['train_s']:.2f}"),
        ("precision", lambda r: r["precision"].split(" ")[0]),
        ("training + validation s", lambda r: f"{r['train_s']:.0f}"),
        ("prediction s", lambda r: f"{r['predict_s']:.0f}"),
    ]
    for label, cell in rows:
        print(f"{label:<28}" + "".join(f"{cell(results[name]):>{width}}" for name in names))
    for minutes in args.minutes:
        default, paper = results.get(f"default@{minutes:g}min"), results.get(f"paper@{minutes:g}min")
        if default and paper:
            paper_iou = paper["scores"]["iou"]
            ratio = f"{default['scores']['iou'] / paper_iou:.2f}x" if paper_iou > 0 else "n/a (paper IoU 0)"
            print(f"test IoU default / paper after {minutes:g} min: {ratio}")
    print(f"device: {next(iter(results.values()))['device']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
