"""Fine-tuning on half a new scene against training from scratch on it and against the starting model.

For each scene S of ``../shared/data`` (or ``$UNET_SHARED_DATA``): a leave-one-out starting model is
trained from scratch (default preset, seed 0) on the two other scenes, whole, for ``--start-minutes``;
S is split in two halves across its longer side; then, for each ``--minutes`` budget M, the starting
model is fine-tuned on half A for M minutes and a new network is trained from scratch on half A for M
minutes. The starting model, each fine-tuned model and each scratch model predict half B, never
trained on, and are scored against its labels (building IoU and F1). Per fine-tune it also reports the
validation IoU of the starting weights (epoch 0), the best validation IoU and its epoch, whether the
run kept its start (best epoch 0), and the training crops each run saw, to compare runs at equal time.
The last line says whether the target holds: fine-tuning for 10 CPU-minutes on half a new scene beats
both the starting model and 10 minutes from scratch on the other half, on every scene.

``--interpolate A [A ...]`` also scores, for each recorded fine-tune, the weights interpolated between its
starting model and it, start + A x (tuned - start) (WiSE-FT, Wortsman et al. 2022; A = 1 is the
fine-tuned model, 0 the start, batch-norm statistics interpolated alike), on half B at the fine-tune's
threshold: how much of the start's skill on unseen ground a partial step keeps. Cheap: predictions only.

The shipped starter model was trained on these very scenes, so every run here either fine-tunes the
leave-one-out model or starts from scratch. ``--finetune SPEC`` (repeatable) compares fine-tuning
recipes side by side: training overrides such as ``learning_rate=1e-4,l2sp_weight=0.01``; without
it, the engine's own fine-tuning recipe. The runs are CPU only: budgets are CPU minutes.

Everything goes to the work folder (``--work``, default ``<temp dir>/bench_finetune``): the halves,
the models, and ``results.jsonl``, one line per finished run, written as soon as it ends. A rerun
skips the runs recorded there (and reuses the starting models), so a long run can be read while it
goes and resumed after an interruption; the table is printed from that file at the end.

Run from the repository root: ``.venv/bin/python bench/bench_finetune.py`` for the full protocol, or
e.g. ``--jobs 2 --threads 1`` to run independent runs side by side; a dry run:
``--threads 1 --start-minutes 0.3 --minutes 0.2 --scenes banepa_1``. Exits 0 with a message when the
data folder is absent.

Duration: the sum of the training budgets, divided by ``--jobs``, plus a little for each run's last
validation and prediction: 3 starting models x ``--start-minutes`` + 3 scenes x (1 + fine-tune
recipes) x sum(``--minutes``). The defaults: 3 x 30 + 3 x 2 x (3 + 10 + 30) = 348 min, about 5 h 50
with one job, about 2 h 55 with ``--jobs 2``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import re
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, fields, replace
from pathlib import Path

import rasterio
import torch
from bench_presets import BUILDING_VALUES, SCENES, parse_run, shared_data, write_window  # beside this file
from rasterio.windows import Window

# importable once bench_presets has put the repository root on sys.path
from model.evaluation.evaluate import evaluate
from model.net.modelfile import LoadedModel, load_model
from model.prediction.predict import predict_raster
from model.training.trainer import TrainConfig, TrainResult, train

DEVICE = "cpu"
SEED = 0
VAL_SCORE = "val_iou_tuned"  # the history column the default preset picks its best epoch by
TARGET_MINUTES = 10.0
TARGET = (
    f"fine-tuning for {TARGET_MINUTES:g} CPU-minutes on half a new scene beats both the starting model "
    f"and {TARGET_MINUTES:g} minutes from scratch on the other half, on every scene"
)


@dataclass(frozen=True)
class Run:
    """One training run and its score on half B. ``start``: the leave-one-out starting model of
    ``scene`` (``minutes`` is the start budget); ``finetune``: that model fine-tuned on half A with the
    ``recipe`` overrides; ``scratch``: a new network trained on half A."""

    kind: str
    scene: str
    minutes: float
    start_minutes: float | None = None  # finetune only: the budget of the starting model it starts from
    recipe: str = ""  # finetune only: training overrides, "" for the engine's fine-tuning recipe
    seed: int = SEED  # finetune and scratch: the training seed (crops, augmentation, a new network's weights)

    @property
    def key(self) -> str:
        key = f"{self.kind} {self.scene} {self.minutes:g}min"
        if self.kind == "finetune":
            key += f" from {self.start_minutes:g}min start" + (f" {self.recipe}" if self.recipe else "")
        return key + (f" seed {self.seed}" if self.seed != SEED else "")  # seed 0 keys as recorded before seeds

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9.]+", "_", self.key)

    @property
    def start(self) -> Run:
        """The starting-model run this fine-tune needs."""
        assert self.start_minutes is not None
        return Run("start", self.scene, self.start_minutes)


def half_path(work: Path, scene: str, half: str, name: str) -> Path:
    return work / "halves" / scene / half / name


def write_halves(data: Path, work: Path, scene: str) -> None:
    """Halves A and B of the scene, split across its longer side, on the scene's own grid; kept in the
    work folder and reused."""
    with rasterio.open(data / scene / "image.tif") as image:
        width, height = image.width, image.height
    if width >= height:
        windows = {"a": Window(0, 0, width // 2, height), "b": Window(width // 2, 0, width - width // 2, height)}
    else:
        windows = {"a": Window(0, 0, width, height // 2), "b": Window(0, height // 2, width, height - height // 2)}
    for half, window in windows.items():
        for name in ("image.tif", "labels.tif"):
            write_window(data / scene / name, window, half_path(work, scene, half, name))


def start_model_path(work: Path, run: Run) -> Path:
    return work / "models" / f"{run.start.slug}.pt"


def execute(run: Run, data: Path, work: Path, threads: int) -> dict:
    """Train the run, predict half B of its scene, score it; the record for results.jsonl."""
    torch.set_num_threads(threads)
    if run.kind == "start":
        scenes = [data / name for name in SCENES if name != run.scene]
        images, labels = [str(s / "image.tif") for s in scenes], [str(s / "labels.tif") for s in scenes]
    else:
        images = [str(half_path(work, run.scene, "a", "image.tif"))]
        labels = [str(half_path(work, run.scene, "a", "labels.tif"))]
    # never the default start, the shipped starter model: it was trained on these very scenes
    start = {"init_model": str(start_model_path(work, run))} if run.kind == "finetune" else {"from_scratch": True}
    config = TrainConfig.for_preset(
        "default",
        images=images,
        labels=labels,
        output_model=str(work / "models" / f"{run.slug}.pt"),
        building_values=BUILDING_VALUES,
        device=DEVICE,
        seed=run.seed,
        time_budget_s=run.minutes * 60,
        **start,
        **parse_run(f"default:{run.recipe}")[1],
    )
    started = time.monotonic()
    result = train(config, on_epoch=lambda record: print(f"  [{run.key}] {epoch_line(record)}", flush=True))
    train_s = time.monotonic() - started
    mask = work / "masks" / f"{run.slug}_mask.tif"
    return {
        "key": run.key,
        **{f.name: getattr(run, f.name) for f in fields(Run)},
        **score_half_b(work, run.scene, result.model_path, mask, None),
        **history_figures(result, config.batch_size),
        "train_s": train_s,
        "threads": threads,
        "sizing": config.sizing,
    }


def score_half_b(work: Path, scene: str, model: Path | LoadedModel, mask: Path, threshold: float | None) -> dict:
    prediction = predict_raster(
        half_path(work, scene, "b", "image.tif"), model, mask_path=mask, threshold=threshold, device=DEVICE
    )
    scores = evaluate(mask, half_path(work, scene, "b", "labels.tif"), BUILDING_VALUES, object_scores=False).scores()
    return {"test_iou": scores["iou"], "test_f1": scores["f1"], "threshold": prediction.threshold}


def interpolated(work: Path, run: Run, alpha: float) -> dict:
    """The record of the weights ``alpha`` of the way from the fine-tune's start to the fine-tuned model."""
    start, tuned = load_model(start_model_path(work, run)), load_model(work / "models" / f"{run.slug}.pt")
    start_state, tuned_state = start.net.state_dict(), tuned.net.state_dict()
    tuned.net.load_state_dict(
        {
            name: start_state[name] + alpha * (value - start_state[name]) if value.is_floating_point() else value
            for name, value in tuned_state.items()
        }
    )
    mask = work / "masks" / f"{run.slug}_alpha{alpha:g}_mask.tif"
    return {"key": f"{run.key} alpha {alpha:g}", **score_half_b(work, run.scene, tuned, mask, tuned.info.threshold)}


def print_interpolations(results: dict[str, dict], work: Path, runs: list[Run], alphas: list[float]) -> None:
    """Half B's IoU of each recorded fine-tune's interpolations, computed once and kept in results.jsonl."""
    print("\ninterpolated weights, start + A x (tuned - start): test IoU on half B")
    print(f"{'fine-tune':>52} " + " ".join(f"{f'A={alpha:g}':>8}" for alpha in alphas))
    for run in runs:
        if run.kind != "finetune" or run.key not in results:
            continue
        ious = []
        for alpha in alphas:
            key = f"{run.key} alpha {alpha:g}"
            if key not in results:
                results[key] = interpolated(work, run, alpha)
                with (work / "results.jsonl").open("a") as file:
                    file.write(json.dumps(results[key]) + "\n")
            ious.append(f"{results[key]['test_iou']:8.4f}")
        print(f"{run.key:>52} " + " ".join(ious), flush=True)


def epoch_line(record: dict) -> str:
    if record["epoch"] == 0:  # the starting weights, validated before any step
        return f"epoch 0 (start): val IoU {record[VAL_SCORE]:.4f}"
    return (
        f"epoch {record['epoch']}: {record['train_batches']} batches, train loss {record['train_loss']:.4f}, "
        f"val IoU {record[VAL_SCORE]:.4f}, {record['seconds']:.0f} s"
    )


def history_figures(result: TrainResult, batch_size: int) -> dict:
    """What the history says: the start's and the best validation IoU, the best epoch, whether the
    start was kept, and the training crops seen (the epoch-0 record, validation only, trained on none)."""
    by_epoch = {record["epoch"]: record for record in result.history}
    start = by_epoch.get(0)
    return {
        "val_iou_epoch0": start[VAL_SCORE] if start else None,
        "best_val_iou": by_epoch[result.best_epoch][VAL_SCORE],
        "best_epoch": result.best_epoch,
        "kept_start": result.best_epoch == 0,
        "epochs": sum(1 for epoch in by_epoch if epoch > 0),
        "crops": sum(record.get("train_batches", 0) for record in result.history) * batch_size,
    }


def read_results(path: Path) -> dict[str, dict]:
    """The recorded runs by key; a line cut short by an interruption is ignored (that run reruns)."""
    results = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            results[record["key"]] = record
    return results


def planned_runs(
    scenes: list[str], minutes: list[float], start_minutes: float, recipes: list[str], seeds: list[int]
) -> list[Run]:
    """Starting models first, so that fine-tunes can follow them while the scratch runs go on."""
    runs = [Run("start", scene, start_minutes) for scene in scenes]
    for scene in scenes:
        for budget in minutes:
            for seed in seeds:
                runs.append(Run("scratch", scene, budget, seed=seed))
                runs += [Run("finetune", scene, budget, start_minutes, recipe, seed) for recipe in recipes]
    return runs


def run_all(runs: list[Run], results_path: Path, data: Path, work: Path, jobs: int, threads: int) -> None:
    """Run what is not recorded yet, up to ``jobs`` at a time, a fine-tune once its starting model is
    recorded; each finished run's record is appended to ``results_path`` at once."""
    done = read_results(results_path)
    waiting = [run for run in runs if run.key not in done]
    # spawn, not fork: a forked child inherits the parent's torch thread pools in an unknown state
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        running: dict[Future, Run] = {}
        while waiting or running:
            for run in [run for run in waiting if run.kind != "finetune" or run.start.key in done]:
                waiting.remove(run)
                running[pool.submit(execute, run, data, work, threads)] = run
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                run = running.pop(future)
                record = future.result()
                with results_path.open("a") as file:
                    file.write(json.dumps(record) + "\n")
                done[run.key] = record
                print(
                    f"done [{run.key}]: test IoU {record['test_iou']:.4f}, best epoch {record['best_epoch']}, "
                    f"{record['crops']} crops in {record['train_s']:.0f} s",
                    flush=True,
                )


def recipe_name(recipe: str) -> str:
    return recipe or "engine"


def seed_records(results: dict[str, dict], run: Run, seeds: list[int]) -> list[dict]:
    """The recorded runs of ``run`` under each seed (a starting model has one, seed 0)."""
    if run.kind == "start":
        return [results[run.key]] if run.key in results else []
    keys = (replace(run, seed=seed).key for seed in seeds)
    return [results[key] for key in keys if key in results]


def cell(records: list[dict], name: str) -> str:
    """The mean over seeds, with the range when there are several."""
    values = [record[name] for record in records if record.get(name) is not None]
    if not values:
        return "-"
    if isinstance(values[0], bool):
        return "/".join("yes" if value else "no" for value in values)
    mean = sum(values) / len(values)
    if not isinstance(values[0], float):
        return f"{mean:.0f}"
    return f"{mean:.4f}" + (f" ({min(values):.3f}-{max(values):.3f})" if len(values) > 1 else "")


def print_table(
    results: dict[str, dict],
    scenes: list[str],
    minutes: list[float],
    start_minutes: float,
    recipes: list[str],
    seeds: list[int],
) -> None:
    wide = 10 if len(seeds) == 1 else 24  # a mean and its range across seeds
    columns = [
        ("scene", 11),
        ("min", 5),
        ("fine-tune recipe", max(16, *map(len, map(recipe_name, recipes)))),
        ("start IoU", 10),
        ("tuned IoU", wide),
        ("scratch IoU", wide),
        ("start F1", 9),
        ("tuned F1", wide),
        ("scratch F1", wide),
        ("tuned val ep0", 14),
        ("tuned val best", wide),
        ("best ep", 8),
        ("kept start", 11),
        ("tuned crops", 12),
        ("scratch crops", 14),
    ]
    print(f"\nseeds {' '.join(map(str, seeds))}: each cell is the mean over the seeds recorded (range in brackets)")
    print(" ".join(f"{name:>{width}}" for name, width in columns))
    for scene in scenes:
        start = seed_records(results, Run("start", scene, start_minutes), seeds)
        for budget in minutes:
            scratch = seed_records(results, Run("scratch", scene, budget), seeds)
            for recipe in recipes:
                tuned = seed_records(results, Run("finetune", scene, budget, start_minutes, recipe), seeds)
                cells = [
                    scene,
                    f"{budget:g}",
                    recipe_name(recipe),
                    *(cell(records, "test_iou") for records in (start, tuned, scratch)),
                    *(cell(records, "test_f1") for records in (start, tuned, scratch)),
                    *(cell(tuned, name) for name in ("val_iou_epoch0", "best_val_iou", "best_epoch", "kept_start")),
                    cell(tuned, "crops"),
                    cell(scratch, "crops"),
                ]
                print(" ".join(f"{text:>{width}}" for text, (_, width) in zip(cells, columns)))
    for recipe in recipes:
        print(f"target, {recipe_name(recipe)} recipe: {target_verdict(results, scenes, start_minutes, recipe, seeds)}")


def target_verdict(
    results: dict[str, dict], scenes: list[str], start_minutes: float, recipe: str, seeds: list[int]
) -> str:
    """Whether the target holds on every scene (mean test IoU over the seeds), or where it fails, or what
    is missing to tell."""
    failures, missing = [], [scene for scene in SCENES if scene not in scenes]
    for scene in scenes:
        start, tuned, scratch = (
            seed_records(results, run, seeds)
            for run in (
                Run("start", scene, start_minutes),
                Run("finetune", scene, TARGET_MINUTES, start_minutes, recipe),
                Run("scratch", scene, TARGET_MINUTES),
            )
        )
        if len(start) < 1 or len(tuned) < len(seeds) or len(scratch) < len(seeds):
            missing.append(scene)
            continue
        start_iou, tuned_iou, scratch_iou = (
            sum(record["test_iou"] for record in records) / len(records) for records in (start, tuned, scratch)
        )
        if not tuned_iou > max(start_iou, scratch_iou):
            failures.append(f"{scene} (tuned {tuned_iou:.4f}, start {start_iou:.4f}, scratch {scratch_iou:.4f})")
    if failures:
        return f"does NOT hold: {TARGET}; it fails on {', '.join(failures)}"
    if missing:
        return (
            f"not measured on {', '.join(missing)} (needs all scenes, every seed and --minutes "
            f"{TARGET_MINUTES:g}): {TARGET}"
        )
    return f"HOLDS: {TARGET}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", nargs="+", choices=SCENES, default=list(SCENES), help="scenes to test on")
    parser.add_argument(
        "--minutes", type=float, nargs="+", default=[3.0, 10.0, 30.0], help="fine-tune / scratch budgets (3 10 30)"
    )
    parser.add_argument("--start-minutes", type=float, default=30.0, help="starting models' budget (default 30)")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch threads per run (default: all cores)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side, each in its own process (default 1)")
    parser.add_argument(
        "--finetune",
        action="append",
        metavar="SPEC",
        help="training overrides of the fine-tunes, e.g. learning_rate=1e-4,l2sp_weight=0.01; repeat to compare "
        "recipes (default: the engine's fine-tuning recipe)",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[SEED], help="training seeds of the fine-tunes and new networks (0)"
    )
    parser.add_argument(
        "--interpolate",
        type=float,
        nargs="+",
        default=[],
        metavar="A",
        help="also score each fine-tune's weights interpolated towards its start, e.g. 0.25 0.5 0.75",
    )
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench_finetune")
    args = parser.parse_args()
    recipes: list[str] = args.finetune or [""]

    data = shared_data()
    missing = [name for name in SCENES if not (data / name / "labels.tif").is_file()]
    if missing:
        print(f"skipped: the real scenes {missing} are not in {data} (set UNET_SHARED_DATA to their folder)")
        return 0
    for recipe in recipes:  # an unknown option fails here, not after a starting model's half hour
        TrainConfig.for_preset(
            "default",
            images=[],
            labels=[],
            output_model="",
            device=DEVICE,
            from_scratch=True,
            **parse_run(f"default:{recipe}")[1],
        )

    args.work.mkdir(parents=True, exist_ok=True)
    for scene in args.scenes:
        write_halves(data, args.work, scene)
    results_path = args.work / "results.jsonl"
    runs = planned_runs(args.scenes, args.minutes, args.start_minutes, recipes, args.seeds)
    todo = [run for run in runs if run.key not in read_results(results_path)]
    budget_min = sum(run.minutes for run in todo)
    print(
        f"{len(todo)} of {len(runs)} runs to do ({len(runs) - len(todo)} recorded in {results_path}): "
        f"{budget_min:g} min of training budgets, about {math.ceil(budget_min / args.jobs)} min with "
        f"{args.jobs} job(s) of {args.threads} thread(s); fine-tuning recipes: {', '.join(map(recipe_name, recipes))}",
        flush=True,
    )
    run_all(runs, results_path, data, args.work, args.jobs, args.threads)
    print_table(read_results(results_path), args.scenes, args.minutes, args.start_minutes, recipes, args.seeds)
    if args.interpolate:
        print_interpolations(read_results(results_path), args.work, runs, args.interpolate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
