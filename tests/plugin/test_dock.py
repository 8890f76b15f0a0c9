"""The plugin's GUI parts in a real (offscreen) QGIS: loading and unloading, the dock running tasks."""
from __future__ import annotations

import time

import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import QCoreApplication

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
    plugin.dock.output_widget.setFilePath(str(tmp_path))
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


def test_toolbar_button_shows_the_dock_with_its_device(plugin) -> None:
    plugin.action.setChecked(True)
    assert plugin.dock is not None and not plugin.dock.isHidden()  # no main window is shown offscreen
    assert plugin.dock.device_label.text().startswith("Device: CPU")
    assert plugin.dock.dependency_label.isHidden()
    plugin.action.setChecked(False)
    assert plugin.dock.isHidden()


def test_predict_then_evaluate_add_styled_layers(dock, scene, model_file, qgis_iface) -> None:
    project = QgsProject.instance()
    image = QgsRasterLayer(str(scene.image), "scene")
    labels = QgsRasterLayer(str(scene.labels), "labels")
    project.addMapLayers([image, labels])
    dock.image_combo.setLayer(image)
    dock.label_combo.setLayer(labels)
    dock.model_widget.setFilePath(str(model_file))

    dock.predict_button.click()
    assert dock.current_run is not None and not dock.predict_button.isEnabled()  # runs in the background
    wait_for(dock)
    added = {layer.name(): layer for layer in project.mapLayers().values()}
    assert added["scene building probability"].renderer().type() == "singlebandpseudocolor"
    assert added["scene building mask"].renderer().type() == "paletted"
    buildings = added["scene buildings"]
    assert isinstance(buildings, QgsVectorLayer) and buildings.renderer().symbol().symbolLayer(0).strokeWidth() > 0
    assert dock.prediction_combo.currentLayer() is added["scene building mask"]
    assert dock.progress_bar.value() == 100 and dock.predict_button.isEnabled()

    dock.evaluate_button.click()
    wait_for(dock)
    counts = [int(dock.matrix_table.item(row, column).text().replace(",", "")) for row in (0, 1) for column in (0, 1)]
    assert sum(counts) == image.width() * image.height()
    errors = [layer for layer in project.mapLayers().values() if layer.name().endswith("errors")]
    assert len(errors) == 1 and errors[0].renderer().type() == "paletted"
    assert "IoU" in dock.status_label.text()


def test_a_failed_run_reaches_the_message_bar(dock, scene, tmp_path, qgis_iface) -> None:
    image = QgsRasterLayer(str(scene.image), "scene")
    QgsProject.instance().addMapLayer(image)
    dock.image_combo.setLayer(image)
    dock.model_widget.setFilePath(str(tmp_path / "missing.pt"))
    qgis_iface.messageBar().clear_messages()
    dock.predict_button.click()
    wait_for(dock)
    errors = qgis_iface.messageBar().get_messages(2)  # Qgis.MessageLevel.Critical
    assert len(errors) == 1 and "does not exist: train a model first" in errors[0]
    assert dock.predict_button.isEnabled() and not dock.cancel_button.isEnabled()


def test_a_missing_module_is_named_with_its_install_command(unet_buildings, qgis_iface, monkeypatch) -> None:
    from unet_buildings.plugin import dependencies
    from unet_buildings.plugin.dock import BuildingsDock

    monkeypatch.setitem(dependencies.ENGINE_MODULES, "unet_buildings_absent_module", "absent-package==1.0")
    dock = BuildingsDock(qgis_iface)
    try:
        text = dock.dependency_label.text()
        assert "unet_buildings_absent_module" in text and "-m pip install" in text and "absent-package==1.0" in text
        assert not dock.dependency_label.isHidden()
        assert not dock.predict_button.isEnabled() and not dock.train_button.isEnabled()
        assert dock.device_label.text().startswith("Device: none")
    finally:
        dock.deleteLater()


def test_epoch_lines_of_the_train_algorithm_feed_the_live_curves(dock) -> None:
    from unet_buildings.plugin.epochs import format_epoch, parse_epoch

    record = {"epoch": 3, "train_loss": 0.5, "train_accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.7,
              "val_iou": 0.4, "seconds": 1.5}
    assert parse_epoch(format_epoch(record)) == pytest.approx(record)
    assert parse_epoch("Best epoch 3 on CPU (2 threads)") is None
    dock.curves.clear()
    dock.show_info(format_epoch(record))
    dock.show_info(format_epoch({**record, "epoch": 4, "val_iou": 0.5}))
    lines = {line.get_label(): line for axes in dock.curves.figure.axes for line in axes.get_lines()}
    assert set(lines) == {"train", "validation", "train accuracy", "validation accuracy", "validation IoU"}
    assert list(lines["validation IoU"].get_xdata()) == [3, 4]
    assert list(lines["validation IoU"].get_ydata()) == pytest.approx([0.4, 0.5])
