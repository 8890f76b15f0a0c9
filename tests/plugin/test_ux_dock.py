"""Issue 13 in the dock, as a QGIS user lives with it: nothing lost (real output folders, new names), nothing
hidden (results on top, readable errors, nothing stale), and the issue's polish items. Real QGIS, real runs."""

from __future__ import annotations

import re

import numpy as np
import pytest
import rasterio
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsLayerTreeGroup,
    QgsLayerTreeRegistryBridge,
    QgsProcessingContext,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsSettings,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtWidgets import QGroupBox, QTextBrowser

from .conftest import PIXEL_M, make_scene, shown_dialogs, write_raster
from .test_dock import wait_for

LEFT, TOP = 500000, 9000000


@pytest.fixture
def fresh_dock(plugin, qgis_new_project, qgis_iface):
    """A dock as a new user first sees it: no remembered settings, an unsaved project."""
    from unet_buildings.plugin.dock.dock_widget import BuildingsDock
    from unet_buildings.plugin.dock.widgets import SETTINGS_GROUP

    QgsSettings().remove(SETTINGS_GROUP.rstrip("/"))
    dock = BuildingsDock(qgis_iface)
    yield dock
    if dock.current_run is not None:
        dock.cancel()
        wait_for(dock)
    dock.deleteLater()
    QgsSettings().remove(SETTINGS_GROUP.rstrip("/"))
    QgsProject.instance().clear()


def add_raster(path, name: str) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), name)
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def predict(dock, image, model_file) -> dict:
    dock.widgets.image_combo.setLayer(image)
    dock.widgets.model_widget.setFilePath(str(model_file))
    dock.widgets.predict_button.click()
    parameters = dict(dock.current_run.parameters)
    wait_for(dock)
    return parameters


# -- 2. the results never land in a temporary folder silently ---------------------------------------
def test_outputs_go_beside_the_image_when_no_folder_is_chosen(fresh_dock, model_file, tmp_path) -> None:
    scene = make_scene(tmp_path / "imagery")
    image = add_raster(scene.image, "scene")
    assert fresh_dock.widgets.output_widget.filePath() == ""
    parameters = predict(fresh_dock, image, model_file)
    assert parameters["OUTPUT"] == str(tmp_path / "imagery" / "scene_buildings.gpkg")
    assert (tmp_path / "imagery" / "scene_mask.tif").is_file()


def test_outputs_go_beside_the_project_file(fresh_dock, model_file, tmp_path) -> None:
    scene = make_scene(tmp_path / "imagery")
    (tmp_path / "project").mkdir()
    QgsProject.instance().setFileName(str(tmp_path / "project" / "city.qgz"))
    parameters = predict(fresh_dock, add_raster(scene.image, "scene"), model_file)
    assert parameters["OUTPUT_MASK"] == str(tmp_path / "project" / "scene_mask.tif")


def test_the_chosen_output_folder_is_remembered(fresh_dock, qgis_iface, tmp_path) -> None:
    from unet_buildings.plugin.dock.dock_widget import BuildingsDock

    fresh_dock.widgets.output_widget.setFilePath(str(tmp_path))
    again = BuildingsDock(qgis_iface)
    try:
        assert again.widgets.output_widget.filePath() == str(tmp_path)
    finally:
        again.deleteLater()


# -- 3. no silent overwrite ------------------------------------------------------------------------
def test_predicting_again_writes_new_files_and_keeps_the_loaded_layers(fresh_dock, scene, model_file, tmp_path) -> None:
    fresh_dock.widgets.output_widget.setFilePath(str(tmp_path))
    image = add_raster(scene.image, "scene")
    first = predict(fresh_dock, image, model_file)
    second = predict(fresh_dock, image, model_file)
    assert second["OUTPUT_MASK"] == str(tmp_path / "scene_mask_2.tif")
    assert second["OUTPUT"] == str(tmp_path / "scene_buildings_2.gpkg")
    assert {first[key] for key in ("OUTPUT", "OUTPUT_MASK", "OUTPUT_PROBABILITY")}.isdisjoint(second.values())
    layers = QgsProject.instance().mapLayers().values()
    # the runs are told apart in the panel: the second run's group and layers carry its number
    masks = {layer.name(): layer for layer in layers if layer.name().startswith("scene building mask")}
    assert sorted(masks) == ["scene building mask", "scene building mask 2"]
    assert all(layer.isValid() for layer in masks.values())
    assert [masks[name].source() for name in sorted(masks)] == [first["OUTPUT_MASK"], second["OUTPUT_MASK"]]
    groups = [node.name() for node in QgsProject.instance().layerTreeRoot().children()]
    assert groups[:2] == ["scene buildings 2", "scene buildings"]


def test_training_again_picks_a_new_model_name(fresh_dock, scene, tmp_path) -> None:
    fresh_dock.widgets.output_widget.setFilePath(str(tmp_path))
    (tmp_path / "scene_model.pt").write_bytes(b"an earlier model")
    fresh_dock.widgets.train_images.tick([add_raster(scene.image, "scene")])
    fresh_dock.widgets.train_labels.tick([add_raster(scene.labels, "scene labels")])
    fresh_dock.widgets.train_button.click()
    assert fresh_dock.current_run.parameters["OUTPUT_MODEL"] == str(tmp_path / "scene_model_2.pt")
    fresh_dock.widgets.cancel_button.click()
    wait_for(fresh_dock)
    assert (tmp_path / "scene_model.pt").read_bytes() == b"an earlier model"


# -- 4. results on top of the layer tree, in a group per run -----------------------------------------
def test_results_go_on_top_of_the_layer_tree_whatever_layer_is_selected(
    fresh_dock, scene, model_file, tmp_path
) -> None:
    project = QgsProject.instance()
    fresh_dock.widgets.output_widget.setFilePath(str(tmp_path))
    image = add_raster(scene.image, "scene")
    add_raster(scene.labels, "labels")
    root = project.layerTreeRoot()
    # as when the user has selected the bottom layer (the image): QGIS would insert new layers below it
    project.layerTreeRegistryBridge().setLayerInsertionPoint(
        QgsLayerTreeRegistryBridge.InsertionPoint(root, len(root.children()))
    )
    predict(fresh_dock, image, model_file)
    top = root.children()[0]
    assert isinstance(top, QgsLayerTreeGroup) and top.name() == "scene buildings"
    assert [node.name() for node in top.children()] == [
        "scene buildings",
        "scene building mask",
        "scene building probability",
    ]


# -- 5. errors in one readable line; nothing stale -------------------------------------------------
@pytest.fixture
def foreign_model(tmp_path):
    import argparse

    import torch

    path = tmp_path / "someone_elses_checkpoint_with_a_long_name_that_does_not_fit_a_narrow_dock.pt"
    torch.save({"args": argparse.Namespace(lr=0.1)}, path)
    return path


def test_a_foreign_model_file_gives_one_readable_line(fresh_dock, scene, foreign_model, qgis_iface) -> None:
    fresh_dock.setFloating(True)
    fresh_dock.resize(350, 900)
    fresh_dock.show()
    qgis_iface.messageBar().clear_messages()
    predict(fresh_dock, add_raster(scene.image, "scene"), foreign_model)
    QCoreApplication.processEvents()
    shown = fresh_dock.widgets.status_label.text().replace("\u200b", "")
    (message,) = qgis_iface.messageBar().get_messages(2)
    for text in (shown, message):
        assert "is not a model file this plugin can" in text and "Pick a .pt file" in text
        assert "\x1b" not in text and "\n" not in text and "weights_only" not in text
        assert len(text) <= 500
    assert fresh_dock.widget().horizontalScrollBar().maximum() == 0  # the dock did not grow sideways
    fresh_dock.setFloating(False)


def test_torchs_own_message_becomes_one_plain_line(unet_buildings, foreign_model) -> None:
    """Whatever an engine message quotes from torch (escape codes, several lines, weights_only=False advice)."""
    import torch
    from unet_buildings.plugin.dock.dock_widget import readable

    with pytest.raises(Exception, match="weights_only") as caught:  # torch's own class for it varies
        torch.load(foreign_model, weights_only=True)
    quoted = (
        f"'{foreign_model}' is not a model file this plugin can read safely ({caught.value}). "
        "Pick a .pt file written by the U-Net Building Extractor."
    )
    assert "\x1b[" in quoted and "weights_only" in quoted  # what torch says today
    line = readable(quoted)
    assert line == (
        f"'{foreign_model}' is not a model file this plugin can read safely. "
        "Pick a .pt file written by the U-Net Building Extractor."
    )


def test_a_new_run_or_new_layers_clear_what_is_stale(fresh_dock, scene, model_file, foreign_model, tmp_path) -> None:
    fresh_dock.widgets.output_widget.setFilePath(str(tmp_path))
    image = add_raster(scene.image, "scene")
    labels = add_raster(scene.labels, "labels")
    predict(fresh_dock, image, model_file)
    fresh_dock.widgets.reference_combo.setLayer(labels)
    fresh_dock.widgets.building_values_edit.setText("2")
    fresh_dock.widgets.evaluate_button.click()
    wait_for(fresh_dock)
    shown = fresh_dock.widgets.scores_label.text()  # pixel and object scores, as the report has them
    assert re.search(
        r"Pixels: IoU \d\.\d{3}, F1 .*<br>Buildings \(one-to-one matches, every blob of the mask\): F1 \d\.\d{3}", shown
    ), shown
    assert (
        fresh_dock.widgets.matrix_table.item(0, 0) is not None
        and "Evaluate buildings against labels: " in fresh_dock.widgets.time_label.text()
    )
    # the report opens in a window of QGIS itself: no web browser needed
    report = re.search(r'<a href="([^"]+)">Show the report</a>', shown)
    assert report, shown
    fresh_dock.widgets.scores_label.linkActivated.emit(report.group(1))
    windows = shown_dialogs()
    assert len(windows) == 1 and windows[0].windowTitle() == "Building extraction accuracy"
    text = windows[0].findChild(QTextBrowser).toPlainText()
    assert "Confusion matrix (pixels)" in text and "Building IoU" in text, text[:500]
    windows[0].close()
    fresh_dock.widgets.model_widget.setFilePath(str(foreign_model))
    fresh_dock.widgets.predict_button.click()  # a new run: the old matrix, scores and timing go at once
    assert fresh_dock.widgets.matrix_table.item(0, 0) is None and fresh_dock.widgets.scores_label.text() == ""
    assert "Evaluate buildings against labels" not in fresh_dock.widgets.time_label.text()
    wait_for(fresh_dock)
    assert "Pick a .pt file" in fresh_dock.widgets.status_label.text().replace("\u200b", "")
    fresh_dock.widgets.image_combo.setLayer(labels)  # the user changes the input: the error is no longer about it
    assert fresh_dock.widgets.status_label.text() == "Ready." and fresh_dock.widgets.time_label.text() == ""


# -- 6. polish -------------------------------------------------------------------------------------
def test_train_does_not_scroll_the_dock(fresh_dock, scene) -> None:
    fresh_dock.setFloating(True)
    fresh_dock.resize(350, 420)
    fresh_dock.show()
    fresh_dock.activateWindow()
    fresh_dock.widgets.train_images.tick([add_raster(scene.image, "scene")])
    fresh_dock.widgets.train_labels.tick([add_raster(scene.labels, "scene labels")])
    scroll = fresh_dock.widget()
    scroll.ensureWidgetVisible(fresh_dock.widgets.train_button)
    QCoreApplication.processEvents()
    before = scroll.verticalScrollBar().value()
    fresh_dock.widgets.train_button.setFocus()
    QCoreApplication.processEvents()
    assert fresh_dock.widgets.train_button.hasFocus()
    fresh_dock.widgets.train_button.click()
    QCoreApplication.processEvents()
    assert scroll.verticalScrollBar().value() == before
    fresh_dock.widgets.cancel_button.click()
    wait_for(fresh_dock)
    fresh_dock.setFloating(False)


def test_the_predict_image_sits_under_a_prediction_heading(fresh_dock) -> None:
    parent = fresh_dock.widgets.image_combo.parentWidget()
    assert isinstance(parent, QGroupBox) and parent.title() == "Prediction"


def test_image_pickers_leave_out_the_plugins_own_outputs(fresh_dock, scene, model_file, tmp_path) -> None:
    fresh_dock.widgets.output_widget.setFilePath(str(tmp_path))
    predict(fresh_dock, add_raster(scene.image, "scene"), model_file)
    add_raster(scene.mask, "a mask loaded from disk")  # tagged by the engine as a mask
    images = [
        fresh_dock.widgets.train_images.itemText(index) for index in range(fresh_dock.widgets.train_images.count())
    ]
    labels = [
        fresh_dock.widgets.train_labels.itemText(index) for index in range(fresh_dock.widgets.train_labels.count())
    ]
    assert images == ["scene"] and labels == ["scene"]
    combo = fresh_dock.widgets.image_combo
    assert [combo.itemText(index) for index in range(combo.count())] == ["scene"]  # Predict's picker too


def test_building_values_say_what_the_labels_hold_and_follow_0_1_labels(fresh_dock, qgis_iface, tmp_path) -> None:
    from unet_buildings.plugin.dock.dock_widget import BuildingsDock

    binary = np.zeros((1, 64, 64), np.uint8)
    binary[0, 8:24, 8:24] = 1
    binary[0, :, 60:] = 255
    layer = add_raster(write_raster(tmp_path / "binary_labels.tif", binary, 255), "binary labels")
    fresh_dock.widgets.building_values_edit.setText("2")
    fresh_dock.widgets.train_labels.tick([layer])
    assert fresh_dock.widgets.building_values_edit.text() == "1"
    assert "holds 0 and 1 (255 = no data). Building values set to 1." in fresh_dock.widgets.label_values_label.text()

    fresh_dock.widgets.building_values_edit.setText("4")
    fresh_dock.widgets.building_values_edit.editingFinished.emit()
    again = BuildingsDock(qgis_iface)
    try:
        assert again.widgets.building_values_edit.text() == "4"  # remembered
    finally:
        again.deleteLater()


def test_the_new_users_building_value_is_1(fresh_dock) -> None:
    assert fresh_dock.widgets.building_values_edit.text() == "1"


def test_dock_toolbox_and_command_line_start_from_the_same_defaults(fresh_dock) -> None:
    """One image, the same buildings from each: building value, minimum area and simplification agree."""
    from unet_buildings.model.__main__ import build_parser

    registry = QgsApplication.processingRegistry()
    dock = fresh_dock.widgets
    for algorithm_id in ("train", "evaluate"):
        definition = registry.algorithmById(f"unet_buildings:{algorithm_id}").parameterDefinition("BUILDING_VALUES")
        assert definition.defaultValue() == dock.building_values_edit.text() == "1"
    for algorithm_id in ("extract", "vectorize"):
        algorithm = registry.algorithmById(f"unet_buildings:{algorithm_id}")
        assert algorithm.parameterDefinition("MIN_AREA").defaultValue() == dock.min_area_spin.value() == 2.0
        assert algorithm.parameterDefinition("SIMPLIFY").defaultValue() == dock.simplify_spin.value() == 0.2
    parse = build_parser().parse_args
    trained = parse(["train", "--images", "i.tif", "--labels", "l.tif", "--output", "m.pt"])
    assert trained.building_values == parse(["evaluate", "p.tif", "--labels", "l.tif"]).building_values == "1"
    for command in (["extract", "i.tif", "--model", "m.pt"], ["vectorize", "mask.tif"]):
        given = parse([*command, "--output", "b.gpkg"])
        assert (given.min_area, given.simplify) == (2.0, 0.2)


def test_matrix_headers_are_not_clipped_in_a_narrow_dock(fresh_dock) -> None:
    fresh_dock.setFloating(True)
    fresh_dock.resize(350, 900)
    fresh_dock.show()
    QCoreApplication.processEvents()
    table = fresh_dock.widgets.matrix_table
    header = table.horizontalHeader()
    metrics = header.fontMetrics()
    for column in range(table.columnCount()):
        text = table.horizontalHeaderItem(column).text()
        widest = max(metrics.horizontalAdvance(line) for line in text.split("\n"))
        assert widest + 6 <= header.sectionSize(column), f"'{text}' is clipped"
        assert header.height() >= metrics.height() * len(text.split("\n"))
    fresh_dock.setFloating(False)


@pytest.mark.parametrize("epochs", [(1,), (1, 2, 3)], ids=["one epoch", "three epochs"])
def test_curves_count_whole_epochs_and_keep_legends_off_the_lines(fresh_dock, epochs) -> None:
    curves = fresh_dock.widgets.curves
    curves.clear()
    for epoch in epochs:
        curves.add_epoch(
            {
                "epoch": epoch,
                "train_loss": 1 / epoch,
                "val_loss": 1.1 / epoch,
                "train_accuracy": 0.8,
                "val_accuracy": 0.7,
                "val_iou": 0.2 * epoch,
            }
        )
    curves.canvas.resize(330, curves.canvas.height())
    curves.canvas.draw()
    renderer = curves.canvas.get_renderer()
    figure = curves.figure.get_window_extent(renderer)
    texts = []
    for axes in curves.figure.axes:
        ticks = [tick for tick in axes.get_xticks() if axes.get_xlim()[0] <= tick <= axes.get_xlim()[1]]
        assert ticks and all(float(tick).is_integer() for tick in ticks), ticks
        legend = axes.get_legend().get_window_extent(renderer)
        assert not legend.overlaps(axes.get_window_extent(renderer)), "the legend covers the plot"
        assert figure.x0 <= legend.x0 and legend.x1 <= figure.x1 and figure.y0 <= legend.y0, "the legend is cut off"
        texts.append(legend)
        texts.extend(label.get_window_extent(renderer) for label in (axes.title, axes.xaxis.label) if label.get_text())
    assert not [(a, b) for i, a in enumerate(texts) for b in texts[i + 1 :] if a.overlaps(b)], "texts overlap"


# -- 7. Predict's own settings and the visible map area ----------------------------------------------
def test_predict_passes_clean_footprint_settings(fresh_dock, scene, model_file, tmp_path) -> None:
    fresh_dock.widgets.output_widget.setFilePath(str(tmp_path))
    parameters = predict(fresh_dock, add_raster(scene.image, "scene"), model_file)
    assert parameters["MIN_AREA"] == pytest.approx(2.0) and parameters["SIMPLIFY"] == pytest.approx(0.2)
    assert parameters["REGULARIZE"] is False and "THRESHOLD" not in parameters and "EXTENT" not in parameters
    fresh_dock.widgets.threshold_spin.setValue(0.3)
    fresh_dock.widgets.regularize_check.setChecked(True)
    parameters = predict(fresh_dock, fresh_dock.widgets.image_combo.currentLayer(), model_file)
    assert parameters["THRESHOLD"] == pytest.approx(0.3) and parameters["REGULARIZE"] is True


def test_predict_only_the_visible_map_area(fresh_dock, scene, model_file, qgis_iface, tmp_path) -> None:
    fresh_dock.widgets.output_widget.setFilePath(str(tmp_path))
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:32736"))
    canvas.resize(400, 400)
    canvas.setExtent(QgsRectangle(LEFT, TOP - 20 * PIXEL_M, LEFT + 20 * PIXEL_M, TOP))
    fresh_dock.widgets.visible_area_check.setChecked(True)
    parameters = predict(fresh_dock, add_raster(scene.image, "scene"), model_file)
    assert parameters["EXTENT"].endswith("[EPSG:32736]")
    shown = canvas.extent()  # the canvas widens the extent to its own shape
    with rasterio.open(parameters["OUTPUT_MASK"]) as mask:
        assert mask.width < 64 or mask.height < 64  # not the whole 64 x 64 scene
        left, bottom, right, top = mask.bounds
        assert left >= shown.xMinimum() - PIXEL_M and right <= shown.xMaximum() + PIXEL_M
        assert bottom >= shown.yMinimum() - PIXEL_M and top <= shown.yMaximum() + PIXEL_M


# -- 9. export for Deepness from the dock; 10. evaluate's vector errors; 11. time budget, starter model -----
def test_export_for_deepness_writes_onnx_files_under_new_names(fresh_dock, model_file, tmp_path) -> None:
    pytest.importorskip("onnx")
    fresh_dock.widgets.output_widget.setFilePath(str(tmp_path))
    fresh_dock.widgets.model_widget.setFilePath(str(model_file))
    for expected in ("tiny.onnx", "tiny_2.onnx"):
        fresh_dock.widgets.export_button.click()
        wait_for(fresh_dock)
        assert (tmp_path / expected).is_file()
    assert "Load default parameters" in fresh_dock.widgets.status_label.text()


def test_evaluate_adds_false_positive_and_missed_buildings(fresh_dock, scene, tmp_path) -> None:
    fresh_dock.widgets.output_widget.setFilePath(str(tmp_path))
    mask = add_raster(scene.mask, "prediction")
    fresh_dock.widgets.prediction_combo.setLayer(mask)
    fresh_dock.widgets.reference_combo.setLayer(add_raster(scene.labels, "labels"))
    fresh_dock.widgets.building_values_edit.setText("2")
    (tmp_path / "prediction_evaluation.html").write_text("an earlier evaluation's report")
    fresh_dock.widgets.evaluate_button.click()
    wait_for(fresh_dock)
    # the second evaluation of this layer: its group and layers say so, as its files do
    assert QgsProject.instance().layerTreeRoot().children()[0].name() == "prediction evaluation 2"
    names = {layer.name() for layer in QgsProject.instance().mapLayers().values()}
    assert {"prediction false positives 2", "prediction missed buildings 2", "prediction errors 2"} <= names
    assert (tmp_path / "prediction_errors_2.tif").is_file()


def test_train_for_minutes_reaches_the_train_algorithm(fresh_dock, scene, tmp_path) -> None:
    fresh_dock.widgets.output_widget.setFilePath(str(tmp_path))
    assert fresh_dock.widgets.minutes_spin.value() == 30
    fresh_dock.widgets.train_images.tick([add_raster(scene.image, "scene")])
    fresh_dock.widgets.train_labels.tick([add_raster(scene.labels, "scene labels")])
    fresh_dock.widgets.minutes_spin.setValue(7)
    fresh_dock.widgets.train_button.click()
    parameters = fresh_dock.current_run.parameters
    fresh_dock.widgets.cancel_button.click()
    wait_for(fresh_dock)
    assert parameters["TIME_BUDGET_MIN"] == 7


def test_the_starter_model_is_the_default_model_when_shipped(
    plugin, qgis_iface, model_file, monkeypatch, tmp_path
) -> None:
    from unet_buildings.model.training import start_model
    from unet_buildings.plugin.dock.dock_widget import BuildingsDock

    monkeypatch.setattr(start_model, "STARTER_MODEL", tmp_path / "not_shipped.pt")
    without = BuildingsDock(qgis_iface)
    monkeypatch.setattr(start_model, "STARTER_MODEL", model_file)
    with_starter = BuildingsDock(qgis_iface)
    try:
        assert without.widgets.model_widget.filePath() == ""
        assert with_starter.widgets.model_widget.filePath() == str(model_file)
    finally:
        without.deleteLater()
        with_starter.deleteLater()


# -- the dock's requests: what the widgets say, as the algorithms' parameters -------------------------
def assert_algorithm_accepts(algorithm_id: str, parameters: dict) -> None:
    """Each parameter is one the provider's algorithm defines, with a value it accepts."""
    algorithm = QgsApplication.processingRegistry().algorithmById(f"unet_buildings:{algorithm_id}")
    assert set(parameters) <= {definition.name() for definition in algorithm.parameterDefinitions()}
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    ok, message = algorithm.checkParameterValues(parameters, context)
    assert ok, message


def test_each_request_carries_the_widgets_values_to_its_algorithm(fresh_dock, scene, model_file, tmp_path) -> None:
    """Set widgets become exactly these parameters (distinct numbers, so a swap or a unit conversion
    between the dock and the algorithm shows), and the algorithms accept them; nothing runs."""
    dock = fresh_dock
    dock.widgets.output_widget.setFilePath(str(tmp_path))
    image, labels = add_raster(scene.image, "scene"), add_raster(scene.labels, "scene labels")
    dock.widgets.train_images.tick([image])
    dock.widgets.train_labels.tick([labels])
    dock.widgets.building_values_edit.setText("2, 5")
    dock.widgets.preset_combo.setCurrentText("paper")
    dock.widgets.epochs_spin.setValue(3)
    dock.widgets.minutes_spin.setValue(7)
    dock.widgets.model_widget.setFilePath(str(model_file))  # adapted: "Adapt the model file above" is ticked
    request = dock.inputs.train_request()
    assert request.algorithm_id == "train"
    assert request.parameters() == {
        "IMAGES": [image.id()],
        "LABELS": [labels.id()],
        "BUILDING_VALUES": "2, 5",
        "PRESET": "paper",
        "OUTPUT_MODEL": str(tmp_path / "scene_model.pt"),
        "EPOCHS": 3,
        "TIME_BUDGET_MIN": 7,
        "INIT_MODEL": str(model_file),
        "FROM_SCRATCH": False,
    }
    assert_algorithm_accepts("train", request.parameters())
    dock.widgets.epochs_spin.setValue(0)  # shown as "preset's value": the algorithm's preset decides
    dock.widgets.minutes_spin.setValue(0)
    assert not {"EPOCHS", "TIME_BUDGET_MIN"} & set(dock.inputs.train_request().parameters())

    dock.widgets.image_combo.setLayer(image)
    dock.widgets.model_widget.setFilePath(str(model_file))
    dock.widgets.threshold_spin.setValue(0.25)
    dock.widgets.min_area_spin.setValue(12.5)
    dock.widgets.simplify_spin.setValue(0.75)
    dock.widgets.regularize_check.setChecked(True)
    request = dock.inputs.predict_request()
    assert request.algorithm_id == "extract"
    assert request.parameters() == {
        "INPUT": image.id(),
        "MODEL": str(model_file),
        "OUTPUT": str(tmp_path / "scene_buildings.gpkg"),
        "OUTPUT_PROBABILITY": str(tmp_path / "scene_probability.tif"),
        "OUTPUT_MASK": str(tmp_path / "scene_mask.tif"),
        "MIN_AREA": 12.5,
        "SIMPLIFY": 0.75,
        "REGULARIZE": True,
        "THRESHOLD": 0.25,
    }
    assert_algorithm_accepts("extract", request.parameters())

    dock.widgets.prediction_combo.setLayer(add_raster(scene.mask, "prediction"))
    dock.widgets.reference_combo.setLayer(labels)
    request = dock.inputs.evaluate_request()
    assert request.algorithm_id == "evaluate"
    assert request.parameters() == {
        "PREDICTION": dock.widgets.prediction_combo.currentLayer().id(),
        "LABELS": labels.id(),
        "BUILDING_VALUES": "2, 5",
        "OUTPUT_REPORT": str(tmp_path / "prediction_evaluation.html"),
        "OUTPUT_ERROR_MAP": str(tmp_path / "prediction_errors.tif"),
        "OUTPUT_FALSE_POSITIVES": str(tmp_path / "prediction_false_positives.gpkg"),
        "OUTPUT_MISSED": str(tmp_path / "prediction_missed.gpkg"),
    }
    assert_algorithm_accepts("evaluate", request.parameters())

    request = dock.inputs.export_request()
    assert request.algorithm_id == "export"
    assert request.parameters() == {"MODEL": str(model_file), "OUTPUT": str(tmp_path / f"{model_file.stem}.onnx")}
    assert_algorithm_accepts("export", request.parameters())


def test_built_up_area_reads_in_square_metres_then_hectares(plugin) -> None:
    from unet_buildings.plugin.dock.widgets import built_up_area

    assert [built_up_area(value) for value in (0.0, 850.4, 9_999.4, 10_000.0, 23_456.0)] == [
        "0 m²",
        "850 m²",
        "9,999 m²",
        "1.00 ha",
        "2.35 ha",
    ]
