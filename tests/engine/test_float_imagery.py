"""Float imagery (reflectance 0..1, NaN voids with or without a declared nodata value): the same
buildings as from its 8-bit original, voids as nodata, and one sentence when nothing is valid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

from model.errors import InputError
from model.net.modelfile import ModelInfo, save_model
from model.net.network import UNet, UNetConfig
from model.net.normalization import image_statistics
from model.prediction.predict import predict_raster
from model.training.start_model import STARTER_MODEL
from model.training.trainer import train
from tests.engine.scenes import write_geotiff
from tests.engine.test_training import tiny_config

SAMPLE = Path(__file__).resolve().parents[2] / "resources" / "sample" / "scene_3.tif"
CRS = "EPSG:32633"


def write_float(path: Path, data: np.ndarray, nodata: float | None = None) -> Path:
    return write_geotiff(path, data.astype(np.float32), crs=CRS, nodata=nodata)


def untrained_model(path: Path, normalization: dict) -> Path:
    torch.manual_seed(0)
    save_model(
        path,
        UNet(UNetConfig(in_bands=3, base_width=4, depth=2)),
        ModelInfo(tile_size_px=32, normalization=normalization),
    )
    return path


def probabilities(path: Path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read(1, masked=True)


def test_a_float_0_to_1_copy_of_an_8_bit_image_gives_the_starter_models_buildings(tmp_path):
    """The starter model's contrast floor is a fraction of the image's value scale (1 for float data in
    0..1): in 8-bit units it would squash a 0..1 image to a constant (an all-background mask). The sample's
    green band is faint enough for the floor to apply, so both must scale it alike."""
    with rasterio.open(SAMPLE) as sample:
        window = Window(0, 0, 256, 256)
        profile = sample.profile | {"width": 256, "height": 256, "transform": sample.window_transform(window)}
        pixels = sample.read(window=window)
    eight_bit, reflectance = tmp_path / "eight_bit.tif", tmp_path / "reflectance.tif"
    with rasterio.open(eight_bit, "w", **profile) as dataset:
        dataset.write(pixels)
    with rasterio.open(reflectance, "w", **(profile | {"dtype": "float32"})) as dataset:
        dataset.write(pixels.astype(np.float32) / 255)
    for image in (eight_bit, reflectance):
        predict_raster(
            image,
            STARTER_MODEL,
            probability_path=tmp_path / f"{image.stem}_p.tif",
            probability_dtype="float32",
            device="cpu",
            # on its own pixels: resampled, the 8-bit copy is rounded to whole values and the float one not
            processing_pixel_size_map_units="native",
        )
    from_8_bit, from_float = (probabilities(tmp_path / f"{name}_p.tif") for name in ("eight_bit", "reflectance"))
    assert (from_8_bit > 0.5).mean() > 0.01  # some of the (synthetic) sample's buildings are found ...
    assert np.abs(from_float - from_8_bit).max() < 0.02  # ... and the same in the float copy


@pytest.mark.parametrize("where", ["in its normalisation", "beside it (older files)"])
def test_fixed_statistics_apply_to_a_float_copy_as_to_its_8_bit_original(tmp_path, where):
    """A model with fixed 8-bit statistics (the default normalisation) gets the same network inputs from
    a 0..1 float copy of an image as from the 8-bit original: its numbers are scaled to each image's value
    scale, which the model states in its normalisation, or older files in their training images' value
    scales. Applied as they are, the float copy is a black image to it."""
    normalization = {"mode": "fixed", "mean": [90.0, 100.0, 80.0], "std": [40.0, 35.0, 30.0]}
    if where == "in its normalisation":
        normalization["value_scale"] = 255.0
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    net = UNet(UNetConfig(in_bands=3, base_width=4, depth=2))
    with torch.no_grad():  # spread the random head's output so a difference shows
        net.head.weight.mul_(50.0)
    value_scales = None if where == "in its normalisation" else [255.0, 255.0]
    save_model(path, net, ModelInfo(tile_size_px=32, normalization=normalization, value_scales=value_scales))
    pixels = np.random.default_rng(3).integers(0, 256, (3, 64, 64)).astype(np.uint8)
    eight_bit = write_geotiff(tmp_path / "eight_bit.tif", pixels, crs=CRS)
    reflectance = write_float(tmp_path / "reflectance.tif", pixels / 255.0)
    for image in (eight_bit, reflectance):
        predict_raster(
            image, path, probability_path=tmp_path / f"{image.stem}_p.tif", probability_dtype="float32", device="cpu"
        )
    from_8_bit, from_float = (probabilities(tmp_path / f"{name}_p.tif") for name in ("eight_bit", "reflectance"))
    assert from_8_bit.std() > 0.05
    assert np.abs(from_float - from_8_bit).max() < 1e-3


def test_nan_voids_without_a_nodata_value_are_nodata_and_leave_the_rest_as_declared_nodata_would(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.uniform(0.1, 0.6, (3, 64, 64))
    voids, declared = image.copy(), image.copy()
    voids[:, :, :20] = np.nan
    declared[:, :, :20] = -9999.0
    with rasterio.open(write_float(tmp_path / "voids.tif", voids)) as dataset:
        statistics = image_statistics(dataset, [1, 2, 3])
    np.testing.assert_allclose(statistics.mean, image[:, :, 20:].mean(axis=(1, 2)), rtol=1e-5)
    model = untrained_model(tmp_path / "model.pt", {"mode": "per_image", "min_relative_std": [0.05] * 3})
    outputs = {}
    for name, data, nodata in (("voids", voids, None), ("declared", declared, -9999.0)):
        image_path = write_float(tmp_path / f"{name}.tif", data, nodata)
        predict_raster(
            image_path, model, probability_path=tmp_path / f"{name}_p.tif", probability_dtype="float32", device="cpu"
        )
        outputs[name] = probabilities(tmp_path / f"{name}_p.tif")
    assert outputs["voids"].mask[:, :20].all() and not outputs["voids"].mask[:, 20:].any()
    np.testing.assert_array_equal(outputs["voids"].filled(-1), outputs["declared"].filled(-1))


@pytest.mark.parametrize(
    "normalization",
    [{"mode": "per_image"}, {"mode": "fixed", "mean": [0.0] * 3, "std": [1.0] * 3}],
    ids=["per_image", "fixed"],
)
def test_an_all_nan_image_is_refused_in_one_sentence_and_writes_nothing(tmp_path, normalization):
    image = write_float(tmp_path / "empty.tif", np.full((3, 40, 40), np.nan))
    model = untrained_model(tmp_path / "model.pt", normalization)
    with pytest.raises(
        InputError, match=r"'.*empty.tif' has no valid pixels in bands \[1, 2, 3\]: every pixel is nodata or NaN"
    ):
        predict_raster(image, model, mask_path=tmp_path / "mask.tif", device="cpu")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty.tif", "model.pt"]


def test_training_on_float_imagery_with_nan_voids_masks_them_instead_of_diverging(tmp_path):
    rng = np.random.default_rng(2)
    building = np.zeros((96, 96), bool)
    for row, column in ((10, 10), (40, 60), (70, 20), (60, 70)):
        building[row : row + 14, column : column + 14] = True
    image = np.where(building, rng.uniform(0.6, 0.9, (3, 96, 96)), rng.uniform(0.1, 0.4, (3, 96, 96)))
    image[:, :30, :30] = np.nan  # a void over a corner, buildings under it included
    write_float(tmp_path / "image.tif", image)
    with rasterio.open(
        tmp_path / "labels.tif",
        "w",
        driver="GTiff",
        width=96,
        height=96,
        count=1,
        dtype="uint8",
        crs=CRS,
        transform=from_origin(500000, 100, 0.5, 0.5),
    ) as dataset:
        dataset.write(building.astype(np.uint8)[None])
    pairs = ([str(tmp_path / "image.tif")], [str(tmp_path / "labels.tif")])
    config = tiny_config(pairs, tmp_path / "model.pt", building_values=[1], seed=0, from_scratch=True)
    result = train(config)
    losses = [record["train_loss"] for record in result.history if record["epoch"] > 0]
    assert len(losses) == 2 and np.isfinite(losses).all() and min(losses) > 0
    assert (tmp_path / "model.pt").is_file()
