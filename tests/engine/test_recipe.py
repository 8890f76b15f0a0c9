"""The default recipe as a user on a laptop meets it: sized for the device and a time budget, crops
that find buildings, bounded validation that never swallows a small image, augmentation that keeps
labels under their pixels, pixel sizes compared on the ground, fine-tuning, early stop, resume that
ends where an uninterrupted run ends, and clear stops on divergence and bad inputs."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import transform as transform_points

from model.errors import Cancelled, InputError
from model.io.ground import ground_pixel_size_m
from model.io.rasters import LABEL_IGNORE
from model.net.modelfile import ModelInfo, load_model, read_payload, save_model
from model.net.network import UNet, UNetConfig
from model.net.normalization import normalization_for
from model.prediction.predict import predict_raster
from model.progress import Reporter
from model.training.augment import AugmentConfig, augment
from model.training.data import TrainingData
from model.training.distributed import Ranks
from model.training.epoch_files import EpochFiles, RandomState
from model.training.recipe import CPU_DEFAULT_BUDGET_MIN, DEFAULT_SIZES, TrainConfig, default_sizes
from model.training.sampling import (
    CropSampler,
    evenly_spread,
    gather,
    load_scene,
    validation_block_px,
    validation_blocks,
)
from model.training.trainer import TrainingDiverged, checkpoint_dir_for, train
from tests.engine.scenes import UTM_36_TRANSFORM, write_pair
from tests.engine.test_training import tiny_config as config_for


def squares(size_px: int, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.zeros((size_px, size_px), np.uint8)
    for _ in range(count):
        row, col = rng.integers(0, size_px - 12, 2)
        labels[row : row + 10, col : col + 10] = 2
    return labels


@pytest.fixture
def pair(tmp_path: Path) -> tuple[list[str], list[str]]:
    image, label = write_pair(tmp_path, "scene", squares(96, 8, 1))
    return [image], [label]


# -- sizing --------------------------------------------------------------------------------------


def test_default_preset_on_a_cpu_is_narrow_and_trains_for_30_minutes_unless_told_otherwise():
    config = TrainConfig.for_preset(
        "default", images=["a.tif"], labels=["b.tif"], output_model="m.pt", device="cpu", from_scratch=True
    )
    assert (config.base_width, config.batch_size) == (DEFAULT_SIZES["cpu"]["base_width"], 8)
    assert config.time_budget_s == CPU_DEFAULT_BUDGET_MIN * 60 == 1800
    assert "CPU" in config.sizing and "for 30 min" in config.sizing
    # asking for epochs means epochs: no budget is added behind the user's back
    by_epochs = TrainConfig.for_preset("default", images=[], labels=[], output_model="m", device="cpu", epochs=5)
    assert by_epochs.time_budget_s is None and by_epochs.epochs == 5 and "for 5 epochs" in by_epochs.sizing
    # an explicit budget and width win over the device's sizes
    custom = TrainConfig.for_preset(
        "default", images=[], labels=[], output_model="m", device="cpu", time_budget_s=600, base_width=32
    )
    assert (custom.time_budget_s, custom.base_width) == (600, 32)
    # a GPU gets the wider network and no budget
    sizes, sizing = default_sizes("cuda", {})
    assert sizes["base_width"] == 32 and "time_budget_s" not in sizes and "GPU" in sizing
    # the paper preset is the paper's, on any device
    assert TrainConfig.for_preset("paper", images=[], labels=[], output_model="m", device="cpu").base_width == 64


def test_model_file_records_what_was_chosen_and_the_ground_pixel_size(pair, tmp_path):
    result = train(config_for(pair, tmp_path / "m.pt", epochs=1))
    info = load_model(result.model_path).info
    assert info.training["sizing"].startswith("Default recipe sized for this device")
    assert info.training["precision_used"] == result.precision and result.precision
    # UTM zone 36 at its central meridian: 0.5 projected m are 0.5 / 0.9996 ground m
    assert info.ground_pixel_size_m == pytest.approx([0.5 / 0.9996] * 2, rel=1e-4)


def test_a_model_of_several_resolutions_records_their_weighted_ground_size_and_every_value_scale(tmp_path):
    """Not the first image's alone: 96 px at 0.5 m with 192 px at 1.0 m (four times the pixels)."""
    fine = write_pair(tmp_path, "fine", squares(96, 8, 1))
    coarse = write_pair(tmp_path, "coarse", squares(192, 16, 2), transform=from_origin(500000, 9000000, 1.0, 1.0))
    pairs = ([fine[0], coarse[0]], [fine[1], coarse[1]])
    info = load_model(train(config_for(pairs, tmp_path / "m.pt", epochs=1)).model_path).info
    assert info.ground_pixel_size_m == pytest.approx([(0.5 + 4 * 1.0) / 5 / 0.9996] * 2, rel=1e-3)
    assert info.value_scales == [255.0, 255.0]


# -- sampling --------------------------------------------------------------------------------------


def test_building_centred_crops_find_rare_buildings_and_random_crops_avoid_unlabelled_areas(tmp_path):
    labels = np.zeros((256, 256), np.uint8)
    labels[200:210, 40:50] = 2  # one building in a large scene
    labels[:, 128:] = 255  # half the scene has no labels
    image, label = write_pair(tmp_path, "rare", labels)
    with rasterio.open(label, "r+") as dataset:
        dataset.nodata = 255
    scene = load_scene(image, label, [2], [1, 2, 3], 32)
    usable = scene.label != LABEL_IGNORE
    building = scene.label == 1

    def crops(share: float) -> list:
        return CropSampler([scene], 32, [usable], np.random.default_rng(0), share).draw(200)

    centred = crops(1.0)
    assert all(building[c.row : c.row + 32, c.col : c.col + 32].any() for c in centred)
    uniform = crops(0.0)
    assert np.mean([building[c.row : c.row + 32, c.col : c.col + 32].any() for c in uniform]) < 0.1
    # a uniform crop is drawn again while less than a quarter of it is labelled
    # (one uniform draw would average about half a labelled crop here)
    usable_share = np.array([usable[c.row : c.row + 32, c.col : c.col + 32].mean() for c in uniform])
    assert usable_share.mean() > 0.85 and (usable_share < 0.25).mean() < 0.02


def test_validation_holds_out_a_fifth_of_a_small_image_and_training_crops_never_see_it(tmp_path):
    image, label = write_pair(tmp_path, "small", squares(100, 8, 2))
    scene = load_scene(image, label, [2], [1, 2, 3], 64)
    block_px = validation_block_px(scene, 64)
    assert block_px == 16  # not a 64 px block hiding 40 % of a 100 px image
    hidden = validation_blocks(scene, block_px)
    assert 0.15 < hidden.mean() < 0.25
    crops = CropSampler([scene], 64, [~hidden], np.random.default_rng(1), 0.5).draw(50)
    _, labels, _ = gather([scene], crops, 64, [hidden])
    for crop, crop_labels in zip(crops, labels):
        window = hidden[crop.row : crop.row + 64, crop.col : crop.col + 64]
        assert (crop_labels[window] == LABEL_IGNORE).all()  # validation pixels carry no label in training


def test_training_batches_never_hold_a_pixel_that_validation_scores(pair, tmp_path, monkeypatch):
    """Through a whole training run: every crop training draws has the validation area blanked (band
    means, no label), and validation scores only pixels that training never saw labelled."""
    from model.training.data import TrainingData

    batches = []  # (crops, for training, the crops as gathered with the hidden masks the trainer passed)
    batch_tensors = TrainingData.batch_tensors

    def watched(self, scenes, crops, hidden, augmented, generator):  # the real method, its inputs kept
        batches.append((list(crops), augmented, gather(scenes, crops, 32, hidden)))
        return batch_tensors(self, scenes, crops, hidden, augmented, generator)

    monkeypatch.setattr(TrainingData, "batch_tensors", watched)
    train(config_for(pair, tmp_path / "m.pt", epochs=1))  # spatial validation: only training is augmented
    scene = load_scene(pair[0][0], pair[1][0], [2], [1, 2, 3], 32)
    labelled = {True: np.zeros(scene.label.shape, bool), False: np.zeros(scene.label.shape, bool)}
    for crops, training_batch, (_, labels, _) in batches:
        for crop, crop_labels in zip(crops, labels):
            labelled[training_batch][crop.row : crop.row + 32, crop.col : crop.col + 32] |= crop_labels != LABEL_IGNORE
    trained, scored = labelled[True], labelled[False]
    assert trained.any() and scored.any() and not (trained & scored).any()
    mean = np.asarray(scene.mean, np.float32)[:, None]
    for crops, training_batch, (images, _, _) in batches:
        for crop, crop_image in zip(crops, images):
            if training_batch:  # validation pixels reach training as band means
                assert (crop_image[:, scored[crop.row : crop.row + 32, crop.col : crop.col + 32]] == mean).all()


def test_validation_is_capped_to_an_even_spread_of_fixed_crops():
    items = list(range(1000))
    spread = evenly_spread(items, 10)
    assert spread == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    assert evenly_spread(items[:5], 10) == items[:5]


# -- augmentation ------------------------------------------------------------------------------------


SCALE_AND_LIGHT = dict(brightness=0.1, contrast=0.4, saturation=0.3, zoom_range=(0.6, 1.6))


@pytest.mark.parametrize(
    "options, worst_share",
    [
        (dict(rotation_probability=0.0), 0.0),
        (dict(rotation_probability=1.0), 0.005),
        (dict(rotation_probability=1.0, **SCALE_AND_LIGHT), 0.006),
        (dict(resolution_loss_probability=1.0), 0.01),
    ],
)
def test_augmentation_keeps_a_labelled_square_under_its_pixels(options, worst_share):
    """Flips, quarter turns, rotation, zoom, gamma, jitter and the photometric changes move image, label
    and validity together: the bright square is still where its label says, whatever the transforms
    drawn. Flips and quarter turns move whole pixels, so not one may disagree; an arbitrary rotation or
    zoom resamples the image bilinearly and the label by nearest neighbour, so a few edge pixels do (0.2
    to 0.4 % here; a label one pixel off: 1.2 %), and a resolution loss blurs the square's edges (at most
    0.8 %)."""
    image = torch.full((16, 3, 64, 64), 40.0)
    label = torch.zeros(16, 1, 64, 64)
    image[:, :, 10:30, 20:50] = 220.0
    label[:, :, 10:30, 20:50] = 1.0
    photometric_off = dict(brightness=0.0, contrast=0.0, saturation=0.0)  # unless the case sets them
    config = AugmentConfig(**{"noise_probability": 0.0, "blur_probability": 0.0, **photometric_off, **options})
    for seed in range(4):
        out, target, weight = augment(
            image.clone(),
            label.clone(),
            torch.ones_like(label),
            torch.full((16,), 255.0),
            config,
            torch.Generator().manual_seed(seed),
        )
        bright = out.mean(1, keepdim=True) > 130
        valid = weight > 0
        disagree = (bright != (target > 0.5)) & valid
        assert disagree.float().sum() / valid.float().sum() <= worst_share


def test_zoom_and_resolution_loss_change_what_they_say():
    """A zoom of 2 puts twice the ground across the crop, so a labelled square covers a quarter of the
    pixels it did; a resolution loss of 4 averages the image over 4 px (its pixel-to-pixel differences
    shrink) and keeps its mean and its labels."""
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(4, 3, 64, 64, generator=generator) * 255
    label = torch.zeros(4, 1, 64, 64)
    label[:, :, 16:48, 16:48] = 1.0
    plain = dict(rotation_probability=0.0, noise_probability=0.0, blur_probability=0.0, flips_and_rot90=False)
    plain.update(gamma_range=(1.0, 1.0), colour_jitter=0.0, brightness=0.0, contrast=0.0, saturation=0.0)
    _, zoomed, weight = augment(
        image,
        label,
        torch.ones_like(label),
        torch.full((4,), 255.0),
        AugmentConfig(zoom_range=(2.0, 2.0), **plain),
        generator,
    )
    assert (zoomed * weight).sum() / label.sum() == pytest.approx(0.25, abs=0.01)
    coarse, kept, _ = augment(
        image,
        label,
        torch.ones_like(label),
        torch.full((4,), 255.0),
        AugmentConfig(resolution_loss_probability=1.0, resolution_loss_range=(4.0, 4.0), **plain),
        generator,
    )
    assert torch.equal(kept, label)
    assert float(coarse.mean()) == pytest.approx(float(image.mean()), rel=0.01)
    assert coarse.diff(dim=-1).abs().mean() < 0.5 * image.diff(dim=-1).abs().mean()


# -- ground resolution ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "epsg, transform, expected_m",
    [
        (32633, Affine(0.5, 0, 500000, 0, -0.5, 100), (0.5 / 0.9996, 0.5 / 0.9996)),  # UTM, central meridian
        (3857, Affine(0.15, 0, 0, 0, -0.15, 3_253_000), (0.1325, 0.1318)),  # Web Mercator at 28 degrees N
        (2263, Affine(1, 0, 1_000_000, 0, -1, 200_000), (0.3048, 0.3048)),  # US survey feet
        (2273, Affine(1, 0, 2_000_000, 0, -1, 500_000), (0.3048, 0.3048)),  # international feet
        (4326, Affine(1e-5, 0, 30, 0, -1e-5, 0.001), (1.1132, 1.1057)),  # degrees at the equator
    ],
)
def test_ground_pixel_size_in_any_crs(epsg, transform, expected_m):
    """The rounded figures above, and to a millionth the geodesic distances (PROJ's geodesic solver,
    not the engine's local radii of curvature) between the centre pixel and its right and lower
    neighbours: a sphere for the ellipsoid (0.1 to 0.3 % off), map units taken for metres or x and y
    swapped all fail."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyproj warns about PROJ's data folder, which the geodesic needs not
        geod = pytest.importorskip("pyproj").Geod(ellps="WGS84")
    crs = CRS.from_epsg(epsg)
    measured = ground_pixel_size_m(crs, transform, 100, 100)
    assert measured == pytest.approx(expected_m, rel=2e-3)
    xs, ys = zip(*(transform * (50 + dc, 50 + dr) for dc, dr in ((0, 0), (1, 0), (0, 1))))
    lons, lats = transform_points(crs, CRS.from_epsg(4326), list(xs), list(ys))
    geodesic = [geod.inv(lons[0], lats[0], lons[i], lats[i])[2] for i in (1, 2)]
    assert measured == pytest.approx(geodesic, rel=1e-6)


def test_ground_pixel_size_is_measured_at_the_raster_centre():
    """A Web Mercator raster from about 60 degrees north down to the equator: a pixel covers
    cos(latitude) ground metres per map unit, so where it is measured matters (0.5 at the top
    corner, 1 at the bottom); the centre's latitude is what a pixel of the raster is on average."""
    crs, top = CRS.from_epsg(3857), 8_399_738.0
    height = round(top / 1000)
    measured_x, _ = ground_pixel_size_m(crs, Affine(1000.0, 0, 0, 0, -1000.0, top), 100, height)
    _, (centre_latitude,) = transform_points(crs, CRS.from_epsg(4326), [50_000.0], [top - height * 500.0])
    assert measured_x == pytest.approx(1000.0 * math.cos(math.radians(centre_latitude)), rel=5e-3)


def test_prediction_matches_ground_resolution_across_latitudes(tmp_path):
    """A model trained on 0.3 m Web Mercator pixels at the equator, applied to Web Mercator pixels at
    50 degrees: processed at 0.3 ground metres, i.e. 0.3 / cos(50 deg) = 0.467 Web Mercator units."""
    net = UNet(UNetConfig(in_bands=3, base_width=4, batch_norm=True))
    info = ModelInfo(
        bands=[1, 2, 3],
        tile_size_px=32,
        pixel_size=[0.3, 0.3],
        crs_units="metre",
        ground_pixel_size_m=[0.3, 0.3],
        normalization={"mode": "fixed", "mean": [100.0] * 3, "std": [50.0] * 3},
    )
    save_model(tmp_path / "m.pt", net, info)
    northing_50 = 6_446_276.0  # Web Mercator y of latitude 50
    image, _ = write_pair(
        tmp_path, "north", squares(96, 4, 3), crs="EPSG:3857", transform=from_origin(0, northing_50, 0.3, 0.3)
    )
    result = predict_raster(image, tmp_path / "m.pt", probability_path=tmp_path / "p.tif")
    assert result.processing_pixel_size_map_units[0] == pytest.approx(0.3 / math.cos(math.radians(50)), rel=5e-3)


# -- training behaviour ----------------------------------------------------------------------------


def test_resumed_run_writes_the_same_model_file_as_an_uninterrupted_one(pair, tmp_path):
    straight = train(config_for(pair, tmp_path / "straight.pt", epochs=3))
    done = []
    with pytest.raises(Cancelled, match="Cancelled by the user"):  # after its second epoch
        train(config_for(pair, tmp_path / "part.pt", epochs=3), cancelled=lambda: len(done) == 2, on_epoch=done.append)
    resumed = train(
        config_for(
            pair, tmp_path / "part.pt", epochs=3, resume_from=str(checkpoint_dir_for(tmp_path / "part.pt") / "last.pt")
        )
    )
    a, b = load_model(straight.model_path), load_model(resumed.model_path)
    # the whole history, the two epochs before the interruption included, as the straight run wrote it
    for before, after in zip(straight.history, resumed.history, strict=True):
        assert repr({**before, "seconds": 0}) == repr({**after, "seconds": 0})  # repr: NaN scores compare equal
    assert (b.info.best_epoch, b.info.threshold) == (a.info.best_epoch, a.info.threshold)
    assert all(torch.equal(a.net.state_dict()[k], b.net.state_dict()[k]) for k in a.net.state_dict())
    # the time already spent counts against a budget after resuming
    assert read_payload(checkpoint_dir_for(tmp_path / "part.pt") / "last.pt")["elapsed_s"] > 0


def test_resuming_restores_the_best_epochs_tuned_threshold(pair, tmp_path):
    """A resumed run whose remaining epochs do not beat the best one writes the best epoch's weights
    with the description resuming restored: its threshold must be the best epoch's tuned one, not the
    0.5 a new run starts with."""
    done = train(config_for(pair, tmp_path / "done.pt", epochs=2))
    best_threshold = next(r["val_threshold"] for r in done.history if r["epoch"] == done.best_epoch)
    assert best_threshold != 0.5  # else the check below could not fail
    loaded, info = load_model(done.model_path), ModelInfo(threshold=0.5)
    files = EpochFiles(
        config_for(pair, tmp_path / "next.pt", epochs=3),
        Ranks(torch.device("cpu")),
        RandomState(np.random.default_rng(0), torch.Generator()),
    )
    files.resume(loaded.net, torch.optim.Adam(loaded.net.parameters()), done.checkpoint_dir / "last.pt", info)
    assert (info.best_epoch, info.threshold) == (done.best_epoch, best_threshold)


def test_under_a_time_budget_the_learning_rate_follows_the_clock(pair, tmp_path):
    """Planned for 1,000 epochs but given 20 s, a run must still warm up and decay its rate as the
    budget passes: its last epoch ends near the schedule's floor (1 % of the peak), not at the peak
    the step count alone would give."""
    config = config_for(pair, tmp_path / "m.pt", epochs=1000, patches_per_epoch=8, time_budget_s=20.0)
    rates = [record["learning_rate"] for record in train(config).history]
    peak = config.learning_rate
    assert len(rates) > 2 and rates[-1] < 0.2 * peak
    assert max(rates) > 0.5 * peak  # it did reach the peak on the way


def test_resume_restores_the_best_epoch_and_the_time_already_spent(pair, tmp_path):
    """Without restoring them, a resumed run would report best epoch 0 (threshold 0.5) when no later
    epoch improves, and would train past its budget."""
    done = train(config_for(pair, tmp_path / "done.pt", epochs=2))
    last = str(checkpoint_dir_for(tmp_path / "done.pt") / "last.pt")
    again = train(config_for(pair, tmp_path / "done.pt", epochs=2, resume_from=last))  # nothing left to train
    assert (again.best_epoch, load_model(again.model_path).info.threshold) == (
        done.best_epoch,
        load_model(done.model_path).info.threshold,
    )

    budget = 600.0
    part = []
    with pytest.raises(Cancelled, match="Cancelled by the user"):  # after its first epoch
        train(
            config_for(pair, tmp_path / "part.pt", epochs=3, time_budget_s=budget),
            cancelled=lambda: len(part) == 1,
            on_epoch=part.append,
        )
    last = checkpoint_dir_for(tmp_path / "part.pt") / "last.pt"
    spent = read_payload(last)["elapsed_s"]
    # a budget the first run already used up: the resumed run stops at once
    resumed = train(config_for(pair, tmp_path / "part.pt", epochs=3, time_budget_s=spent * 0.99, resume_from=str(last)))
    assert resumed.stopped_early and "time budget" in resumed.stop_reason and len(resumed.history) == 1


def test_early_stop_ends_training_when_validation_stops_improving(pair, tmp_path):
    result = train(config_for(pair, tmp_path / "m.pt", epochs=10, learning_rate=1e-12, early_stop_patience=2))
    assert result.stopped_early and "did not improve for 2 epochs" in result.stop_reason
    assert len(result.history) == result.best_epoch + 2 < 10


def test_fine_tuning_starts_from_the_given_model_and_keeps_its_network_and_scaling(pair, tmp_path):
    base = train(config_for(pair, tmp_path / "base.pt", epochs=1, base_width=8))
    start = load_model(base.model_path)
    tuned = train(
        config_for(
            pair, tmp_path / "tuned.pt", epochs=1, base_width=4, learning_rate=1e-9, init_model=str(base.model_path)
        )
    )
    after = load_model(tuned.model_path)
    assert after.info.network == start.info.network  # width 8, not the asked 4: the weights decide
    assert after.info.normalization == start.info.normalization
    for name, tensor in start.net.state_dict().items():
        if "running" not in name and "num_batches" not in name:  # batch-norm statistics do move
            assert torch.allclose(tensor, after.net.state_dict()[name], atol=1e-5), name
    with pytest.raises(InputError, match="reads 3 band"):
        train(config_for(pair, tmp_path / "bad.pt", bands=[1, 2], init_model=str(base.model_path)))


def test_divergence_stops_with_a_clear_message_and_no_model(pair, tmp_path):
    with pytest.raises(TrainingDiverged, match="diverged at epoch 1.*no model file was written.*learning rate"):
        train(config_for(pair, tmp_path / "m.pt", learning_rate=1e30, precision="float32"))
    assert not (tmp_path / "m.pt").exists()


def test_a_loss_lost_under_a_grad_scaler_is_divergence_not_a_zero_loss(pair, tmp_path, monkeypatch):
    """float16 training (a GradScaler) skips a step whose loss overflows: a loss that never comes back
    must stop the run as a divergence, not train on with every step skipped and a loss of 0."""
    import model.training.trainer as trainer

    monkeypatch.setattr(trainer, "autocast_settings", lambda device, precision: (None, True))
    epochs: list[dict] = []
    with pytest.raises(TrainingDiverged, match="diverged at epoch .*learning rate"):
        train(
            config_for(pair, tmp_path / "m.pt", learning_rate=1e30, epochs=8, patches_per_epoch=64),
            on_epoch=epochs.append,
        )
    assert all(math.isnan(record["train_loss"]) or record["train_loss"] > 0 for record in epochs if record["epoch"])


def test_progress_moves_during_validation_and_never_promises_more_than_the_budget(pair, tmp_path):
    reports: list[tuple[float, str]] = []
    train(
        config_for(pair, tmp_path / "m.pt", epochs=2, time_budget_s=60.0),
        progress=lambda percent, message: reports.append((percent, message)),
    )
    validation = [percent for percent, message in reports if "validation batch" in message]
    assert validation and validation == sorted(validation)
    left = [float(message.rsplit("about ", 1)[1].split(" min")[0]) for _, message in reports if "min left" in message]
    assert left and max(left) <= 1.0
    percents = [percent for percent, message in reports if "batch" in message]
    assert percents == sorted(percents)


def test_inputs_too_small_or_without_buildings_get_the_right_advice(tmp_path):
    image, label = write_pair(tmp_path, "tiny", np.full((8, 8), 2, np.uint8))
    with pytest.raises(InputError, match="only 8 x 8 px.*at least 32 px"):
        train(config_for(([image], [label]), tmp_path / "m.pt"))
    image, _ = write_pair(tmp_path, "scene", squares(96, 4, 4))
    empty = tmp_path / "empty.geojson"
    empty.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(InputError, match="no building polygon over the image"):
        train(config_for(([image], [str(empty)]), tmp_path / "m.pt"))


def test_training_normalises_each_image_as_prediction_will(pair, tmp_path):
    """A nearly uniform scene (fields) trained beside a textured one: training feeds the network its
    pixels standardised with the (mean, std) prediction will use on it, the contrast floor included,
    not with the scene's own faint contrast."""
    flat = {"image": tmp_path / "flat.tif", "labels": tmp_path / "flat_labels.tif"}
    rng = np.random.default_rng(4)
    for name, data in (("image", 120 + rng.normal(0, 2, (3, 96, 96))), ("labels", squares(96, 2, 5)[None])):
        profile = dict(driver="GTiff", width=96, height=96, count=len(data), dtype="uint8", crs="EPSG:32636")
        with rasterio.open(flat[name], "w", transform=UTM_36_TRANSFORM, **profile) as dataset:
            dataset.write(data.astype(np.uint8))
    images, labels = pair
    config = config_for((images + [str(flat["image"])], labels + [str(flat["labels"])]), tmp_path / "m.pt")
    data = TrainingData(config, torch.device("cpu"), Ranks(torch.device("cpu")), None)
    scenes = data.load_scenes(tmp_path, Reporter.of(), lambda: None)
    train_mean, train_std = data.normalization_of(scenes, np.array([1]))
    with rasterio.open(flat["image"]) as dataset:
        mean, std = normalization_for(dataset, data.bands, data.normalization)
    np.testing.assert_allclose(train_mean[0], mean, rtol=1e-6)
    np.testing.assert_allclose(train_std[0], std, rtol=1e-6)
    assert min(std) > 5.0  # the floor, half the pooled contrast, not the scene's own 2


def test_a_nearly_uniform_image_is_not_stretched_past_the_contrast_floor(tmp_path):
    """Fields or water: per-image statistics alone would stretch faint noise to a town's contrast."""
    flat = np.full((1, 64, 64), 120.0) + np.random.default_rng(0).normal(0, 2, (1, 64, 64))
    path = tmp_path / "field.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=64,
        height=64,
        count=1,
        dtype="float32",
        crs="EPSG:32636",
        transform=from_origin(500000, 9000000, 0.5, 0.5),
    ) as dataset:
        dataset.write(flat.astype(np.float32))
    with rasterio.open(path) as dataset:
        mean, std = normalization_for(dataset, [1], {"mode": "per_image", "min_std": [25.0]})
        assert mean == pytest.approx([120.0], abs=0.2) and std == [25.0]  # not the image's own 2.0
        _, own = normalization_for(dataset, [1], {"mode": "per_image"})  # model files from before the floor
        assert own == pytest.approx([2.0], rel=0.05)
