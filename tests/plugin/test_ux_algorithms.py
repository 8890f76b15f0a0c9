"""Issue 13 on the Processing side: help by the dialog's labels and order, an area of interest for Predict and
Extract, export for Deepness as an algorithm, vector error outputs of Evaluate, the starter model default."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import rasterio
import rasterio.warp
from qgis.core import QgsApplication, QgsProcessingException, QgsProcessingFeedback

from .conftest import BUILDINGS_PX, GROUND_M_PER_MAP_M, PIXEL_M, KeptMessages, write_raster

pytestmark = pytest.mark.usefixtures("plugin")
LEFT, TOP = 500000, 9000000  # the scene's upper-left corner (conftest)


def run(algorithm_id: str, parameters: dict, feedback: QgsProcessingFeedback | None = None) -> dict:
    import processing

    return processing.run(f"unet_buildings:{algorithm_id}", parameters, feedback=feedback or QgsProcessingFeedback())


def algorithm(algorithm_id: str):
    return QgsApplication.processingRegistry().createAlgorithmById(f"unet_buildings:{algorithm_id}")


@pytest.mark.parametrize("algorithm_id", ("extract", "train", "evaluate"))
def test_help_names_parameters_by_their_dialog_labels_in_the_dialog_order(algorithm_id: str) -> None:
    from unet_buildings.plugin.algorithms.base import dialog_order

    instance = algorithm(algorithm_id)
    text = instance.shortHelpString()
    labels = re.findall(r"<dt><b>(.*?)</b>", text)
    definitions = instance.parameterDefinitions()
    assert labels[0] == definitions[0].description()  # "Image", "Images", "Prediction (...)": not INPUT
    assert not any(label.isupper() for label in labels), labels  # no bare ids such as INPUT or MODEL
    expected = [definition.description() for definition in dialog_order(definitions)]
    assert [label.replace(" [optional]", "") for label in labels] == expected
    # the dialog's order: plain inputs, then the folded advanced ones, then the outputs
    kinds = [
        "output"
        if definition.isDestination()
        else "advanced"
        if definition.flags() & definition.Flag.FlagAdvanced
        else "input"
        for definition in dialog_order(definitions)
    ]
    assert kinds == sorted(kinds, key=["input", "advanced", "output"].index)


def test_train_help_warns_that_an_empty_model_file_is_temporary() -> None:
    text = algorithm("train").shortHelpString()
    entry = text.split("<small>(OUTPUT_MODEL)</small></dt><dd>", 1)[1].split("</dd>", 1)[0]
    assert "temporary file that QGIS deletes when it quits" in entry


def test_predict_with_an_extent_covers_only_that_area(scene, model_file, tmp_path) -> None:
    # the upper-left quarter of the 64 x 64 px scene, in the scene's CRS
    half_m = 32 * PIXEL_M
    extent = f"{LEFT},{LEFT + half_m},{TOP - half_m},{TOP} [EPSG:32736]"
    results = run(
        "predict",
        {
            "INPUT": str(scene.image),
            "MODEL": str(model_file),
            "EXTENT": extent,
            "OUTPUT_MASK": str(tmp_path / "mask.tif"),
        },
    )
    with rasterio.open(results["OUTPUT_MASK"]) as mask, rasterio.open(scene.image) as image:
        assert (mask.width, mask.height) == (32, 32)
        assert mask.transform == image.transform  # same pixel grid, same upper-left corner
        assert mask.crs == image.crs


def test_an_extent_in_another_crs_is_taken_in_the_images(scene, model_file, tmp_path) -> None:
    """The map canvas is often in another CRS than the image: an extent in degrees around the image's
    pixels [8, 24) x [8, 24) covers those pixels, not a patch of UTM metres at (longitude, latitude)."""
    xs = [LEFT + 8 * PIXEL_M, LEFT + 24 * PIXEL_M]
    ys = [TOP - 24 * PIXEL_M, TOP - 8 * PIXEL_M]
    longitudes, latitudes = rasterio.warp.transform("EPSG:32736", "EPSG:4326", xs, ys)
    extent = f"{longitudes[0]},{longitudes[1]},{latitudes[0]},{latitudes[1]} [EPSG:4326]"
    results = run(
        "predict",
        {"INPUT": str(scene.image), "MODEL": str(model_file), "EXTENT": extent, "OUTPUT_MASK": str(tmp_path / "m.tif")},
    )
    with rasterio.open(results["OUTPUT_MASK"]) as mask:
        # degrees and UTM metres do not share straight edges: a pixel more or less at each side
        assert abs(mask.width - 16) <= 2 and abs(mask.height - 16) <= 2
        assert abs(mask.transform.c - xs[0]) <= PIXEL_M and abs(mask.transform.f - ys[1]) <= PIXEL_M


def test_an_extent_gets_the_pixels_of_the_whole_image_prediction(scene, model_file, tmp_path) -> None:
    """An area of interest is a window of the image, not a cut-out: its tiles start where the whole
    image's do and it is normalised by the whole image's statistics (a cut-out changed ~3 % of the
    mask pixels of a real scene)."""
    common = {"INPUT": str(scene.image), "MODEL": str(model_file), "DEVICE": "cpu", "PIXEL_SIZE": 0}
    whole = run("predict", {**common, "OUTPUT_PROBABILITY": str(tmp_path / "whole.tif")})
    columns, rows = (21, 64), (13, 50)  # the image's pixel columns and rows [start, end)
    extent = (
        f"{LEFT + columns[0] * PIXEL_M},{LEFT + columns[1] * PIXEL_M},"
        f"{TOP - rows[1] * PIXEL_M},{TOP - rows[0] * PIXEL_M} [EPSG:32736]"
    )
    part = run("predict", {**common, "EXTENT": extent, "OUTPUT_PROBABILITY": str(tmp_path / "part.tif")})
    with rasterio.open(whole["OUTPUT_PROBABILITY"]) as dataset:
        expected = dataset.read(1)[rows[0] : rows[1], columns[0] : columns[1]]
    with rasterio.open(part["OUTPUT_PROBABILITY"]) as dataset:
        np.testing.assert_array_equal(dataset.read(1), expected)


def test_extract_refuses_an_extent_outside_the_image(scene, model_file) -> None:
    with pytest.raises(QgsProcessingException, match="does not overlap the image"):
        run(
            "extract",
            {
                "INPUT": str(scene.image),
                "MODEL": str(model_file),
                "EXTENT": f"{LEFT - 100},{LEFT - 50},{TOP - 50},{TOP} [EPSG:32736]",
                "OUTPUT": "memory:",
            },
        )


def test_export_writes_an_onnx_model_deepness_reads_without_median_filter(model_file, tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    results = run("export", {"MODEL": str(model_file), "OUTPUT": str(tmp_path / "buildings.onnx")})
    model = onnx.load(results["OUTPUT"])
    metadata = {entry.key: json.loads(entry.value) for entry in model.metadata_props}
    assert metadata["model_type"] == "Segmentor"
    assert metadata["seg_small_segment"] == 0  # else Deepness median-filters the mask (9 px)
    assert metadata["tile_size"] == 64  # twice the training tile, as our Predict runs it


def test_export_warns_about_per_image_normalisation(unet_buildings, tmp_path) -> None:
    pytest.importorskip("onnx")
    from unet_buildings.model.net.modelfile import ModelInfo, save_model
    from unet_buildings.model.net.network import UNet, UNetConfig

    path = tmp_path / "per_image.pt"
    save_model(
        path,
        UNet(UNetConfig(in_bands=3, base_width=4, depth=2)),
        ModelInfo(tile_size_px=32, normalization={"mode": "per_image", "mean": [100.0] * 3, "std": [40.0] * 3}),
    )
    feedback = KeptMessages()
    run("export", {"MODEL": str(path), "OUTPUT": str(tmp_path / "per_image.onnx")}, feedback)
    assert any("own statistics" in warning for warning in feedback.warnings)


def test_evaluate_writes_false_positive_and_missed_buildings_as_polygons(scene, tmp_path) -> None:
    """A prediction with the first building, without the second, plus a false 6 x 6 px building."""
    mask = np.zeros((64, 64), np.uint8)
    row, column, side = BUILDINGS_PX[0]
    mask[row : row + side, column : column + side] = 1
    mask[50:56, 4:10] = 1
    prediction = write_raster(tmp_path / "prediction.tif", mask[None], 255, "mask")
    results = run(
        "evaluate",
        {
            "PREDICTION": str(prediction),
            "LABELS": str(scene.labels),
            "BUILDING_VALUES": "2",
            "OUTPUT_FALSE_POSITIVES": "memory:",
            "OUTPUT_MISSED": "memory:",
        },
    )
    false_positives, missed = results["OUTPUT_FALSE_POSITIVES"], results["OUTPUT_MISSED"]  # memory layers
    assert false_positives.featureCount() == 1 and missed.featureCount() == 1
    (false_positive,) = false_positives.getFeatures()
    assert false_positive["area_m2"] == pytest.approx(36 * (PIXEL_M * GROUND_M_PER_MAP_M) ** 2)
    bounds = false_positive.geometry().boundingBox()
    assert (bounds.xMinimum(), bounds.yMaximum()) == pytest.approx((LEFT + 4 * PIXEL_M, TOP - 50 * PIXEL_M))
    (missed_building,) = missed.getFeatures()
    row, column, side = BUILDINGS_PX[1]
    bounds = missed_building.geometry().boundingBox()
    assert (bounds.xMinimum(), bounds.yMaximum()) == pytest.approx((LEFT + column * PIXEL_M, TOP - row * PIXEL_M))
    assert missed_building["area_m2"] == pytest.approx(side * side * (PIXEL_M * GROUND_M_PER_MAP_M) ** 2)
    assert missed.crs().authid() == "EPSG:32736"


def test_predict_and_extract_default_to_the_starter_model_when_it_is_shipped(
    unet_buildings, model_file, monkeypatch, tmp_path
) -> None:
    from unet_buildings.model.training import start_model

    monkeypatch.setattr(start_model, "STARTER_MODEL", tmp_path / "absent.pt")
    assert algorithm("extract").parameterDefinition("MODEL").defaultValue() in (None, "")
    monkeypatch.setattr(start_model, "STARTER_MODEL", model_file)
    for algorithm_id in ("predict", "extract", "export"):
        assert algorithm(algorithm_id).parameterDefinition("MODEL").defaultValue() == str(model_file)


def test_train_reports_a_bad_band_string_as_bands(scene, tmp_path) -> None:
    parameters = {"IMAGES": [str(scene.image)], "LABELS": [str(scene.labels)], "OUTPUT_MODEL": str(tmp_path / "m.pt")}
    with pytest.raises(QgsProcessingException, match="^Bands must be whole band numbers .* got '1,x'"):
        run("train", {**parameters, "BANDS": "1,x", "BUILDING_VALUES": "2"})
    with pytest.raises(QgsProcessingException, match="^Building class values must be whole numbers .* got 'two'"):
        run("train", {**parameters, "BANDS": "1,2,3", "BUILDING_VALUES": "two"})
    assert not (tmp_path / "m.pt").exists()
