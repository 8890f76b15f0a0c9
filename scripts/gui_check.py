"""Runs inside the QGIS desktop (``qgis --code scripts/gui_check.py``): walks train (adapting the dock's
starter model) -> predict -> evaluate through the plugin dock's own buttons, as a user would, with a
screenshot after each step.

It loads the sample scenes 1 and 2 with their labels (training) and the held-out scene 3 with its labels,
opens the dock at the width a user would give it (~360 px), ticks the training pairs, sets building value 2
and "Train for" GUI_CHECK_TRAIN_MINUTES minutes, presses Train; then picks scene 3 and presses Predict; then
picks scene 3's labels and presses Evaluate. Screenshots: <prefix>-1-train.png (live curves),
<prefix>-2-predict.png (the buildings on the map), <prefix>-3-evaluate.png (confusion matrix, error map), and
the last one also as GUI_CHECK_SCREENSHOT.

Paths come from the environment (set by scripts/gui_check.sh): GUI_CHECK_SAMPLE (folder of the sample
scenes), GUI_CHECK_OUTPUT (the dock's output folder), GUI_CHECK_SCREENSHOT (png), GUI_CHECK_TRAIN_MINUTES,
GUI_CHECK_DOCK_WIDTH_PX (default 360).
The outcome is one line in <screenshot>.txt.
"""

import os
import shutil
import time
from pathlib import Path

from qgis.core import QgsApplication, QgsProject
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.utils import iface, plugins

TRAIN_MINUTES = int(os.environ.get("GUI_CHECK_TRAIN_MINUTES", "2"))
STEP_TIMEOUT_S = TRAIN_MINUTES * 60 + 240  # training also validates and saves after its budget
DOCK_WIDTH_PX = int(os.environ.get("GUI_CHECK_DOCK_WIDTH_PX", "360"))  # narrower to look for clipped text
sample = Path(os.environ["GUI_CHECK_SAMPLE"])
screenshot = Path(os.environ["GUI_CHECK_SCREENSHOT"])
steps_done: list[str] = []
dock = None
layers = {}


def shot(step: str) -> Path:
    path = screenshot.with_name(f"{screenshot.stem}-{step}.png")
    iface.mainWindow().grab().save(str(path))
    return path


def finish(message: str) -> None:
    screenshot.with_suffix(".txt").write_text(message + "\n")
    # QGIS 3.22 can crash on exit while its layer tree still holds layers: empty the project first
    QgsProject.instance().clear()
    QTimer.singleShot(500, QgsApplication.exit)


def fail(step: str) -> None:
    shot(step)
    finish(f"failed at {step}: {dock.widgets.status_label.text() if dock else ''}")


def after_run(step: str, check, then) -> None:
    """Waits for the dock's run, then lets the map render, checks the outcome, screenshots, goes on."""
    started = time.monotonic()

    def poll() -> None:
        if dock.current_run is not None:
            if time.monotonic() - started > STEP_TIMEOUT_S:
                dock.cancel()
                fail(step)
            else:
                QTimer.singleShot(500, poll)
            return
        if not check():
            fail(step)
            return
        iface.mapCanvas().refreshAllLayers()
        QTimer.singleShot(3000, done)

    def done() -> None:
        steps_done.append(
            f"{step}: {dock.widgets.status_label.text().replace(chr(0x200B), '')} ({dock.widgets.time_label.text()})"
        )
        shot(step)
        then()

    QTimer.singleShot(500, poll)


def project_names() -> list[str]:
    return [layer.name() for layer in QgsProject.instance().mapLayers().values()]


def show(widget) -> None:
    """Scrolls the dock to a widget for the screenshot (the dock itself never scrolls on its own)."""
    dock.widget().ensureWidgetVisible(widget, 0, 0)


def train() -> None:
    dock.widgets.output_widget.setFilePath(os.environ["GUI_CHECK_OUTPUT"])
    dock.widgets.building_values_edit.setText("2")
    dock.widgets.train_images.tick([layers["scene_1"], layers["scene_2"]])
    dock.widgets.train_labels.tick([layers["scene_1_labels"], layers["scene_2_labels"]])
    dock.widgets.minutes_spin.setValue(TRAIN_MINUTES)
    dock.widgets.train_button.click()
    show(dock.widgets.curves)
    after_run(
        "1-train",
        # the dock adapts its model (the starter model) and says how the new one compares with it
        lambda: (
            Path(dock.widgets.model_widget.filePath()).is_file()
            and any(
                words in dock.widgets.status_label.text() for words in ("The dock now uses", "The dock goes on using")
            )
        ),
        predict,
    )


def predict() -> None:
    canvas = iface.mapCanvas()
    for name in ("scene_1", "scene_2", "scene_1_labels", "scene_2_labels", "scene_3_labels"):
        QgsProject.instance().layerTreeRoot().findLayer(layers[name].id()).setItemVisibilityChecked(False)
    canvas.setExtent(layers["scene_3"].extent())
    dock.widgets.image_combo.setLayer(layers["scene_3"])
    show(dock.widgets.predict_button)
    dock.widgets.predict_button.click()
    after_run("2-predict", lambda: "scene_3 buildings" in project_names(), evaluate)


def evaluate() -> None:
    dock.widgets.reference_combo.setLayer(layers["scene_3_labels"])
    dock.widgets.evaluate_button.click()
    show(dock.widgets.scores_label)  # the matrix and the scores under it
    after_run("3-evaluate", lambda: dock.widgets.matrix_table.item(0, 0) is not None, succeed)


def succeed() -> None:
    shutil.copyfile(screenshot.with_name(f"{screenshot.stem}-3-evaluate.png"), screenshot)
    finish("ok: " + " | ".join(steps_done) + f" | layers: {', '.join(sorted(project_names()))}")


def start() -> None:
    global dock
    if "unet_buildings" not in plugins:
        finish("failed: the plugin unet_buildings is not loaded (is it enabled in the profile?)")
        return
    iface.mainWindow().resize(1400, 900)
    iface.mainWindow().showMaximized()
    for name in ("scene_1", "scene_1_labels", "scene_2", "scene_2_labels", "scene_3", "scene_3_labels"):
        layers[name] = iface.addRasterLayer(str(sample / f"{name}.tif"), name)
    plugin = plugins["unet_buildings"]
    plugin.action.setChecked(True)  # the toolbar button
    dock = plugin.dock
    iface.mainWindow().resizeDocks([dock], [DOCK_WIDTH_PX], Qt.Orientation.Horizontal)
    QTimer.singleShot(500, train)


QTimer.singleShot(2000, start)  # after QGIS has finished starting up and loading plugins
