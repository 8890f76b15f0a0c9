"""The default recipe against the paper's, on real scenes, after the same training time.

Trains each preset on zanzibar_1 + kampala_1 from ``../shared/data`` (or ``$UNET_SHARED_DATA``)
with the same wall-clock budget (``time_budget_s``: the budget cuts the running epoch, which is
still validated and saved), then predicts banepa_1, a scene neither saw, and scores the mask
against its labels (0 background, 1 building, 255 no data). Prints IoU, F1, precision, recall
and kappa side by side.

The paper preset is kept as published except for its epoch size: 100,000 crops per epoch
(20,000 of them validation) cannot finish on a CPU budget, and its validation alone would eat
the budget, so it runs with ``--paper-patches`` crops per epoch (20 % of them validation).

Run from the repository root: ``.venv/bin/python bench/bench_presets.py [--minutes 20]``.
Exits 0 with a message when the data folder is absent.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.evaluation import evaluate  # noqa: E402  (after the path set-up above)
from model.inference import predict_raster  # noqa: E402
from model.training import PAPER_PRESET, TrainConfig, train  # noqa: E402

TRAIN_SCENES = ("zanzibar_1", "kampala_1")
TEST_SCENE = "banepa_1"
BUILDING_VALUES = [1]
SCORES = ("iou", "f1", "precision", "recall", "kappa")


def shared_data() -> Path:
    return Path(os.environ.get("UNET_SHARED_DATA") or ROOT / ".." / "shared" / "data")


def run_preset(preset: str, data: Path, folder: Path, budget_s: float, seed: int,
               patches_per_epoch: int | None, device: str) -> dict:
    """Train one preset under the budget, predict the test scene, score it; a dict of figures."""
    config = TrainConfig.for_preset(
        preset, images=[str(data / name / "image.tif") for name in TRAIN_SCENES],
        labels=[str(data / name / "labels.tif") for name in TRAIN_SCENES], building_values=BUILDING_VALUES,
        output_model=str(folder / f"{preset}.pt"), patches_per_epoch=patches_per_epoch, seed=seed, device=device,
        time_budget_s=budget_s)
    started = time.monotonic()
    result = train(config, on_epoch=lambda r: print(
        f"  [{preset}] epoch {r['epoch']}: {r['train_batches']} batches, train loss {r['train_loss']:.4f}, "
        f"val IoU {r['val_iou']:.4f}, {r['seconds']:.0f} s", flush=True))
    train_s = time.monotonic() - started
    test = data / TEST_SCENE
    started = time.monotonic()
    prediction = predict_raster(test / "image.tif", result.model_path, mask_path=folder / f"{preset}_mask.tif",
                                device=device)
    predict_s = time.monotonic() - started
    scores = evaluate(prediction.mask_path, test / "labels.tif", BUILDING_VALUES).scores()
    best = result.history[result.best_epoch - 1]
    crops = sum(record["train_batches"] for record in result.history) * config.batch_size
    return {"scores": scores, "threshold": prediction.threshold, "epochs": len(result.history),
            "train_loss": result.history[-1]["train_loss"],
            "crops": crops, "val_iou": best["val_iou"], "train_s": train_s, "predict_s": predict_s,
            "device": result.device_description, "config": config}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per preset (default 20)")
    parser.add_argument("--paper-patches", type=int, default=1000,
                        help="paper preset crops per epoch, 20 %% of them validation (paper: 100,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    parser.add_argument("--keep", help="folder to keep the models and masks in (default: a temporary one)")
    args = parser.parse_args()

    data = shared_data()
    missing = [name for name in (*TRAIN_SCENES, TEST_SCENE) if not (data / name / "labels.tif").is_file()]
    if missing:
        print(f"skipped: the real scenes {missing} are not in {data} (set UNET_SHARED_DATA to their folder)")
        return 0

    print(f"Presets after {args.minutes:g} min of training each on {' + '.join(TRAIN_SCENES)}, "
          f"tested on {TEST_SCENE}; torch threads {torch.get_num_threads()}, device {args.device}")
    print(f"Paper preset: {args.paper_patches} crops per epoch instead of {PAPER_PRESET['patches_per_epoch']:,} "
          f"({round(args.paper_patches * PAPER_PRESET['validation_fraction'])} validation crops); "
          f"every other paper value kept.", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_presets_") as scratch:
        folder = Path(args.keep or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        results = {}
        for preset, patches in (("default", None), ("paper", args.paper_patches)):
            results[preset] = run_preset(preset, data, folder, args.minutes * 60, args.seed, patches, args.device)

    names = list(results)
    print(f"\n{'':<28}" + "".join(f"{name:>12}" for name in names))
    rows = [(f"test {score} ({TEST_SCENE})", lambda r, s=score: f"{r['scores'][s]:.4f}") for score in SCORES]
    rows += [("best-epoch val IoU", lambda r: f"{r['val_iou']:.4f}"),
             ("last epoch's train loss", lambda r: f"{r['train_loss']:.4g}"),  # shows a diverged run
             ("threshold", lambda r: f"{r['threshold']:.2f}"),
             ("base width / batch norm",
              lambda r: f"{r['config'].base_width}/{'yes' if r['config'].batch_norm else 'no'}"),
             ("epochs (last one cut)", lambda r: str(r["epochs"])),
             ("training crops seen", lambda r: str(r["crops"])),
             ("training + validation s", lambda r: f"{r['train_s']:.0f}"),
             ("prediction s", lambda r: f"{r['predict_s']:.0f}")]
    for label, cell in rows:
        print(f"{label:<28}" + "".join(f"{cell(results[name]):>12}" for name in names))
    paper_iou = results["paper"]["scores"]["iou"]
    ratio = f"{results['default']['scores']['iou'] / paper_iou:.2f}x" if paper_iou > 0 else "n/a (paper IoU 0)"
    print(f"\ntest IoU default / paper: {ratio}   (device: {results['default']['device']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
