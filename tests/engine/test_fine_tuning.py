"""Training as adaptation: a run starts from the starter model by default, scores its start on the
validation blocks first (epoch 0), never ends with a model worse than that start, and fine-tunes with
its own recipe (a lower rate, a pull towards the start weights)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from model.net.modelfile import load_model, read_payload
from model.training import start_model
from model.training.recipe import FINE_TUNE_RECIPE, TrainConfig
from model.training.trainer import train
from tests.engine.test_training import scenes, tiny_config  # noqa: F401  (scenes is a fixture)


@pytest.fixture
def start(scenes, tmp_path: Path) -> Path:  # noqa: F811
    """A small model that already finds the scenes' roofs: the model the runs below start from."""
    path = tmp_path / "start.pt"
    train(tiny_config(scenes, path, epochs=6, patches_per_epoch=32, learning_rate=3e-3))
    return path


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_model(path).net.state_dict()


def test_a_run_that_cannot_beat_its_start_keeps_the_start_weights(scenes, start, tmp_path):  # noqa: F811
    output = tmp_path / "wrecked.pt"
    records: list[dict] = []
    # a learning rate of 1 wrecks the network within a few steps: no epoch can beat the start
    config = tiny_config(scenes, output, init_model=str(start), learning_rate=1.0, l2sp_weight=0.0, epochs=2)
    result = train(config, on_epoch=records.append)
    assert [record["epoch"] for record in records] == [0, 1, 2]
    assert result.kept_start and result.best_epoch == 0
    assert result.start_val_iou == result.history[0]["val_iou_tuned"] > max(r["val_iou_tuned"] for r in records[1:])
    kept, started = weights(output), weights(start)
    assert all(torch.equal(kept[name], started[name]) for name in started)
    assert result.outcome.startswith("The new model is not better than the one it started from")
    assert "'start.pt'" in result.outcome
    info = load_model(output).info
    assert info.best_epoch == 0 and info.threshold == result.history[0]["val_threshold"]
    assert info.training["init_model"] == str(start)  # the model file says what it started from
    with open(result.history_csv_path) as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["0", "1", "2"] and rows[0]["train_loss"] == ""


def test_a_run_that_beats_its_start_replaces_it_and_says_by_how_much(scenes, tmp_path):  # noqa: F811
    weak = tmp_path / "weak.pt"
    train(tiny_config(scenes, weak, epochs=1, learning_rate=1e-7))  # as good as a new network
    output = tmp_path / "better.pt"
    result = train(tiny_config(scenes, output, init_model=str(weak), learning_rate=3e-3, epochs=4))
    assert not result.kept_start and result.best_epoch >= 1
    assert result.best_val_iou > result.start_val_iou
    assert result.outcome == (
        f"Validation IoU {result.best_val_iou:.3f} (best epoch {result.best_epoch}), up from "
        f"{result.start_val_iou:.3f} for 'weak.pt', the model it started from."
    )
    assert not all(torch.equal(a, b) for a, b in zip(weights(output).values(), weights(weak).values()))


def test_a_new_network_has_no_epoch_0(scenes, tmp_path):  # noqa: F811
    result = train(tiny_config(scenes, tmp_path / "new.pt", epochs=1))
    assert [record["epoch"] for record in result.history] == [1]
    assert result.start_val_iou is None and not result.kept_start and "a new network" in result.outcome


def test_the_pull_towards_the_start_keeps_weights_near_it(scenes, start, tmp_path):  # noqa: F811
    started = weights(start)

    def distance(l2sp_weight: float) -> float:
        """Squared distance of the run's last weights (not its best) from the start's."""
        output = tmp_path / f"pulled_{l2sp_weight:g}.pt"
        train(tiny_config(scenes, output, init_model=str(start), learning_rate=3e-3, l2sp_weight=l2sp_weight))
        last = read_payload(output.with_name(output.stem + "_checkpoints") / "last.pt")["state_dict"]
        return sum(
            float((last[name] - value).pow(2).sum()) for name, value in started.items() if value.is_floating_point()
        )

    assert distance(10.0) < 0.5 * distance(0.0)


def test_the_batch_loss_is_reported_during_each_epoch(scenes, tmp_path):  # noqa: F811
    batches: list[dict] = []
    train(tiny_config(scenes, tmp_path / "m.pt", epochs=2), on_batch=batches.append)
    # 16 crops of 4: 4 batches an epoch; every epoch's last batch is reported, the first one too
    assert [(record["epoch"], record["batch"]) for record in batches if record["batch"] == 4] == [(1, 4), (2, 4)]
    assert batches[0]["batch"] == 1 and all(record["batches_per_epoch"] == 4 for record in batches)
    assert all(np.isfinite(record["train_loss"]) and record["train_loss"] > 0 for record in batches)


# -- which model a run starts from ------------------------------------------------------------------
def rgb_image(path: Path, bands: int = 3) -> str:
    profile = dict(driver="GTiff", width=32, height=32, count=bands, dtype="uint8")
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(np.zeros((bands, 32, 32), np.uint8))
    return str(path)


def config_for(image: str, preset: str = "default", **options) -> TrainConfig:
    return TrainConfig.for_preset(preset, images=[image], labels=["labels.tif"], output_model="m.pt", **options)


def test_the_default_start_is_the_starter_model_with_the_fine_tuning_recipe(tmp_path):
    if start_model.starter_model() is None:
        pytest.skip("the starter model is not in this checkout")
    config = config_for(rgb_image(tmp_path / "rgb.tif"), device="cpu")
    assert config.init_model == str(start_model.STARTER_MODEL) and not config.start_note
    assert (config.learning_rate, config.warmup_fraction, config.l2sp_weight) == tuple(FINE_TUNE_RECIPE.values())
    assert (
        f"Fine-tuning recipe: learning rate {FINE_TUNE_RECIPE['learning_rate']:g} after a 10% warm-up" in config.sizing
    )
    assert config_for(rgb_image(tmp_path / "rgb.tif"), device="cpu", learning_rate=5e-4).learning_rate == 5e-4


@pytest.mark.parametrize(
    ("bands", "preset", "options", "note"),
    [
        (3, "default", {"from_scratch": True}, ""),
        (2, "default", {}, "the starter model reads 3 bands (red, green, blue) and these images give 2"),
        (3, "paper", {}, "the paper preset always starts from scratch"),
        (3, "default", {"base_width": 32}, "you asked for base width 32 and the starter model has 16"),
        (3, "default", {"normalization": "fixed"}, "you asked for fixed band scaling"),
    ],
)
def test_a_new_network_when_asked_or_when_the_starter_model_does_not_fit(tmp_path, bands, preset, options, note):
    config = config_for(rgb_image(tmp_path / "image.tif", bands), preset, device="cpu", **options)
    assert config.init_model is None and note in config.start_note
    assert "Fine-tuning recipe" not in config.sizing
    assert config.warmup_fraction != FINE_TUNE_RECIPE["warmup_fraction"]


def test_the_starter_model_is_what_start_model_says(tmp_path):
    if start_model.starter_model() is None:
        pytest.skip("the starter model is not in this checkout")
    info = load_model(start_model.STARTER_MODEL).info
    assert len(info.bands) == start_model.STARTER_BANDS
    assert {name: info.network[name] for name in start_model.STARTER_NETWORK} == start_model.STARTER_NETWORK
    # the choice a training run takes: "dataset" is stored as fixed numbers from the training images
    settings = info.normalization
    choice = "dataset" if settings.get("source") == "training images" else settings["mode"]
    assert choice == start_model.STARTER_NORMALIZATION


def test_the_command_line_adapts_a_model_and_says_how_it_compares(scenes, start, tmp_path, capsys):  # noqa: F811
    import json

    from model.__main__ import main

    images, labels = scenes
    output = tmp_path / "cli.pt"
    small = ["--epochs", "1", "--patches-per-epoch", "16", "--batch-size", "4", "--tile-size-px", "32", "--seed", "3"]
    arguments = ["train", "--images", *images, "--labels", *labels, "--building-values", "2", "--device", "cpu"]
    assert main([*arguments, *small, "--init-model", str(start), "--output", str(output)]) == 0
    printed = capsys.readouterr()
    outputs = json.loads(printed.out)
    assert outputs["started_from"] == str(start) and outputs["start_val_iou"] is not None
    assert "epoch 0: the model it starts from: val loss" in printed.err
    assert ("not better than the one it started from" if outputs["kept_start"] else "up from") in printed.err
    assert main([*arguments, *small, "--from-scratch", "--base-width", "4", "--output", str(tmp_path / "new.pt")]) == 0
    assert json.loads(capsys.readouterr().out)["started_from"] is None
