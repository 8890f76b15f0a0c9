"""The plugin's GUI parts in a real (offscreen) QGIS: loading and unloading, the dock running tasks."""

from __future__ import annotations

import re
import sys
import time

import pytest
import rasterio
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsTask, QgsVectorLayer
from qgis.PyQt.QtCore import QCoreApplication, QTimer
from qgis.PyQt.QtWidgets import QApplication, QMessageBox, QTextBrowser

TASK_TIMEOUT_S = 120


def wait_for(dock) -> None:
    """Lets the background task run and its signals arrive, as QGIS's event loop would."""
    deadline = time.monotonic() + TASK_TIMEOUT_S
    while dock.current_run is not None:
        assert time.monotonic() < deadline, "the dock's task did not finish in time"
        QCoreApplication.processEvents()
        time.sleep(0.02)


@pytest.fixture
def dock(plugin, qgis_new_project, tmp_path):
    plugin.show_dock(True)
    plugin.dock.widgets.output_widget.setFilePath(str(tmp_path))
    yield plugin.dock
    QgsProject.instance().clear()


def test_unload_removes_the_provider_and_the_button_and_initgui_restores_them(plugin, qgis_iface) -> None:
    registry = QgsApplication.processingRegistry()
    plugin.unload()
    assert registry.providerById("unet_buildings") is None
    assert plugin.action is None and plugin.dock is None
    plugin.initGui()
    assert registry.providerById("unet_buildings") is not None
    assert plugin.action.text() == "U-Net Building Extractor"


def test_help_and_about_shows_the_readme_inside_qgis(plugin) -> None:
    from .conftest import shown_dialogs

    plugin.help_action.trigger()
    windows = shown_dialogs()
    assert [window.windowTitle() for window in windows] == ["U-Net Building Extractor: help and about"]
    text = windows[0].findChild(QTextBrowser).toPlainText()
    assert "make demo" in text and "Licence" in text and "## " not in text  # read as Markdown, not shown raw
    windows[0].close()


def test_toolbar_button_shows_the_dock_with_its_device(plugin) -> None:
    plugin.action.setChecked(True)
    assert plugin.dock is not None and not plugin.dock.isHidden()  # no main window is shown offscreen
    assert plugin.dock.widgets.device_label.text().startswith("Device: CPU")
    assert plugin.dock.widgets.dependency_label.isHidden()
    plugin.action.setChecked(False)
    assert plugin.dock.isHidden()


def test_predict_then_evaluate_add_styled_layers(dock, scene, model_file, qgis_iface) -> None:
    project = QgsProject.instance()
    image = QgsRasterLayer(str(scene.image), "scene")
    labels = QgsRasterLayer(str(scene.labels), "labels")
    project.addMapLayers([image, labels])
    dock.widgets.image_combo.setLayer(image)
    dock.widgets.reference_combo.setLayer(labels)
    dock.widgets.model_widget.setFilePath(str(model_file))

    dock.widgets.predict_button.click()
    assert dock.current_run is not None and not dock.widgets.predict_button.isEnabled()  # runs in the background
    assert re.fullmatch(r"0:0\d elapsed", dock.widgets.time_label.text())  # no estimate before any progress
    # a quarter done in 1 min 30 s: three quarters left at the same pace
    dock.current_run.elapsed_s = lambda: 90.0
    dock.show_progress(25.0)
    assert dock.widgets.time_label.text() == "1:30 elapsed, about 4:30 left"
    wait_for(dock)
    assert dock.widgets.time_label.text() == "Extract buildings: 1:30"
    # the count says which buildings it counts: Evaluate's object scores count every blob of the mask
    said = re.match(
        r"(\d+) buildings of 2 m² or more found, ([\d,]+) m² built up",
        dock.widgets.status_label.text().replace("\u200b", ""),
    )
    assert said, dock.widgets.status_label.text()
    added = {layer.name(): layer for layer in project.mapLayers().values()}
    areas_m2 = [feature["area_m2"] for feature in added["scene buildings"].getFeatures()]
    assert int(said[1]) == len(areas_m2) and int(said[2].replace(",", "")) == round(sum(areas_m2))
    assert added["scene building probability"].renderer().type() == "singlebandpseudocolor"
    assert added["scene building mask"].renderer().type() == "paletted"
    tree = project.layerTreeRoot()
    assert not tree.findLayer(added["scene building mask"].id()).isVisible()  # the outlines show it already
    assert tree.findLayer(added["scene building probability"].id()).isVisible()
    buildings = added["scene buildings"]
    assert isinstance(buildings, QgsVectorLayer) and buildings.renderer().symbol().symbolLayer(0).strokeWidth() > 0
    assert dock.widgets.prediction_combo.currentLayer() is added["scene building mask"]
    assert dock.widgets.progress_bar.value() == 100 and dock.widgets.predict_button.isEnabled()

    dock.widgets.building_values_edit.setText("2")
    dock.widgets.evaluate_button.click()
    wait_for(dock)
    counts = [
        int(dock.widgets.matrix_table.item(row, column).text().replace(",", "")) for row in (0, 1) for column in (0, 1)
    ]
    with rasterio.open(added["scene building mask"].source()) as mask, rasterio.open(scene.labels) as truth:
        predicted, building = mask.read(1) == 1, truth.read(1) == 2
    # as the report and the paper's Table 2: rows true other, true building; columns predicted other, building
    assert counts == [
        int((~predicted & ~building).sum()),
        int((predicted & ~building).sum()),
        int((~predicted & building).sum()),
        int((predicted & building).sum()),
    ]
    # the untrained model marks every pixel building (no FN, no TN), so true and false positives tell a
    # swapped table apart; the evaluation of all four cells is checked in test_qgis_process.py
    assert counts[1] > 0 and counts[3] > 0
    errors = [layer for layer in project.mapLayers().values() if layer.name().endswith("errors")]
    assert len(errors) == 1 and errors[0].renderer().type() == "paletted"
    assert "IoU" in dock.widgets.status_label.text()


def test_a_failed_run_reaches_the_message_bar(dock, scene, tmp_path, qgis_iface) -> None:
    image = QgsRasterLayer(str(scene.image), "scene")
    QgsProject.instance().addMapLayer(image)
    dock.widgets.image_combo.setLayer(image)
    dock.widgets.model_widget.setFilePath(str(tmp_path / "missing.pt"))
    qgis_iface.messageBar().clear_messages()
    logged: list[tuple[str, str]] = []
    QgsApplication.messageLog().messageReceived.connect(lambda message, tag, level: logged.append((tag, message)))
    dock.widgets.predict_button.click()
    wait_for(dock)
    errors = qgis_iface.messageBar().get_messages(2)  # Qgis.MessageLevel.Critical
    assert len(errors) == 1 and "does not exist: train a model first" in errors[0]
    assert "Traceback" not in errors[0]  # plain words
    assert ("U-Net Building Extractor", errors[0].split(":", 1)[1].strip()) in logged  # the plugin's log tab
    assert dock.widgets.predict_button.isEnabled() and not dock.widgets.cancel_button.isEnabled()


def test_a_missing_module_is_named_with_its_install_command(unet_buildings, qgis_iface, monkeypatch) -> None:
    from unet_buildings.plugin import dependencies
    from unet_buildings.plugin.dock.dock_widget import BuildingsDock

    monkeypatch.setitem(dependencies.ENGINE_MODULES, "unet_buildings_absent_module", "absent-package==1.0")
    dock = BuildingsDock(qgis_iface)
    try:
        text = dock.widgets.dependency_label.text()
        assert "unet_buildings_absent_module" in text and "-m pip install" in text and "absent-package==1.0" in text
        assert not dock.widgets.dependency_label.isHidden()
        assert not dock.widgets.predict_button.isEnabled() and not dock.widgets.train_button.isEnabled()
        assert dock.widgets.device_label.text().startswith("Device: none")
        assert not dock.widgets.install_button.isHidden() and dock.widgets.install_button.isEnabled()
    finally:
        dock.deleteLater()


def answer_next_dialog(button, seen: list[str]) -> None:
    """Presses ``button`` in the next modal dialog, as a user would, noting the text it showed."""

    def press() -> None:
        box = QApplication.activeModalWidget()
        if box is None:  # not shown yet
            QTimer.singleShot(10, press)
            return
        seen.append(f"{box.text()}\n{box.informativeText()}")
        box.button(button).click()

    QTimer.singleShot(0, press)


@pytest.fixture
def dock_missing_a_module(unet_buildings, qgis_iface, monkeypatch):
    from unet_buildings.plugin import dependencies
    from unet_buildings.plugin.dock.dock_widget import BuildingsDock

    monkeypatch.setitem(dependencies.ENGINE_MODULES, "unet_buildings_absent_module", "absent-package==1.0")
    dock = BuildingsDock(qgis_iface)
    yield dock
    dock.deleteLater()


def test_install_runs_nothing_unless_the_user_says_yes_to_the_exact_command(dock_missing_a_module) -> None:
    from unet_buildings.plugin.dependencies import install_command

    dock = dock_missing_a_module
    command = install_command(dock.installer.arguments)
    assert (
        dock.installer.arguments[1:4] == ["-m", "pip", "install"]
        and dock.installer.arguments[-1] == "absent-package==1.0"
    )
    seen: list[str] = []
    answer_next_dialog(QMessageBox.StandardButton.No, seen)
    dock.widgets.install_button.click()
    assert len(seen) == 1 and command in seen[0]  # the dialog showed the exact command
    assert dock.installer.process is None and "Nothing was installed" in dock.widgets.status_label.text()


def test_install_runs_the_confirmed_command_in_the_background(dock_missing_a_module, qgis_iface) -> None:
    """After yes, the shown command runs (a harmless stand-in here: pip would download from the network)."""
    from unet_buildings.plugin.dependencies import install_command

    dock = dock_missing_a_module
    dock.installer.arguments = [sys.executable, "-c", "print('stand-in for pip install')"]
    seen: list[str] = []
    answer_next_dialog(QMessageBox.StandardButton.Yes, seen)
    dock.widgets.install_button.click()
    assert install_command(dock.installer.arguments) in seen[0]
    assert dock.installer.process is not None and not dock.widgets.install_button.isEnabled()
    deadline = time.monotonic() + 30
    while dock.installer.process is not None:
        assert time.monotonic() < deadline
        QCoreApplication.processEvents()
        time.sleep(0.02)
    assert dock.widgets.status_label.text() == "Installed. Restart QGIS to use the plugin."


def test_model_file_shows_its_training_history(dock, unet_buildings, tmp_path) -> None:
    from unet_buildings.model.net.modelfile import ModelInfo, save_model
    from unet_buildings.model.net.network import UNet, UNetConfig

    history = [
        {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 1.2 / epoch, "val_iou": 0.2 * epoch}
        for epoch in (1, 2, 3)
    ]
    path = tmp_path / "with_history.pt"
    save_model(path, UNet(UNetConfig(in_bands=3, base_width=4, depth=2)), ModelInfo(history=history))
    dock.widgets.model_widget.setFilePath(str(path))
    lines = {line.get_label(): line for axes in dock.widgets.curves.figure.axes for line in axes.get_lines()}
    assert list(lines["validation IoU"].get_ydata()) == pytest.approx([0.2, 0.4, 0.6])


def add_raster(path, name: str) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), name)
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_training_pairs_ticked_images_with_ticked_labels_in_name_order(dock, scene, tmp_path, qgis_iface) -> None:
    from .conftest import make_scene

    second = make_scene(tmp_path / "second")
    # added out of order: pairing follows the names (scene_10 after scene_2), not the order of adding
    images = [add_raster(second.image, "scene_10"), add_raster(scene.image, "scene_2")]
    labels = [add_raster(scene.labels, "scene_2 labels"), add_raster(second.labels, "scene_10 labels")]
    polygons = QgsVectorLayer(str(scene.polygons), "drawn buildings", "ogr")
    QgsProject.instance().addMapLayer(polygons)
    assert [dock.widgets.train_images.itemText(i) for i in range(dock.widgets.train_images.count())] == [
        "scene_2",
        "scene_2 labels",
        "scene_10",
        "scene_10 labels",
    ]  # label rasters are rasters too
    assert "drawn buildings" in [
        dock.widgets.train_labels.itemText(i) for i in range(dock.widgets.train_labels.count())
    ]

    dock.widgets.train_images.tick(images)
    dock.widgets.train_labels.tick(labels[:1])
    assert "2 image(s) but 1 label layer(s)" in dock.widgets.pairs_label.text()
    qgis_iface.messageBar().clear_messages()
    dock.widgets.train_button.click()
    assert dock.current_run is None  # refused, and said why where the user looks
    assert "one label layer per image" in qgis_iface.messageBar().get_messages(1)[0]  # Qgis.MessageLevel.Warning

    dock.widgets.train_labels.tick(labels)
    assert dock.widgets.pairs_label.text() == "scene_2 ↔ scene_2 labels\nscene_10 ↔ scene_10 labels"
    dock.widgets.train_button.click()
    assert dock.current_run.parameters["IMAGES"] == [images[1].id(), images[0].id()]
    assert dock.current_run.parameters["LABELS"] == [labels[0].id(), labels[1].id()]
    dock.widgets.cancel_button.click()  # the preset's full training is far too long for a test
    wait_for(dock)
    assert dock.widgets.train_button.isEnabled()


def test_a_cancelled_run_ends_as_a_cancel_and_not_as_a_failed_task(dock, scene, qgis_iface) -> None:
    """QGIS announces every terminated task as "Task failed" (in the message bar or the desktop's
    notifications): a cancel the user asked for ends the task as completed, named as cancelled."""
    dock.widgets.train_images.tick([add_raster(scene.image, "scene")])
    dock.widgets.train_labels.tick([add_raster(scene.labels, "scene labels")])
    manager, ended = QgsApplication.taskManager(), []

    def record(task_id: int, status: int) -> None:
        task = manager.task(task_id)
        if task is not None and status in (QgsTask.Complete, QgsTask.Terminated):
            ended.append((status, task.description()))

    manager.statusChanged.connect(record)
    try:
        dock.widgets.train_button.click()
        # a user cancels a running task (one cancelled before it starts never runs: QGIS says nothing of it)
        deadline = time.monotonic() + TASK_TIMEOUT_S
        while dock.current_run.task.status() != QgsTask.Running:
            assert time.monotonic() < deadline, "the training task did not start"
            QCoreApplication.processEvents()
            time.sleep(0.01)
        dock.widgets.cancel_button.click()
        wait_for(dock)
    finally:
        manager.statusChanged.disconnect(record)
    assert ended == [(QgsTask.Complete, "'Train building model' cancelled by the user")]
    assert dock.widgets.status_label.text() == "Cancelled by the user."
    assert "cancelled after" in dock.widgets.time_label.text()


def test_dock_fits_a_350_px_wide_dock_area(dock) -> None:
    dock.setFloating(True)
    dock.resize(350, 900)
    dock.show()
    QCoreApplication.processEvents()
    scroll = dock.widget()
    assert scroll.horizontalScrollBar().maximum() == 0  # nothing cut off, nothing to scroll sideways
    viewport_width = scroll.viewport().width()
    for button in (
        dock.widgets.train_button,
        dock.widgets.predict_button,
        dock.widgets.evaluate_button,
        dock.widgets.cancel_button,
    ):
        right_edge = button.mapTo(scroll.widget(), button.rect().topRight()).x()
        assert 0 < right_edge <= viewport_width, button.text()
    dock.setFloating(False)


def test_unloading_while_training_cancels_the_task_and_waits_for_it(plugin, scene, tmp_path) -> None:
    """Reloading the plugin (Plugin Reloader, the plugin manager) mid-training: the task stops
    within seconds, nothing more is reported to the dock being removed, and no model is written."""
    plugin.show_dock(True)
    model = tmp_path / "model.pt"
    plugin.dock.start(
        "train",
        {
            "IMAGES": [str(scene.image)],
            "LABELS": [str(scene.labels)],
            "BUILDING_VALUES": "2",
            # minutes of work, in steps of which a few already move the task's progress (by 0.1 % at least)
            "EPOCHS": 2,
            "PATCHES_PER_EPOCH": 20_000,
            "BATCH_SIZE": 4,
            "BASE_WIDTH": 8,
            "TILE_SIZE": 32,
            "DEVICE": "cpu",
            "OUTPUT_MODEL": str(model),
        },
        lambda results: None,
    )
    task = plugin.dock.current_run.task
    deadline = time.monotonic() + 30
    while "epoch 1" not in task.description() and task.progress() <= 0 and time.monotonic() < deadline:
        QCoreApplication.processEvents()  # until training has really started
        time.sleep(0.05)
    started = time.monotonic()
    plugin.unload()
    assert time.monotonic() - started < 15
    assert QgsApplication.taskManager().countActiveTasks() == 0
    for _ in range(20):  # the task manager's late signals reach nothing that is gone
        QCoreApplication.processEvents()
    assert not model.exists()
    plugin.initGui()
    assert QgsApplication.processingRegistry().providerById("unet_buildings") is not None
