"""Training engine: the network's shape, real optimisation steps on a tiny scene, the model file,
checkpoints, resume, cancel and repeatability."""

from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from model.errors import Cancelled, InputError
from model.net.modelfile import load_model, read_payload
from model.net.network import UNet, UNetConfig, count_conv_layers, count_parameters
from model.training.objective import ValidationTally, masked_loss, tuned_threshold
from model.training.trainer import PAPER_PRESET, TrainConfig, checkpoint_dir_for, train
from tests.engine.scenes import UTM_36_TRANSFORM, write_pair


def write_scene(folder: Path, name: str, seed: int, size_px: int = 96) -> tuple[str, str]:
    """Bright squares (class 2) on a darker noisy background with some class 1: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size_px, size_px), np.uint8)
    labels[rng.random((size_px, size_px)) < 0.1] = 1
    for _ in range(8):
        row, col = rng.integers(0, size_px - 12, 2)
        labels[row : row + 10, col : col + 10] = 2
    return write_pair(folder, name, labels, rng=rng)


@pytest.fixture
def scenes(tmp_path: Path) -> tuple[list[str], list[str]]:
    pairs = [write_scene(tmp_path, f"scene_{index}", index) for index in range(2)]
    return [image for image, _ in pairs], [label for _, label in pairs]


def tiny_config(scenes, output: Path, **overrides) -> TrainConfig:
    images, labels = scenes
    values = dict(
        images=images,
        labels=labels,
        building_values=[2],
        output_model=str(output),
        epochs=2,
        patches_per_epoch=16,
        batch_size=4,
        base_width=4,
        tile_size_px=32,
        seed=3,
        device="cpu",
    )
    values.update(overrides)
    return TrainConfig.for_preset(values.pop("preset", "default"), **values)


def test_paper_network_has_19_convolutions_and_31_378_945_parameters():
    net = UNet(UNetConfig(in_bands=3, base_width=64))
    assert count_conv_layers(net) == 19
    assert count_parameters(net) == 31_378_945
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)


def test_network_rejects_wrong_band_count_and_tile_size():
    net = UNet(UNetConfig(in_bands=4, base_width=4))
    with pytest.raises(InputError, match="bands"):
        net(torch.zeros(1, 3, 32, 32))
    with pytest.raises(InputError, match="multiples of 16"):
        net(torch.zeros(1, 4, 40, 40))


def test_paper_preset_holds_the_papers_numbers():
    config = TrainConfig.for_preset("paper", images=["a.tif"], labels=["b.tif"], output_model="m.pt")
    assert (config.epochs, config.patches_per_epoch, config.batch_size, config.base_width) == (10, 100_000, 16, 64)
    assert (config.learning_rate, config.loss, config.batch_norm, config.tile_size_px) == (0.01, "bce", False, 256)
    assert config.validation == "random" and config.validation_fraction == 0.2 and config.keep_epoch_checkpoints
    assert not config.augmentation.flips_and_rot90
    assert TrainConfig.for_preset("paper", images=[], labels=[], output_model="m", epochs=3).epochs == 3
    assert set(PAPER_PRESET) <= set(TrainConfig.__dataclass_fields__)


def test_masked_loss_ignores_pixels_with_zero_weight():
    logits = torch.tensor([[[[5.0, -5.0]]]])
    target = torch.tensor([[[[1.0, 1.0]]]])
    only_first = masked_loss(logits, target, torch.tensor([[[[1.0, 0.0]]]]), "bce")
    assert float(only_first) == pytest.approx(float(torch.nn.functional.softplus(torch.tensor(-5.0))), rel=1e-5)


def test_tuned_threshold_finds_the_iou_maximum():
    positives = np.zeros(100, np.int64)
    negatives = np.zeros(100, np.int64)
    positives[70:] = 10  # buildings score 0.70 and above
    negatives[:40] = 10  # background below 0.40
    negatives[60:70] = 5  # a little background between 0.60 and 0.70
    threshold, iou = tuned_threshold(positives, negatives)
    assert threshold == pytest.approx(0.70)  # the only cut that keeps every building and no background
    assert iou == pytest.approx(1.0)


def test_validation_tunes_the_threshold_on_labelled_pixels_only():
    """Buildings score 0.3, background 0.1, and pixels without a label (no data, weight 0) 0.6: cut
    anywhere in (0.1, 0.3] the labelled pixels are all right. Counted as background, the unlabelled
    ones would move the cut above 0.6 or spoil its IoU."""
    probability = torch.tensor([0.3] * 20 + [0.1] * 60 + [0.6] * 40).view(1, 1, 1, -1)
    target = torch.tensor([1.0] * 20 + [0.0] * 100).view(1, 1, 1, -1)
    weight = torch.tensor([1.0] * 80 + [0.0] * 40).view(1, 1, 1, -1)
    tally = ValidationTally()
    tally.add(torch.logit(probability), target, weight, "bce")
    record = tally.record(crop_count=1, tune_threshold=True)
    assert 0.1 < record["val_threshold"] <= 0.3
    assert record["val_iou_tuned"] == pytest.approx(1.0)


def test_training_steps_reduce_the_loss_and_write_model_history_and_checkpoint(scenes, tmp_path):
    epochs = []
    output = tmp_path / "out" / "model.pt"
    config = tiny_config(scenes, output, epochs=4, patches_per_epoch=24, learning_rate=3e-3)
    result = train(config, on_epoch=epochs.append)
    assert [record["epoch"] for record in epochs] == [1, 2, 3, 4]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    loaded = load_model(output)
    assert loaded.info.bands == [1, 2, 3] and loaded.info.building_values == [2]
    assert loaded.info.pixel_size == [0.5, 0.5] and loaded.info.tile_size_px == 32
    assert loaded.info.best_epoch == result.best_epoch and len(loaded.info.history) == 4
    assert loaded.info.threshold == result.history[result.best_epoch - 1]["val_threshold"]  # tuned on validation
    # the default normalisation: the training images' statistics (both images' pixels pooled), fixed
    # in the model file and applied unchanged to every image
    pixels = np.concatenate([rasterio.open(path).read().reshape(3, -1) for path in scenes[0]], axis=1)
    normalization = loaded.info.normalization
    assert normalization["mode"] == "fixed" and normalization["source"] == "training images"
    assert normalization["mean"] == pytest.approx(pixels.mean(axis=1).tolist(), rel=1e-6)
    assert normalization["std"] == pytest.approx(pixels.std(axis=1).tolist(), rel=1e-6)
    with open(result.history_csv_path) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and {"val_iou", "val_loss", "train_loss", "seconds"} <= set(rows[0])
    assert (checkpoint_dir_for(output) / "last.pt").is_file()
    # plain values and tensors only: loads without unpickling code
    payload = torch.load(output, weights_only=True)
    assert payload["info"]["history"][0]["epoch"] == 1


def test_model_file_round_trips_bit_exactly(scenes, tmp_path):
    output = tmp_path / "model.pt"
    train(tiny_config(scenes, output, epochs=1))
    first = load_model(output)
    second_path = tmp_path / "copy.pt"
    from model.net.modelfile import save_model

    save_model(second_path, first.net, first.info)
    second = load_model(second_path)
    for (name, a), (_, b) in zip(first.net.state_dict().items(), second.net.state_dict().items()):
        assert torch.equal(a, b), name
    assert repr(first.info) == repr(second.info)  # repr: NaN scores compare equal


def test_seeded_cpu_runs_repeat_exactly(scenes, tmp_path):
    a = train(tiny_config(scenes, tmp_path / "a.pt", epochs=1))
    b = train(tiny_config(scenes, tmp_path / "b.pt", epochs=1))
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    weights_a, weights_b = load_model(a.model_path).net.state_dict(), load_model(b.model_path).net.state_dict()
    assert all(torch.equal(weights_a[name], weights_b[name]) for name in weights_a)


def test_cancel_stops_within_a_batch_and_keeps_the_last_complete_epoch(scenes, tmp_path):
    output = tmp_path / "model.pt"
    calls = {"batches": 0}
    finished_epochs = []

    def cancelled() -> bool:
        return len(finished_epochs) >= 1 and calls["batches"] >= 2

    def progress(percent: float, message: str) -> None:
        if "batch" in message:
            calls["batches"] += 1

    with pytest.raises(Cancelled, match="Cancelled by the user"):
        train(
            tiny_config(scenes, output, epochs=5),
            progress=progress,
            cancelled=cancelled,
            on_epoch=finished_epochs.append,
        )
    assert len(finished_epochs) == 1
    assert load_model(output).info.epoch == 1


def test_paper_preset_trains_with_random_split_and_epoch_checkpoints(scenes, tmp_path):
    output = tmp_path / "paper.pt"
    config = tiny_config(
        scenes, output, preset="paper", epochs=2, patches_per_epoch=20, base_width=4, batch_size=4, tile_size_px=32
    )
    result = train(config)
    assert sorted(p.name for p in checkpoint_dir_for(output).glob("epoch_*.pt")) == ["epoch_001.pt", "epoch_002.pt"]
    info = load_model(output).info
    assert info.threshold == 0.5 and info.normalization["mode"] == "fixed" and info.preset == "paper"
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in load_model(output).net.modules())
    assert len(result.history) == 2


def test_polygon_labels_train_exactly_like_a_class_raster_of_the_pixels_they_cover(tmp_path):
    """Polygons are burnt by the pixel-centre rule. Each building here starts 0.6 px into its first
    pixel and ends 0.4 px into its last, so it covers only the pixels whose centres it holds: a class
    raster of exactly those pixels must train identically (same crops, same losses, same weights).
    Burning all touched pixels, or shifting the polygons by a pixel, trains differently."""
    rng = np.random.default_rng(5)
    size_px = 96
    labels = np.zeros((size_px, size_px), np.uint8)
    features = []
    for _ in range(8):
        top, left = rng.integers(0, size_px - 14, 2) + 0.6
        bottom, right = top + 10.8, left + 10.8
        labels[int(top) + 1 : int(bottom), int(left) + 1 : int(right)] = 2  # the pixels whose centres lie inside
        x0, x1 = UTM_36_TRANSFORM * (left, 0), UTM_36_TRANSFORM * (right, 0)
        y0, y1 = UTM_36_TRANSFORM * (0, top), UTM_36_TRANSFORM * (0, bottom)
        ring = [[x0[0], y0[1]], [x1[0], y0[1]], [x1[0], y1[1]], [x0[0], y1[1]], [x0[0], y0[1]]]
        features.append({"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}})
    image, raster_labels = write_pair(tmp_path, "scene", labels, rng=rng)
    polygons = tmp_path / "buildings.geojson"
    crs = {"type": "name", "properties": {"name": "EPSG:32636"}}
    polygons.write_text(json.dumps({"type": "FeatureCollection", "crs": crs, "features": features}))

    from_raster = train(tiny_config(([image], [raster_labels]), tmp_path / "raster.pt", epochs=1))
    from_polygons = train(tiny_config(([image], [str(polygons)]), tmp_path / "polygons.pt", epochs=1))
    for a, b in zip(from_raster.history, from_polygons.history, strict=True):
        assert repr({**a, "seconds": 0}) == repr({**b, "seconds": 0})  # repr: NaN scores compare equal
    weights_raster = load_model(from_raster.model_path).net.state_dict()
    weights_polygons = load_model(from_polygons.model_path).net.state_dict()
    assert all(torch.equal(weights_raster[name], weights_polygons[name]) for name in weights_raster)


def test_clear_errors_for_mismatched_inputs(scenes, tmp_path):
    images, labels = scenes
    with pytest.raises(InputError, match="one label layer per image"):
        train(tiny_config((images, labels[:1]), tmp_path / "m.pt"))
    with pytest.raises(InputError, match="holds 0, 1 and 2; building value 7 is not among them"):
        train(tiny_config((images, labels), tmp_path / "m.pt", building_values=[7]))
    with pytest.raises(InputError, match="is not a model file|not a U-Net"):
        (tmp_path / "junk.pt").write_bytes(b"not a model")
        read_payload(tmp_path / "junk.pt")


def test_time_budget_is_checked_before_every_batch_and_still_saves_a_validated_model(scenes, tmp_path):
    """Training stops at the first batch boundary after the budget is spent: the budget was not yet spent
    when the last batch began (right after the previous batch's report) and was when the next one would
    have (right after the last report). The margin covers the moments between a report and that check,
    and between this test's clock and training's; an epoch is far longer than the budget."""
    budget_s, margin_s = 3.0, 0.5
    started = time.monotonic()
    batch_ends_s: list[float] = []

    def progress(percent: float, message: str) -> None:
        if re.match(r"epoch \d+, batch \d+/", message):
            batch_ends_s.append(time.monotonic() - started)

    result = train(
        tiny_config(scenes, tmp_path / "m.pt", epochs=50, patches_per_epoch=40_000, time_budget_s=budget_s),
        progress=progress,
    )
    assert result.stopped_early and result.stop_reason == "the time budget of 0.05 min was reached"
    assert len(result.history) == 1 and result.history[0]["train_batches"] == len(batch_ends_s)
    if batch_ends_s:  # none when a busy machine spent the whole budget starting up: nothing to time then
        last_batch_began_s = batch_ends_s[-2] if len(batch_ends_s) > 1 else 0.0
        assert last_batch_began_s < budget_s + margin_s and batch_ends_s[-1] > budget_s - margin_s
    assert load_model(result.model_path).info.epoch == 1


def test_uint16_four_band_image_with_nodata_trains_and_large_scenes_are_read_by_window(tmp_path, monkeypatch):
    import model.training.sampling as sampling

    rng = np.random.default_rng(0)
    size_px = 64
    labels = np.zeros((size_px, size_px), np.uint8)
    labels[10:30, 10:30] = 2
    image = rng.normal(9000, 800, (4, size_px, size_px))
    image[:, labels == 2] += 20000
    image[:, :, :8] = 0  # a nodata strip: never counted in loss or metrics
    profile = dict(
        driver="GTiff",
        width=size_px,
        height=size_px,
        crs="EPSG:32636",
        transform=from_origin(500000, 9000000, 0.5, 0.5),
    )
    with rasterio.open(tmp_path / "img.tif", "w", count=4, dtype="uint16", nodata=0, **profile) as dst:
        dst.write(np.clip(image, 0, 65535).astype(np.uint16))
    with rasterio.open(tmp_path / "lab.tif", "w", count=1, dtype="uint8", **profile) as dst:
        dst.write(labels, 1)
    monkeypatch.setattr(sampling, "IN_MEMORY_LIMIT_BYTES", 0)  # as for a scene too large to hold
    scene = sampling.load_scene(tmp_path / "img.tif", tmp_path / "lab.tif", [2], [1, 2, 3, 4], 32, tmp_path / "scratch")
    assert isinstance(scene.image, sampling.WindowedImage) and isinstance(scene.label, np.memmap)
    assert scene.image[:, 0:32, 0:32].dtype == np.uint16
    # augmentation and the paper's 0..1 scaling use the data's own high value, not 65535
    written = np.clip(image, 0, 65535).astype(np.uint16)
    assert scene.value_scale == pytest.approx(np.percentile(written[:, :, 8:], 99.9), rel=1e-6)
    assert (scene.label[:, :8] == 255).all() and (scene.label[10:30, 10:30] == 1).all()
    result = train(
        tiny_config(
            ([str(tmp_path / "img.tif")], [str(tmp_path / "lab.tif")]), tmp_path / "m.pt", epochs=1, bands=[1, 2, 3, 4]
        )
    )
    info = load_model(result.model_path).info
    assert info.bands == [1, 2, 3, 4] and info.network["in_bands"] == 4
    assert not list(tmp_path.glob(".unet_buildings_scratch_*"))  # scratch removed


def test_a_scene_read_by_window_gives_the_crops_and_the_model_of_one_held_in_memory(tmp_path, monkeypatch):
    """An image too large to hold is read crop by crop from its file instead of copied: the crops (float
    voids, nodata and a scene narrower than a crop included) and a seeded run's history are the same."""
    import model.training.sampling as sampling

    rng = np.random.default_rng(5)
    labels = np.where(rng.random((48, 80)) < 0.3, 2, 1).astype(np.uint8)
    image = rng.normal(0.4, 0.1, (3, 48, 80)).astype(np.float32)
    image[:, 5:9, 30:40] = np.nan  # voids without a nodata value
    image[:, :, :4] = -1  # a declared nodata strip
    profile = dict(driver="GTiff", crs="EPSG:32636", transform=UTM_36_TRANSFORM)
    with rasterio.open(
        tmp_path / "f.tif", "w", width=80, height=48, count=3, dtype="float32", nodata=-1, **profile
    ) as d:
        d.write(image)
    with rasterio.open(tmp_path / "f_labels.tif", "w", width=80, height=48, count=1, dtype="uint8", **profile) as d:
        d.write(labels, 1)
    pairs = ([str(tmp_path / "f.tif")], [str(tmp_path / "f_labels.tif")])

    def crops_and_history(limit_bytes: int, name: str):
        monkeypatch.setattr(sampling, "IN_MEMORY_LIMIT_BYTES", limit_bytes)
        scene = sampling.load_scene(pairs[0][0], pairs[1][0], [2], [1, 2, 3], 64, tmp_path / f"scratch_{name}")
        crops = [sampling.Crop(0, 0, col) for col in (0, 9, 16)]  # 64 px crops of the padded 64 x 80 scene
        gathered = sampling.gather([scene], crops, 64)
        history = train(tiny_config(pairs, tmp_path / f"{name}.pt", tile_size_px=64, building_values=[2])).history
        return type(scene.image), gathered, history

    held, (held_images, held_labels, _), held_history = crops_and_history(2 * 1024**3, "held")
    windowed, (read_images, read_labels, _), read_history = crops_and_history(0, "windowed")
    assert held is np.ndarray and windowed is sampling.WindowedImage
    np.testing.assert_array_equal(read_images, held_images)
    np.testing.assert_array_equal(read_labels, held_labels)
    assert np.isfinite(read_images).all() and (read_images[:, :, 48:] == 0).all()  # voids 0, padding 0
    assert len(read_history) == len(held_history) == 2
    for read, held in zip(read_history, held_history):  # to the last bit, but for the time taken
        read.pop("seconds"), held.pop("seconds")
        assert read == pytest.approx(held, rel=0, abs=0, nan_ok=True)


def test_cancel_takes_effect_inside_a_batch(scenes, tmp_path):
    """A cancel request made once a batch has started stops it before the next U-Net block:
    the first batch never completes (no progress report for it) and no model file is written."""
    calls = {"count": 0}
    messages: list[str] = []

    def cancelled() -> bool:
        calls["count"] += 1
        # one check per image read, one at the first batch's start: the next one is inside the batch
        return calls["count"] > len(scenes[0]) + 1

    with pytest.raises(Cancelled, match="Cancelled by the user") as caught:
        train(
            tiny_config(scenes, tmp_path / "m.pt", epochs=3, base_width=8),
            cancelled=cancelled,
            progress=lambda percent, message: messages.append(message),
        )
    assert any(entry.name == "forward" and entry.path.name == "network.py" for entry in caught.traceback)
    assert not any("batch 1/" in message for message in messages)
    assert not (tmp_path / "m.pt").exists()
