"""The dock: pick layers and a model, press Train, Predict or Evaluate.

Each button runs the provider's own Processing algorithm (train, extract, evaluate) as a background
task, so the dock and the toolbox share one code path and QGIS never freezes. Results are added to the
project, styled, when the task has finished.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional

from qgis.core import (
    Qgis,
    QgsMapLayerProxyModel,
    QgsProcessingUtils,
)
from qgis.gui import QgsDockWidget, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from . import DISPLAY_NAME
from .algorithms.train import PRESETS
from .curves import CurvesWidget
from .dependencies import dependency_problem
from .epochs import parse_epoch
from .layers import add_styled_layer
from .log import log
from .tasks import AlgorithmRun


def file_stem(name: str) -> str:
    """A layer name as a safe file-name stem."""
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "layer"


def clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class BuildingsDock(QgsDockWidget):
    def __init__(self, iface, parent: Optional[QWidget] = None) -> None:
        super().__init__(DISPLAY_NAME, parent)
        self.setObjectName("UNetBuildingsDock")
        self.iface = iface
        self.current_run: Optional[AlgorithmRun] = None
        self.clock_timer = QTimer(self)
        self.clock_timer.setInterval(1000)
        self.clock_timer.timeout.connect(self.show_time)
        self._build()
        self.problem = dependency_problem()
        self.dependency_label.setVisible(bool(self.problem))
        self.dependency_label.setText(self.problem or "")
        for button in (self.train_button, self.predict_button, self.evaluate_button):
            button.setEnabled(not self.problem)
        self.device_label.setText(self.describe_device())

    # -- widgets -------------------------------------------------------------------------------
    def _build(self) -> None:
        body = QWidget()
        layout = QVBoxLayout(body)

        self.dependency_label = QLabel()
        self.dependency_label.setWordWrap(True)
        self.dependency_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.dependency_label.setStyleSheet("QLabel { color: #a40000; }")
        layout.addWidget(self.dependency_label)

        form = QFormLayout()
        self.image_combo = QgsMapLayerComboBox()
        self.image_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        form.addRow("Image", self.image_combo)
        self.label_combo = QgsMapLayerComboBox()
        self.label_combo.setFilters(QgsMapLayerProxyModel.RasterLayer | QgsMapLayerProxyModel.PolygonLayer)
        self.label_combo.setAllowEmptyLayer(True)
        self.label_combo.setLayer(None)
        form.addRow("Labels", self.label_combo)
        self.building_values_edit = QLineEdit("2")
        self.building_values_edit.setToolTip("Label raster values that mean building, comma-separated.")
        form.addRow("Building values", self.building_values_edit)
        self.model_widget = QgsFileWidget()
        self.model_widget.setFilter("Model files (*.pt)")
        form.addRow("Model file", self.model_widget)
        self.output_widget = QgsFileWidget()
        self.output_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.output_widget.lineEdit().setPlaceholderText("temporary folder")
        form.addRow("Output folder", self.output_widget)
        layout.addLayout(form)

        training = QGroupBox("Training")
        training_form = QFormLayout(training)
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(PRESETS)
        training_form.addRow("Preset", self.preset_combo)
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(0, 1000)
        self.epochs_spin.setSpecialValueText("preset's value")
        training_form.addRow("Epochs", self.epochs_spin)
        layout.addWidget(training)

        buttons = QHBoxLayout()
        self.train_button = QPushButton("Train")
        self.predict_button = QPushButton("Predict")
        self.evaluate_button = QPushButton("Evaluate")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        for button, slot in ((self.train_button, self.train), (self.predict_button, self.predict),
                             (self.evaluate_button, self.evaluate), (self.cancel_button, self.cancel)):
            button.clicked.connect(slot)
            buttons.addWidget(button)
        layout.addLayout(buttons)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        layout.addWidget(self.progress_bar)
        self.status_label = QLabel("Ready.")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self.device_label = QLabel()
        layout.addWidget(self.device_label)

        self.curves = CurvesWidget()
        layout.addWidget(self.curves)

        evaluation = QGroupBox("Evaluation")
        evaluation_layout = QVBoxLayout(evaluation)
        self.prediction_combo = QgsMapLayerComboBox()
        self.prediction_combo.setFilters(QgsMapLayerProxyModel.RasterLayer | QgsMapLayerProxyModel.PolygonLayer)
        self.prediction_combo.setAllowEmptyLayer(True)
        self.prediction_combo.setLayer(None)
        prediction_form = QFormLayout()
        prediction_form.addRow("Prediction", self.prediction_combo)
        evaluation_layout.addLayout(prediction_form)
        self.matrix_table = QTableWidget(2, 2)
        self.matrix_table.setHorizontalHeaderLabels(["predicted building", "predicted background"])
        self.matrix_table.setVerticalHeaderLabels(["true building", "true background"])
        self.matrix_table.setMaximumHeight(90)
        evaluation_layout.addWidget(self.matrix_table)
        self.scores_label = QLabel()
        self.scores_label.setWordWrap(True)
        self.scores_label.setOpenExternalLinks(True)
        evaluation_layout.addWidget(self.scores_label)
        layout.addWidget(evaluation)
        layout.addStretch()

        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        self.setWidget(scroll)

    def describe_device(self) -> str:
        if self.problem:
            return "Device: none (the engine's Python modules are missing, see above)"
        from ..model.device import describe_device, resolve_device

        return f"Device: {describe_device(resolve_device('auto'))}"

    # -- inputs --------------------------------------------------------------------------------
    def output_folder(self) -> Path:
        folder = Path(self.output_widget.filePath() or QgsProcessingUtils.tempFolder())
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def require(self, value, what: str) -> bool:
        if not value:
            self.tell(f"Pick {what} first.", Qgis.MessageLevel.Warning)
        return bool(value)

    def tell(self, text: str, level: Qgis.MessageLevel = Qgis.MessageLevel.Info) -> None:
        self.status_label.setText(text)
        log(text, level)
        if level != Qgis.MessageLevel.Info:
            self.iface.messageBar().pushMessage(DISPLAY_NAME, text, level, 0 if level == Qgis.MessageLevel.Critical else 8)

    # -- actions -------------------------------------------------------------------------------
    def train(self) -> None:
        image, labels = self.image_combo.currentLayer(), self.label_combo.currentLayer()
        if not (self.require(image, "an image layer") and self.require(labels, "a label layer")):
            return
        parameters = {"IMAGES": [image.id()], "LABELS": [labels.id()],
                      "BUILDING_VALUES": self.building_values_edit.text(),
                      "PRESET": self.preset_combo.currentText(),
                      "OUTPUT_MODEL": str(self.output_folder() / f"{file_stem(image.name())}_model.pt")}
        if self.epochs_spin.value():
            parameters["EPOCHS"] = self.epochs_spin.value()
        self.curves.clear()

        def trained(results: dict) -> None:
            self.model_widget.setFilePath(results["OUTPUT_MODEL"])
            self.tell(f"Model written to {results['OUTPUT_MODEL']} (best epoch {results['BEST_EPOCH']:.0f}).",
                      Qgis.MessageLevel.Success)

        self.start("train", parameters, trained)

    def predict(self) -> None:
        image, model = self.image_combo.currentLayer(), self.model_widget.filePath()
        if not (self.require(image, "an image layer") and self.require(model, "a model file")):
            return
        stem = self.output_folder() / file_stem(image.name())
        parameters = {"INPUT": image.id(), "MODEL": model, "OUTPUT": f"{stem}_buildings.gpkg",
                      "OUTPUT_PROBABILITY": f"{stem}_probability.tif", "OUTPUT_MASK": f"{stem}_mask.tif"}

        def predicted(results: dict) -> None:
            name = image.name()
            add_styled_layer(results["OUTPUT_PROBABILITY"], f"{name} building probability", "probability")
            mask = add_styled_layer(results["OUTPUT_MASK"], f"{name} building mask", "mask")
            add_styled_layer(results["OUTPUT"], f"{name} buildings", "buildings")
            if mask is not None:
                self.prediction_combo.setLayer(mask)
            self.tell(f"{results['BUILDING_COUNT']:.0f} buildings found.", Qgis.MessageLevel.Success)

        self.start("extract", parameters, predicted)

    def evaluate(self) -> None:
        prediction, labels = self.prediction_combo.currentLayer(), self.label_combo.currentLayer()
        if not (self.require(prediction, "a prediction layer (press Predict first)")
                and self.require(labels, "a label layer")):
            return
        stem = self.output_folder() / file_stem(prediction.name())
        parameters = {"PREDICTION": prediction.id(), "LABELS": labels.id(),
                      "BUILDING_VALUES": self.building_values_edit.text(),
                      "OUTPUT_REPORT": f"{stem}_evaluation.html", "OUTPUT_ERROR_MAP": f"{stem}_errors.tif"}

        def evaluated(results: dict) -> None:
            self.show_evaluation(results)
            add_styled_layer(results["OUTPUT_ERROR_MAP"], f"{prediction.name()} errors", "error_map")
            self.tell(f"IoU {results['IOU']:.3f}, F1 {results['F1']:.3f}.", Qgis.MessageLevel.Success)

        self.start("evaluate", parameters, evaluated)

    def cancel(self) -> None:
        if self.current_run is not None:
            self.status_label.setText("Cancelling...")
            self.current_run.cancel()

    # -- running -------------------------------------------------------------------------------
    def start(self, algorithm_id: str, parameters: dict, on_success: Callable[[dict], None]) -> None:
        if self.current_run is not None:
            self.tell("Another run is still going: wait for it or press Cancel.", Qgis.MessageLevel.Warning)
            return
        run = AlgorithmRun(algorithm_id, parameters, self)
        run.progress_changed.connect(self.show_progress)
        run.info.connect(self.show_info)
        run.finished.connect(lambda ok, results, error: self.finish(ok, results, error, on_success))
        self.current_run = run
        self.set_running(True)
        self.progress_bar.setValue(0)
        self.status_label.setText(f"Running {algorithm_id}...")
        run.start()

    def finish(self, ok: bool, results: dict, error: str, on_success: Callable[[dict], None]) -> None:
        run, self.current_run = self.current_run, None
        self.set_running(False)
        elapsed = clock(run.elapsed_s()) if run else "?"
        if ok:
            self.progress_bar.setValue(100)
            on_success(results)
            self.status_label.setText(f"{self.status_label.text()} ({elapsed})")
        else:
            self.tell(error, Qgis.MessageLevel.Critical if "ancel" not in error else Qgis.MessageLevel.Warning)
        if run is not None:
            run.deleteLater()

    def set_running(self, running: bool) -> None:
        for button in (self.train_button, self.predict_button, self.evaluate_button):
            button.setEnabled(not running and not self.problem)
        self.cancel_button.setEnabled(running)
        if running:
            self.clock_timer.start()
        else:
            self.clock_timer.stop()

    def show_progress(self, percent: float) -> None:
        self.progress_bar.setValue(int(percent))
        self.show_time()

    def show_time(self) -> None:
        if self.current_run is None:
            return
        elapsed = self.current_run.elapsed_s()
        percent = self.progress_bar.value()
        remaining = f", about {clock(elapsed * (100 - percent) / percent)} left" if 0 < percent < 100 else ""
        self.status_label.setText(f"Running {self.current_run.algorithm_id}: {clock(elapsed)} elapsed{remaining}")

    def show_info(self, text: str) -> None:
        record = parse_epoch(text)
        if record is not None:
            self.curves.add_epoch(record)
        log(text)

    def show_evaluation(self, results: dict) -> None:
        cells = ((0, 0, "TP"), (0, 1, "FN"), (1, 0, "FP"), (1, 1, "TN"))
        for row, column, name in cells:
            self.matrix_table.setItem(row, column, QTableWidgetItem(f"{results[name]:,.0f}"))
        scores = ", ".join(f"{name.lower().replace('_', ' ')} {results[name]:.3f}"
                           for name in ("ACCURACY", "PRECISION", "RECALL", "F1", "IOU", "KAPPA"))
        report = Path(results["OUTPUT_REPORT"]).as_uri()
        self.scores_label.setText(f"{scores}. <a href=\"{report}\">Open the report</a>")
