"""Runs inside the QGIS desktop (``qgis --code scripts/gui_check.py``): loads the sample image, opens
the plugin's dock at the width a user would give it (~360 px), picks the model (its training curves
show), presses Predict, waits for the result layers, saves a screenshot and quits.

Paths come from the environment (set by scripts/gui_check.sh): GUI_CHECK_IMAGE, GUI_CHECK_MODEL,
GUI_CHECK_OUTPUT (folder), GUI_CHECK_SCREENSHOT (png). The outcome is written to <screenshot>.txt.
"""
import os
import time
from pathlib import Path

from qgis.core import QgsApplication, QgsProject
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.utils import iface, plugins

TIMEOUT_S = 150
DOCK_WIDTH_PX = 360
screenshot = Path(os.environ["GUI_CHECK_SCREENSHOT"])
started = time.monotonic()


def finish(message: str) -> None:
    screenshot.with_suffix(".txt").write_text(message + "\n")
    # QGIS 3.22 can crash on exit while its layer tree still holds layers: empty the project first
    QgsProject.instance().clear()
    QTimer.singleShot(500, QgsApplication.exit)


def capture() -> None:
    iface.mapCanvas().refreshAllLayers()
    QTimer.singleShot(3000, save)  # let the canvas render the new layers


def save() -> None:
    iface.mainWindow().grab().save(str(screenshot))
    names = sorted(layer.name() for layer in QgsProject.instance().mapLayers().values())
    finish(f"ok: {dock.status_label.text()} ({dock.time_label.text()}) | layers: {', '.join(names)}")


def wait() -> None:
    if time.monotonic() - started > TIMEOUT_S:
        iface.mainWindow().grab().save(str(screenshot))
        finish(f"timeout: {dock.status_label.text()}")
    elif dock.current_run is None:
        failed = "buildings" not in " ".join(layer.name() for layer in QgsProject.instance().mapLayers().values())
        if failed:
            iface.mainWindow().grab().save(str(screenshot))
            finish(f"failed: {dock.status_label.text()}")
        else:
            capture()
    else:
        QTimer.singleShot(500, wait)


def start() -> None:
    global dock
    if "unet_buildings" not in plugins:
        finish("failed: the plugin unet_buildings is not loaded (is it enabled in the profile?)")
        return
    iface.mainWindow().resize(1400, 900)
    iface.mainWindow().showMaximized()
    image = iface.addRasterLayer(os.environ["GUI_CHECK_IMAGE"], "sample image")
    plugin = plugins["unet_buildings"]
    plugin.action.setChecked(True)  # the toolbar button
    dock = plugin.dock
    iface.mainWindow().resizeDocks([dock], [DOCK_WIDTH_PX], Qt.Orientation.Horizontal)
    dock.image_combo.setLayer(image)
    dock.model_widget.setFilePath(os.environ["GUI_CHECK_MODEL"])
    dock.output_widget.setFilePath(os.environ["GUI_CHECK_OUTPUT"])
    dock.predict_button.click()
    QTimer.singleShot(500, wait)


dock = None
QTimer.singleShot(2000, start)  # after QGIS has finished starting up and loading plugins
