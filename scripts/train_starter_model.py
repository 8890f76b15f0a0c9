"""Train the starter model shipped in resources/models/: every real scene in ``../shared/data`` (or
``$UNET_SHARED_DATA``), the default recipe at base width 16 (fast to predict on a laptop CPU), for a
wall-clock budget, seeded. Writes the model and, beside it, a provenance note (data, licences,
command, device, scores) that the README and the dock point to.

Run from the repository root: ``.venv/bin/python scripts/train_starter_model.py [--minutes 30]``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.training.trainer import TrainConfig, train  # noqa: E402  (after the path set-up above)

SCENES = ("zanzibar_1", "kampala_1", "banepa_1")
OUTPUT = ROOT / "resources" / "models" / "buildings_rgb_starter.pt"
BASE_WIDTH = 16  # the CPU default's width: predicts a 1024 x 1024 px image in seconds on two cores

PROVENANCE = """# Starter model: `buildings_rgb_starter.pt`

A U-Net (base width {width}, batch norm, 3 bands: red, green, blue) that tells building pixels from
everything else in 8-bit RGB aerial imagery. It was trained on 0.13-0.15 m pixels; finer imagery is
resampled to its resolution, coarser imagery runs on its own pixels up to 4 times its pixel size
(0.1-0.6 m imagery). Its input scaling is fixed (the
training images' statistics, with strong brightness, contrast and colour changes in training), so a
pixel's result does not depend on the extent or file processed, and its ONNX export runs in Deepness
as it runs here. It is the dock's and the Predict / Extract algorithms' default model, so buildings
can be extracted before you train anything, and the model Train starts from by default: training on
your own labels adapts it to your area, and keeps it when the adapted model does not do better on
your validation areas.

## How it was made
`{command}` on {date}: the default recipe (`model/training/recipe.py`; input normalisation
`{normalization}`) on {device}, {precision}, seed 0, {minutes:g} minutes, {epochs} epochs, {crops:,}
training crops. Best epoch {best_epoch}:
validation IoU {val_iou:.3f} at the tuned threshold {threshold:.2f}, on the held-out blocks (one
in five) of the same scenes, so this is not a test on unseen places: on a scene it never saw,
expect less (see the README's leave-one-scene-out table under *Presets*, the same recipe trained on
two scenes and tested on the third).

## Data and licences
Trained on three scenes as packaged in the Humanitarian OpenStreetMap Team's fAIr training data:
zanzibar_1 (Unguja, Zanzibar, Tanzania; drone), kampala_1 (Kampala, Uganda), banepa_1 (Banepa,
Nepal; drone).
- Imagery: OpenAerialMap contributors, CC BY 4.0.
- Building outlines: (c) OpenStreetMap contributors, ODbL 1.0.
The model is a product of this data: keep these attributions when you share it or its outputs.
Neither the imagery nor the labels are distributed with this plugin.
"""


def shared_data() -> Path:
    return Path(os.environ.get("UNET_SHARED_DATA") or ROOT / ".." / "shared" / "data")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget (default 30)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    data = shared_data()
    missing = [name for name in SCENES if not (data / name / "labels.tif").is_file()]
    if missing:
        print(f"The scenes {missing} are not in {data}: set UNET_SHARED_DATA to their folder.", file=sys.stderr)
        return 2
    config = TrainConfig.for_preset(
        "default",
        images=[str(data / name / "image.tif") for name in SCENES],
        labels=[str(data / name / "labels.tif") for name in SCENES],
        building_values=[1],
        output_model=str(args.output),
        base_width=BASE_WIDTH,
        from_scratch=True,  # the default recipe would otherwise adapt the starter model it is to replace
        seed=0,
        device=args.device,
        time_budget_s=args.minutes * 60,
    )
    print(config.sizing, flush=True)
    result = train(
        config,
        on_epoch=lambda r: print(
            f"epoch {r['epoch']}: train loss {r['train_loss']:.4f}, val IoU {r['val_iou_tuned']:.4f} "
            f"at {r['val_threshold']:.2f}, {r['seconds']:.0f} s",
            flush=True,
        ),
    )
    best = next(record for record in result.history if record["epoch"] == result.best_epoch)
    crops = sum(record["train_batches"] for record in result.history) * config.batch_size
    note = PROVENANCE.format(
        width=BASE_WIDTH,
        command=f"python scripts/train_starter_model.py --minutes {args.minutes:g}",
        date=datetime.date.today().isoformat(),
        device=result.device_description,
        precision=result.precision,
        normalization=config.normalization,
        minutes=args.minutes,
        epochs=len(result.history),
        crops=crops,
        best_epoch=result.best_epoch,
        val_iou=best["val_iou_tuned"],
        threshold=best["val_threshold"],
    )
    args.output.with_suffix(".md").write_text(note)
    # checkpoints and history are for resuming a run, not for shipping
    for leftover in (result.history_csv_path, *result.checkpoint_dir.glob("*")):
        leftover.unlink()
    result.checkpoint_dir.rmdir()
    print(f"{args.output} and {args.output.with_suffix('.md').name} written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
