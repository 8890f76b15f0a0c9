"""Wrong labels reach the user as one sentence: through train and evaluate in Processing (the error the
dialog shows, before any output) and in the dock as soon as a label raster is ticked; scores evaluation
cannot define stay numeric and come with the reason in the log and an output."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import rasterio
from qgis.core import QgsProcessingException

from .conftest import SIZE_PX, KeptMessages, write_raster
from .test_dock import add_raster, dock  # noqa: F401  (dock is a fixture)

pytestmark = pytest.mark.usefixtures("plugin")
TINY_TRAINING = {
    "EPOCHS": 1,
    "PATCHES_PER_EPOCH": 8,
    "BATCH_SIZE": 4,
    "BASE_WIDTH": 4,
    "TILE_SIZE": 32,
    "DEVICE": "cpu",
}


def run(algorithm_id: str, parameters: dict, feedback: KeptMessages | None = None) -> dict:
    import processing

    return processing.run(f"unet_buildings:{algorithm_id}", parameters, feedback=feedback or KeptMessages())


def image_as_labels(path) -> str:
    return (
        f"The label layer '{path}' has 3 bands: it looks like an image, not a label layer. Pick the class raster "
        "(one band of class values) or the building polygons that go with the image."
    )


@pytest.fixture
def binary_labels(scene):
    """The scene's buildings as 0/1 labels (what many label sets hold), for building value 2 to miss."""
    with rasterio.open(scene.mask) as mask:
        building = mask.read(1) == 1
    return write_raster(scene.folder / "binary_labels.tif", building.astype(np.uint8)[None])


def not_among(path) -> str:
    return (
        f"The label layer '{path}' holds 0 and 1; building value 2 is not among them: set the building values to "
        "the classes that mark buildings (1 for 0/1 labels)."
    )


def test_training_with_the_image_as_labels_stops_before_training_with_the_reason(scene, tmp_path) -> None:
    parameters = {"IMAGES": [str(scene.image)], "OUTPUT_MODEL": str(tmp_path / "model.pt"), **TINY_TRAINING}
    with pytest.raises(QgsProcessingException, match=re.escape(image_as_labels(scene.image))):
        run("train", {**parameters, "LABELS": [str(scene.image)], "BUILDING_VALUES": "2"})
    assert not (tmp_path / "model.pt").exists()


def test_training_with_a_building_value_the_labels_lack_says_what_they_hold(scene, binary_labels, tmp_path) -> None:
    parameters = {"IMAGES": [str(scene.image)], "OUTPUT_MODEL": str(tmp_path / "model.pt"), **TINY_TRAINING}
    with pytest.raises(QgsProcessingException, match=re.escape(not_among(binary_labels))):
        run("train", {**parameters, "LABELS": [str(binary_labels)], "BUILDING_VALUES": "2"})
    assert not (tmp_path / "model.pt").exists()


def test_evaluation_against_wrong_labels_stops_before_writing_anything(scene, binary_labels, tmp_path) -> None:
    outputs = {"OUTPUT_REPORT": str(tmp_path / "report.html"), "OUTPUT_ERROR_MAP": str(tmp_path / "errors.tif")}
    for labels, said in ((scene.image, image_as_labels(scene.image)), (binary_labels, not_among(binary_labels))):
        with pytest.raises(QgsProcessingException, match=re.escape(said)):
            run("evaluate", {"PREDICTION": str(scene.mask), "LABELS": str(labels), "BUILDING_VALUES": "2", **outputs})
    assert list(tmp_path.iterdir()) == []


def test_scores_evaluation_cannot_define_stay_numbers_and_the_log_says_why(scene, tmp_path) -> None:
    nothing = write_raster(tmp_path / "nothing.tif", np.zeros((1, SIZE_PX, SIZE_PX), np.uint8), 255, "mask")
    feedback = KeptMessages()
    results = run(
        "evaluate",
        {
            "PREDICTION": str(nothing),
            "LABELS": str(scene.labels),
            "BUILDING_VALUES": "2",
            "OUTPUT_REPORT": str(tmp_path / "report.html"),
        },
        feedback,
    )
    said = (
        f"The prediction marks no building pixel among the {SIZE_PX * SIZE_PX:,} pixels scored: precision, object "
        "precision and the mean IoU of matched buildings are undefined (n/a) and recall, F1, IoU, kappa, object "
        "recall and object F1 are 0; check the prediction's threshold and that it is the layer meant."
    )
    assert math.isnan(results["PRECISION"]) and results["IOU"] == 0.0  # numeric outputs stay numbers
    assert results["WARNINGS"] == said and feedback.warnings == [said]
    (scores,) = [line for line in feedback.lines if line.startswith("Scores: ")]
    assert "precision n/a" in scores and "nan" not in scores


def test_the_dock_says_in_one_sentence_what_is_wrong_with_a_ticked_label_raster(dock, scene, tmp_path) -> None:  # noqa: F811
    from unet_buildings.plugin.dock.widgets import ERROR_STYLE

    dock.widgets.building_values_edit.setText("2")
    orthophoto = add_raster(scene.image, "orthophoto")
    dock.widgets.train_labels.tick([orthophoto])
    assert dock.widgets.label_values_label.text() == image_as_labels("orthophoto")
    assert dock.widgets.label_values_label.styleSheet() == ERROR_STYLE

    heights = np.linspace(1200.5, 1300.25, SIZE_PX * SIZE_PX, dtype=np.float32).reshape(1, SIZE_PX, SIZE_PX)
    dem = add_raster(write_raster(tmp_path / "dem.tif", heights), "dem")
    dock.widgets.train_labels.tick([dem])
    assert dock.widgets.label_values_label.text() == (
        "The label layer 'dem' holds continuous values (1200.5 to 1300.25, not whole numbers), not classes: pick a "
        "class raster with one whole number per class (e.g. 0 background, 1 building) or building polygons."
    )

    classes = add_raster(scene.labels, "classes")  # 1 background, 2 building
    dock.widgets.building_values_edit.setText("5")
    dock.widgets.train_labels.tick([classes])
    assert dock.widgets.label_values_label.text() == (
        "The label layer 'classes' holds 1 and 2; building value 5 is not among them: set the building values to "
        "the classes that mark buildings."
    )
    dock.widgets.building_values_edit.setText("2")
    dock.widgets.train_labels.tick([classes])
    assert dock.widgets.label_values_label.text() == "The label layer 'classes' holds 1 and 2 (255 = no data)."
    assert dock.widgets.label_values_label.styleSheet() == ""
