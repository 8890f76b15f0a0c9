"""Labels that cannot be the buildings meant (an image, a continuous raster, building values that mark
none or nearly all of the labelled pixels) are refused in one sentence by training and evaluation alike,
before any output; scores left undefined or 0 by what was scored carry the reason."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import rasterio

from model.errors import InputError
from model.evaluation.evaluate import evaluate
from model.evaluation.report import text_report
from model.io.label_checks import values_text
from model.io.rasters import Grid, LabelSource, raster_windows, sample_label_values
from model.training import sampling
from model.training.trainer import train
from tests.engine.scenes import UTM_36_TRANSFORM, write_pair
from tests.engine.test_evaluation import write_raster
from tests.engine.test_training import tiny_config

SIZE_PX = 64


def buildings() -> np.ndarray:
    """(64, 64) bool: four 12 px square buildings, 14 % of the scene."""
    building = np.zeros((SIZE_PX, SIZE_PX), bool)
    for row, col in ((4, 4), (4, 40), (40, 8), (36, 44)):
        building[row : row + 12, col : col + 12] = True
    return building


def write_polygons(path: Path, wkts: tuple[str, ...] = ()) -> str:
    """A GeoPackage of these polygons (none: an empty building layer) in the scenes' CRS."""
    from osgeo import ogr, osr

    reference = osr.SpatialReference()
    reference.ImportFromEPSG(32636)
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = source.CreateLayer("buildings", reference, ogr.wkbPolygon)
    for wkt in wkts:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        layer.CreateFeature(feature)
    source = None  # closing writes the file
    return str(path)


@pytest.fixture
def scene(tmp_path: Path) -> tuple[str, str]:
    """(image, mask predicting its buildings exactly) on one grid."""
    image, _ = write_pair(tmp_path, "scene", np.where(buildings(), 2, 1).astype(np.uint8))
    return image, write_raster(tmp_path / "mask.tif", buildings().astype(np.uint8), nodata=255, kind="mask")


def refusals(tmp_path: Path, scene: tuple[str, str], labels: str, building_values: list[int]) -> list[str]:
    """What training and evaluation say of these labels; neither may leave an output behind."""
    image, mask = scene
    messages = []
    outputs = Path(tempfile.mkdtemp(dir=tmp_path))  # empty, whatever ran before in this test
    with pytest.raises(InputError, match="label layer") as training:
        train(tiny_config(([image], [labels]), outputs / "model.pt", building_values=building_values))
    messages.append(str(training.value))
    with pytest.raises(InputError, match="label layer") as evaluation:
        evaluate(
            mask,
            labels,
            building_values,
            error_map_path=outputs / "errors.tif",
            report_html_path=outputs / "report.html",
            report_json_path=outputs / "report.json",
        )
    messages.append(str(evaluation.value))
    assert list(outputs.iterdir()) == []
    return messages


def test_an_image_picked_as_labels_is_refused_as_an_image(tmp_path, scene) -> None:
    image, _ = scene
    said = (
        f"The label layer '{image}' has 3 bands: it looks like an image, not a label layer. Pick the class raster "
        "(one band of class values) or the building polygons that go with the image."
    )
    assert refusals(tmp_path, scene, image, [2]) == [said, said]


@pytest.mark.parametrize(
    "values, said",
    [
        (  # a probability raster
            np.linspace(0.0, 1.0, SIZE_PX * SIZE_PX, dtype=np.float32).reshape(SIZE_PX, SIZE_PX),
            "holds continuous values (0 to 1, not whole numbers), not classes: pick a class raster with one whole "
            "number per class (e.g. 0 background, 1 building) or building polygons.",
        ),
        (  # a DEM in whole metres: integers, but far more of them than any class raster has
            (1200 + np.arange(SIZE_PX * SIZE_PX) % 300).astype(np.int16).reshape(SIZE_PX, SIZE_PX),
            "holds more than 64 different values (from 1200 to 1499): these are continuous values (a DEM, a "
            "probability raster or an image band), not classes: pick a class raster",
        ),
    ],
    ids=["probability", "dem"],
)
def test_continuous_labels_are_refused_as_not_classes(tmp_path, scene, values, said) -> None:
    labels = write_raster(tmp_path / "continuous.tif", values)
    for message in refusals(tmp_path, scene, labels, [2]):
        assert message.startswith(f"The label layer '{labels}' {said}")


def test_a_building_value_the_labels_do_not_hold_is_refused_naming_what_they_hold(tmp_path, scene) -> None:
    labels = write_raster(tmp_path / "binary.tif", buildings().astype(np.uint8))
    said = (
        f"The label layer '{labels}' holds 0 and 1; building value 2 is not among them: set the building values "
        "to the classes that mark buildings (1 for 0/1 labels)."
    )
    assert refusals(tmp_path, scene, labels, [2]) == [said, said]


def test_many_classes_are_summarised_as_a_range_never_listed(tmp_path, scene) -> None:
    labels = write_raster(
        tmp_path / "classes.tif", (np.arange(SIZE_PX * SIZE_PX) % 40).astype(np.uint8).reshape(64, 64)
    )
    said = (
        f"The label layer '{labels}' holds 40 values from 0 to 39; none of the building values 77 and 78 is among "
        "them: set the building values to the classes that mark buildings."
    )
    assert refusals(tmp_path, scene, labels, [77, 78]) == [said, said]
    assert [values_text(values) for values in ([3], [0, 1], [0, 1, 2, 5])] == ["only 3", "0 and 1", "0, 1, 2 and 5"]


def test_the_background_picked_as_building_value_is_refused_on_labelled_pixels_only(tmp_path, scene) -> None:
    one_building = np.zeros((SIZE_PX, SIZE_PX), np.uint8)
    one_building[4:16, 4:16] = 1
    labels = write_raster(tmp_path / "binary.tif", one_building)
    said = (
        f"The label layer '{labels}' holds 0 and 1, and building value 0 covers 96.5 % of its "
        "labelled pixels: that is the background, not buildings; set the building values to the classes that "
        "mark buildings (1 for 0/1 labels)."
    )
    assert refusals(tmp_path, scene, labels, [0]) == [said, said]

    # buildings on 46 % of the grid but 92 % of its labelled half: nodata pixels never count
    dense = np.full((SIZE_PX, SIZE_PX), 255, np.uint8)
    dense[:, :32] = 0
    dense[:, :32][np.arange(SIZE_PX * 32).reshape(SIZE_PX, 32) % 25 >= 2] = 1
    nodata_labels = write_raster(tmp_path / "dense.tif", dense, nodata=255)
    for message in refusals(tmp_path, scene, nodata_labels, [1]):
        assert "building value 1 covers 92.0 % of its labelled pixels" in message


def test_values_are_counted_over_every_strip_of_the_labels(tmp_path, scene, monkeypatch) -> None:
    """Raw values from all the strips read, not the last one's: here the buildings lie in the first."""
    image, _ = scene
    classes = np.ones((SIZE_PX, SIZE_PX), np.uint8)
    classes[2:10, 2:10] = 2
    classes[40:, :] = 3
    labels = write_raster(tmp_path / "strips.tif", classes)
    monkeypatch.setattr(sampling, "STRIP_ROWS", 16)
    scene_read = sampling.load_scene(image, labels, [2], [1, 2, 3], 32)
    assert int((scene_read.label == 1).sum()) == 64
    with rasterio.open(image) as dataset, LabelSource(labels, [2], Grid.of(dataset)) as source:
        for window in raster_windows(SIZE_PX, SIZE_PX, 16):
            source.read(window)
        assert source.values is not None
        assert source.values.counts == dict(zip(*(part.tolist() for part in np.unique(classes, return_counts=True))))


def test_polygon_labels_skip_the_value_checks_but_must_hold_a_building(tmp_path, scene) -> None:
    image, _ = scene
    empty = write_polygons(tmp_path / "no_buildings.gpkg")
    with pytest.raises(InputError, match=re.escape(f"The polygon layer '{empty}' has no building polygon over")):
        sampling.load_scene(image, empty, [2], [1, 2, 3], 32)


def test_labels_whose_buildings_lie_only_where_the_image_has_no_data_are_refused(tmp_path) -> None:
    image = np.full((3, SIZE_PX, SIZE_PX), 90, np.uint8)
    image[:, buildings()] = 0  # the image's nodata
    image_path = write_raster(tmp_path / "holes.tif", image, nodata=0)
    labels = write_raster(tmp_path / "labels.tif", np.where(buildings(), 2, 1).astype(np.uint8))
    with pytest.raises(
        InputError,
        match=re.escape(f"The label layer '{labels}' marks buildings only where the image '{image_path}' has no data"),
    ):
        sampling.load_scene(image_path, labels, [2], [1, 2, 3], 32)


def test_scores_left_undefined_or_0_say_why_in_the_result_and_both_reports(tmp_path, scene) -> None:
    _, mask = scene
    labels = write_raster(tmp_path / "labels.tif", np.where(buildings(), 2, 1).astype(np.uint8))
    nothing = write_raster(tmp_path / "nothing.tif", np.zeros((SIZE_PX, SIZE_PX), np.uint8), nodata=255, kind="mask")
    report_html, report_json = tmp_path / "report.html", tmp_path / "report.json"
    result = evaluate(nothing, labels, [2], report_html_path=report_html, report_json_path=report_json)
    said = (
        "The prediction marks no building pixel among the 4,096 pixels scored: precision, object precision and "
        "the mean IoU of matched buildings are undefined (n/a) and recall, F1, IoU, kappa, object recall and "
        "object F1 are 0; check the prediction's threshold and that it is the layer meant."
    )
    assert result.warnings == [said]
    data = json.loads(report_json.read_text())
    assert data["warnings"] == [said] and data["pixel_scores"]["precision"] is None
    assert said.replace("'", "&#x27;") in report_html.read_text()
    assert text_report(data).endswith(f"Warning: {said}")

    no_buildings = write_polygons(tmp_path / "no_buildings.gpkg")
    assert evaluate(mask, no_buildings, object_scores=False).warnings == [
        "The labels mark no building pixel among the 4,096 pixels scored, so every building pixel predicted is a "
        "false positive: recall is undefined (n/a) and precision, F1, IoU and kappa are 0; check that the labels "
        "cover the area scored (the prediction's extent and the area of interest)."
    ]
    assert evaluate(nothing, no_buildings, object_scores=False).warnings == [
        "Neither the labels nor the prediction mark a building pixel among the 4,096 pixels scored: precision, "
        "recall, F1, IoU, kappa and mean IoU are undefined (n/a); check the building values and that both layers "
        "cover buildings in the area scored."
    ]
    shifted = write_raster(
        tmp_path / "shifted.tif", np.roll(buildings(), 8, axis=1).astype(np.uint8), nodata=255, kind="mask"
    )
    assert evaluate(shifted, labels, [2]).warnings == [
        "No predicted building matches a true one at IoU >= 0.5: the mean IoU of matched buildings is undefined "
        "(n/a) and object precision, object recall and object F1 are 0."
    ]
    assert evaluate(mask, labels, [2], min_object_area_px=1000).warnings == [
        "No building object is left to match (0 predicted, 0 true): object precision, object recall, object F1 "
        "and the mean IoU of matched buildings are undefined (n/a); check the minimum object area."
    ]
    everywhere = write_raster(
        tmp_path / "everywhere.tif", np.ones((SIZE_PX, SIZE_PX), np.uint8), nodata=255, kind="mask"
    )
    left, top = UTM_36_TRANSFORM * (0, 0)
    right, bottom = UTM_36_TRANSFORM * (SIZE_PX, SIZE_PX)
    whole_scene = write_polygons(
        tmp_path / "one_roof.gpkg",
        (f"POLYGON(({left} {top},{right} {top},{right} {bottom},{left} {bottom},{left} {top}))",),
    )
    assert evaluate(everywhere, whole_scene).warnings == [
        "All 4,096 pixels scored are building in both layers: kappa, background IoU and mean IoU are undefined "
        "(n/a); score an area that holds background too."
    ]
    assert evaluate(mask, labels, [2]).warnings == []


def test_a_sample_of_a_large_label_raster_says_what_it_holds(tmp_path) -> None:
    binary = np.kron(buildings(), np.ones((40, 40), bool)).astype(np.uint8)  # 2560 px square
    binary[:, -40:] = 255
    path = write_raster(tmp_path / "large.tif", binary, nodata=255)
    values = sample_label_values(path, "The label layer 'large'", max_px=10_000)
    assert values.labelled_px <= 10_000 and values.problems([1]) == []
    assert values.summary() == "The label layer 'large' holds 0 and 1 (255 = no data)."
    assert values.binary_building_values([2]) == [1] and values.binary_building_values([1]) is None
    with pytest.raises(InputError, match=re.escape("The label layer 'an image' has 3 bands")):
        sample_label_values(
            write_raster(tmp_path / "rgb.tif", np.zeros((3, 8, 8), np.uint8)), "The label layer 'an image'"
        )


def test_a_label_raster_damaged_between_its_corners_is_one_sentence(tmp_path) -> None:
    """The dock samples a ticked raster inside a Qt slot: a broken block must be a sentence, not a traceback."""
    from osgeo import gdal

    classes = np.random.default_rng(0).integers(0, 3, (256, 256), dtype=np.uint8)
    tiles = dict(tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    path = write_raster(tmp_path / "damaged.tif", classes, **tiles)
    written = gdal.Open(str(path))  # a block inside: open_raster reads only the corners' blocks
    block = [int(written.GetRasterBand(1).GetMetadataItem(f"BLOCK_{item}_1_1", "TIFF")) for item in ("OFFSET", "SIZE")]
    written = None  # closed before the file is changed
    offset, size = block
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\xff" * size)
    with pytest.raises(InputError, match=re.escape("The label layer 'damaged' is damaged: its pixels cannot be read")):
        sample_label_values(path, "The label layer 'damaged'")
