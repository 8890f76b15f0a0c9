"""A part of an image (an area of interest, or a shard's rows) is predicted exactly as in a prediction
of the whole image: the same tiles, blend weights and normalisation reach every pixel."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from model.__main__ import main
from model.errors import InputError
from model.net.modelfile import load_model
from model.prediction.predict import extent_window, predict_raster
from model.prediction.shards import assemble, predict_shard
from tests.engine.test_inference import make_model, noise, read, write_image
from tests.engine.test_shards import image_with_nodata  # nodata across the windows' edges

FLOAT_ULPS = 1e-6  # a few float32 units in the last place of a probability
OPTIONS = dict(probability_dtype="float32", batch_size=3, device="cpu", precision="float32", panel_width_px=96)
# the image has 1 m pixels; a model trained on 2 m pixels makes the prediction resample
MODEL_PIXEL_M = {"own pixels": None, "resampled": [2.0, 2.0]}


@pytest.mark.parametrize("kind", MODEL_PIXEL_M)
def test_a_window_is_predicted_as_in_the_whole_image(tmp_path, kind):
    """Before windows, an area of interest was cut out as its own raster: its tiles started at its
    corner and it was normalised by its own statistics, so ~3 % of the mask pixels of a real scene
    changed with the area chosen."""
    image = image_with_nodata(tmp_path)
    model = load_model(make_model(tmp_path / "m.pt", pixel_size=MODEL_PIXEL_M[kind]))
    whole = predict_raster(image, model, probability_path=tmp_path / "whole.tif", **OPTIONS)
    assert whole.resampled == (kind == "resampled")
    expected = read(tmp_path / "whole.tif")
    # odd and even offsets: tile, panel and processing-pixel edges fall anywhere in the window
    for window in (Window(37, 101, 150, 203), Window(38, 100, 151, 200), Window(0, 0, 230, 77), Window(229, 409, 1, 1)):
        part = predict_raster(image, model, probability_path=tmp_path / "part.tif", window=window, **OPTIONS)
        with rasterio.open(part.probability_path) as dataset:
            assert dataset.transform == rasterio.windows.transform(window, whole_transform(image))
            values = dataset.read(1)
        np.testing.assert_allclose(values, expected[window.toslices()], rtol=0, atol=FLOAT_ULPS)
        assert part.tile_count <= whole.tile_count


def whole_transform(image):
    with rasterio.open(image) as dataset:
        return dataset.transform


def test_resampled_shards_assembled_equal_the_unsharded_prediction(tmp_path):
    image = image_with_nodata(tmp_path)
    model = load_model(make_model(tmp_path / "m.pt", pixel_size=[2.0, 2.0]))
    predict_raster(image, model, probability_path=tmp_path / "whole.tif", **OPTIONS)
    for index in (1, 2, 3):
        predict_shard(image, model, index, 3, probability_path=tmp_path / "shard.tif", **OPTIONS)
    np.testing.assert_allclose(
        read(assemble(tmp_path / "shard.tif", 3)), read(tmp_path / "whole.tif"), rtol=0, atol=FLOAT_ULPS
    )


def test_the_command_line_predicts_an_extent_as_in_the_whole_image(tmp_path):
    image = image_with_nodata(tmp_path)
    model = make_model(tmp_path / "m.pt")
    common = [str(image), "--model", str(model), "--device", "cpu"]
    assert main(["predict", *common, "--probability", str(tmp_path / "whole.tif")]) == 0
    # the image's corner is (1000, 2000) with 1 m pixels: columns 37 to 187, rows 101 to 304
    extent = ["1037", str(2000 - 304), "1187", str(2000 - 101)]
    assert main(["predict", *common, "--probability", str(tmp_path / "part.tif"), "--extent", *extent]) == 0
    np.testing.assert_array_equal(read(tmp_path / "part.tif"), read(tmp_path / "whole.tif")[101:304, 37:187])
    assert main(["predict", *common, "--mask", str(tmp_path / "m.tif"), "--extent", *extent, "--shard", "1/2"]) == 2


def test_an_extent_becomes_the_whole_pixels_it_touches(tmp_path):
    image = write_image(tmp_path / "image.tif", noise((3, 40, 50)), origin=(1000.0, 2000.0), pixel=(0.5, 0.5))
    # on pixel edges: exactly those pixels, no sliver column or row added
    assert extent_window(image, (1001.0, 1990.0, 1010.0, 1999.0)) == Window(2, 2, 18, 18)
    # inside pixels: outward to the pixels it touches
    assert extent_window(image, (1001.2, 1989.9, 1009.7, 1998.6)) == Window(2, 2, 18, 19)
    # partly outside the image: clipped to it
    assert extent_window(image, (990.0, 1900.0, 1005.0, 1999.0)) == Window(0, 2, 10, 38)


def test_an_extent_beside_the_image_or_a_window_outside_it_is_refused(tmp_path):
    image = write_image(tmp_path / "image.tif", noise((3, 40, 50)), origin=(1000.0, 2000.0))
    with pytest.raises(InputError, match="does not overlap the image"):
        extent_window(image, (2000.0, 1000.0, 2100.0, 1100.0))
    model = make_model(tmp_path / "m.pt")
    for window in (Window(45, 0, 10, 10), Window(0, 0, 0, 10), Window(0.5, 0, 10, 10)):
        with pytest.raises(InputError, match="not whole pixels inside the image"):
            predict_raster(image, model, probability_path=tmp_path / "p.tif", window=window, device="cpu")
