"""The dock: pick layers and a model, press Train, Predict or Evaluate.

Each button runs the provider's own Processing algorithm (train, extract, evaluate) as a background
task, so the dock and the toolbox share one code path and QGIS never freezes. Results are added to the
project, styled, when the task has finished. The layout is meant for a narrow (~350 px) dock: forms wrap
their labels above the fields when space runs out, buttons sit in a grid, everything scrolls vertically.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional

from qgis.core import (
    Qgis,
    QgsMapLayer,
    QgsMapLayerProxyModel,
    QgsProcessingUtils,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.gui import QgsCheckableComboBox, QgsDockWidget, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QProcess, Qt, QTimer
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from . import DISPLAY_NAME
from .algorithms.train import PRESETS
from .curves import CurvesWidget
from .dependencies import dependency_problem, install_arguments, install_command, missing_requirements
from .epochs import parse_epoch
from .layers import add_styled_layer
from .log import log
from .tasks import AlgorithmRun

ERROR_STYLE = "QLabel { color: #a40000; }"


def file_stem(name: str) -> str:
    """A layer name as a safe file-name stem."""
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "layer"


def natural_key(name: str) -> list:
    """'scene_10' after 'scene_2': the order in which ticked images and labels are paired."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def is_label_layer(layer: QgsMapLayer) -> bool:
    return isinstance(layer, QgsRasterLayer) or (
        isinstance(layer, QgsVectorLayer) and layer.geometryType() == QgsWkbTypes.GeometryType.PolygonGeometry)


def narrow_form(parent: Optional[QWidget] = None) -> QFormLayout:
    """A form whose labels go above their fields when the dock is too narrow for both side by side."""
    form = QFormLayout(parent)
    form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    return form


def shrinkable(widget: QWidget) -> QWidget:
    """Lets a combo box, file widget or line edit get narrower than its text (the text is elided)."""
    widget.setMinimumWidth(60)
    widget.setSizePolicy(QSizePolicy.Policy.Ignored, widget.sizePolicy().verticalPolicy())
    if isinstance(widget, QComboBox):
        widget.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        widget.setMinimumContentsLength(6)
    return widget


class LayerChecklist(QgsCheckableComboBox):
    """The project's layers that ``accepts`` takes, to tick several, in natural name order (the order in
    which ticked images are paired with ticked labels). Follows layers being added and removed."""

    def __init__(self, accepts: Callable[[QgsMapLayer], bool], parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.accepts = accepts
        self.setDefaultText("tick one or more layers")
        QgsProject.instance().layersAdded.connect(self.refresh)
        QgsProject.instance().layersRemoved.connect(self.refresh)
        self.refresh()

    def refresh(self, *_) -> None:
        ticked = set(self.checkedItemsData())
        layers = sorted((layer for layer in QgsProject.instance().mapLayers().values() if self.accepts(layer)),
                        key=lambda layer: natural_key(layer.name()))
        self.blockSignals(True)
        self.clear()
        for layer in layers:
            state = Qt.CheckState.Checked if layer.id() in ticked else Qt.CheckState.Unchecked
            self.addItemWithCheckState(layer.name(), state, layer.id())
        self.blockSignals(False)
        self.checkedItemsChanged.emit(self.checkedItems())

    def ticked_layers(self) -> list[QgsMapLayer]:
        project = QgsProject.instance()
        return [layer for layer in map(project.mapLayer, self.checkedItemsData()) if layer is not None]

    def tick(self, layers: list[QgsMapLayer]) -> None:
        ids = {layer.id() for layer in layers}
        for index in range(self.count()):
            self.setItemCheckState(index, Qt.CheckState.Checked if self.itemData(index) in ids
                                   else Qt.CheckState.Unchecked)
        self.checkedItemsChanged.emit(self.checkedItems())  # setItemCheckState does not emit it


class BuildingsDock(QgsDockWidget):
    def __init__(self, iface, parent: Optional[QWidget] = None) -> None:
        super().__init__(DISPLAY_NAME, parent)
        self.setObjectName("UNetBuildingsDock")
        self.iface = iface
        self.current_run: Optional[AlgorithmRun] = None
        self.install_process: Optional[QProcess] = None
        self.clock_timer = QTimer(self)
        self.clock_timer.setInterval(1000)
        self.clock_timer.timeout.connect(self.show_time)
        self._build()
        self.problem = dependency_problem()
        self.install_arguments = install_arguments(missing_requirements()) if self.problem else []
        self.dependency_label.setVisible(bool(self.problem))
        self.dependency_label.setText(self.problem or "")
        self.install_button.setVisible(bool(self.problem))
        self.set_running(False)
        self.device_label.setText(self.describe_device())

    # -- widgets -------------------------------------------------------------------------------
    def _build(self) -> None:
        body = QWidget()
        layout = QVBoxLayout(body)

        self.dependency_label = QLabel()
        self.dependency_label.setWordWrap(True)
        self.dependency_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.dependency_label.setStyleSheet(ERROR_STYLE)
        layout.addWidget(self.dependency_label)
        self.install_button = QPushButton("Install the missing modules...")
        self.install_button.setToolTip("Shows the exact command and asks before running it.")
        self.install_button.clicked.connect(self.offer_install)
        layout.addWidget(self.install_button)

        form = narrow_form()
        self.image_combo = shrinkable(QgsMapLayerComboBox())
        self.image_combo.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.image_combo.setToolTip("The image Predict finds buildings in.")
        form.addRow("Image", self.image_combo)
        self.model_widget = shrinkable(QgsFileWidget())
        self.model_widget.setFilter("Model files (*.pt)")
        self.model_widget.fileChanged.connect(self.show_model_history)
        form.addRow("Model file", self.model_widget)
        self.output_widget = shrinkable(QgsFileWidget())
        self.output_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.output_widget.lineEdit().setPlaceholderText("temporary folder")
        form.addRow("Output folder", self.output_widget)
        self.building_values_edit = shrinkable(QLineEdit("2"))
        self.building_values_edit.setToolTip("Label raster values that mean building, comma-separated.")
        form.addRow("Building values", self.building_values_edit)
        layout.addLayout(form)

        training = QGroupBox("Training")
        training_form = narrow_form(training)
        self.train_images = shrinkable(LayerChecklist(lambda layer: isinstance(layer, QgsRasterLayer)))
        self.train_images.setToolTip("Tick the images to train on.")
        training_form.addRow("Images", self.train_images)
        self.train_labels = shrinkable(LayerChecklist(is_label_layer))
        self.train_labels.setToolTip("Tick one label layer (class raster or building polygons) per image: they are "
                                     "paired with the images in name order.")
        training_form.addRow("Labels", self.train_labels)
        self.pairs_label = QLabel()
        self.pairs_label.setWordWrap(True)
        training_form.addRow(self.pairs_label)
        for checklist in (self.train_images, self.train_labels):
            checklist.checkedItemsChanged.connect(self.show_pairs)
        self.preset_combo = shrinkable(QComboBox())
        self.preset_combo.addItems(PRESETS)
        training_form.addRow("Preset", self.preset_combo)
        self.epochs_spin = shrinkable(QSpinBox())
        self.epochs_spin.setRange(0, 1000)
        self.epochs_spin.setSpecialValueText("preset's value")
        training_form.addRow("Epochs", self.epochs_spin)
        layout.addWidget(training)

        buttons = QGridLayout()
        self.train_button = QPushButton("Train")
        self.predict_button = QPushButton("Predict")
        self.evaluate_button = QPushButton("Evaluate")
        self.cancel_button = QPushButton("Cancel")
        for index, (button, slot) in enumerate(((self.train_button, self.train), (self.predict_button, self.predict),
                                                (self.evaluate_button, self.evaluate),
                                                (self.cancel_button, self.cancel))):
            button.clicked.connect(slot)
            buttons.addWidget(button, index // 2, index % 2)
        layout.addLayout(buttons)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        layout.addWidget(self.progress_bar)
        self.time_label = QLabel()
        layout.addWidget(self.time_label)
        self.status_label = QLabel("Ready.")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self.device_label = QLabel()
        self.device_label.setWordWrap(True)
        layout.addWidget(self.device_label)

        self.curves = CurvesWidget()
        layout.addWidget(self.curves)

        evaluation = QGroupBox("Evaluation")
        evaluation_layout = QVBoxLayout(evaluation)
        evaluation_form = narrow_form()
        self.prediction_combo = shrinkable(QgsMapLayerComboBox())
        self.prediction_combo.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer |
                                         QgsMapLayerProxyModel.Filter.PolygonLayer)
        self.prediction_combo.setAllowEmptyLayer(True)
        self.prediction_combo.setLayer(None)
        evaluation_form.addRow("Prediction", self.prediction_combo)
        self.reference_combo = shrinkable(QgsMapLayerComboBox())
        self.reference_combo.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer |
                                        QgsMapLayerProxyModel.Filter.PolygonLayer)
        self.reference_combo.setAllowEmptyLayer(True)
        self.reference_combo.setLayer(None)
        self.reference_combo.setToolTip("The labels the prediction is scored against.")
        evaluation_form.addRow("Labels", self.reference_combo)
        evaluation_layout.addLayout(evaluation_form)
        self.matrix_table = QTableWidget(2, 2)
        self.matrix_table.setHorizontalHeaderLabels(["pred. building", "pred. other"])
        self.matrix_table.setVerticalHeaderLabels(["building", "other"])
        self.matrix_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.matrix_table.setMaximumHeight(90)
        self.matrix_table.setMinimumWidth(60)
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
        self.show_pairs()

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

    def training_pairs(self) -> tuple[list[QgsMapLayer], list[QgsMapLayer], str]:
        """(images, labels, problem): the ticked layers and, when they cannot be paired, why not."""
        images, labels = self.train_images.ticked_layers(), self.train_labels.ticked_layers()
        if not images:
            return images, labels, "Tick the images to train on and one label layer per image."
        if len(images) != len(labels):
            return images, labels, (f"{len(images)} image(s) but {len(labels)} label layer(s) ticked: tick one "
                                    "label layer per image (they are paired in name order).")
        return images, labels, ""

    def show_pairs(self, *_) -> None:
        images, labels, problem = self.training_pairs()
        self.pairs_label.setStyleSheet(ERROR_STYLE if problem and images else "")
        self.pairs_label.setText(problem if problem else "\n".join(
            f"{image.name()} ↔ {label.name()}" for image, label in zip(images, labels)))

    def require(self, value, what: str) -> bool:
        if not value:
            self.tell(f"Pick {what} first.", Qgis.MessageLevel.Warning)
        return bool(value)

    def tell(self, text: str, level: Qgis.MessageLevel = Qgis.MessageLevel.Info) -> None:
        """The status line and the plugin's log tab; warnings and errors also to the message bar (errors
        stay until closed, so a failure that happens while the user looks elsewhere is not missed)."""
        self.status_label.setText(text)
        log(text, level)
        if level != Qgis.MessageLevel.Info:
            self.iface.messageBar().pushMessage(DISPLAY_NAME, text, level,
                                                0 if level == Qgis.MessageLevel.Critical else 8)

    def show_model_history(self, path: str) -> None:
        """The training curves recorded in a model file, so a model's quality shows when it is picked."""
        if self.problem or self.current_run is not None or not path or not Path(path).is_file():
            return
        from ..model.errors import EngineError
        from ..model.modelfile import read_payload

        try:
            history = read_payload(Path(path))["info"].get("history", [])
        except EngineError as error:
            self.tell(str(error), Qgis.MessageLevel.Warning)
            return
        self.curves.clear()
        for record in history:
            self.curves.add_epoch(record)

    # -- actions -------------------------------------------------------------------------------
    def train(self) -> None:
        images, labels, problem = self.training_pairs()
        if problem:
            self.tell(problem, Qgis.MessageLevel.Warning)
            return
        parameters = {"IMAGES": [layer.id() for layer in images], "LABELS": [layer.id() for layer in labels],
                      "BUILDING_VALUES": self.building_values_edit.text(),
                      "PRESET": self.preset_combo.currentText(),
                      "OUTPUT_MODEL": str(self.output_folder() / f"{file_stem(images[0].name())}_model.pt")}
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
            # the outlines say what the mask says: the mask starts switched off so the probability shows
            mask = add_styled_layer(results["OUTPUT_MASK"], f"{name} building mask", "mask", visible=False)
            add_styled_layer(results["OUTPUT"], f"{name} buildings", "buildings")
            if mask is not None:
                self.prediction_combo.setLayer(mask)
            self.tell(f"{results['BUILDING_COUNT']:.0f} buildings found.", Qgis.MessageLevel.Success)

        self.start("extract", parameters, predicted)

    def evaluate(self) -> None:
        prediction, labels = self.prediction_combo.currentLayer(), self.reference_combo.currentLayer()
        if not (self.require(prediction, "a prediction layer (press Predict first)")
                and self.require(labels, "the label layer to score against (Evaluation > Labels)")):
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
        if self.install_process is not None:
            self.install_process.kill()

    # -- installing what is missing ------------------------------------------------------------
    def confirm_install(self, command: str) -> bool:
        box = QMessageBox(QMessageBox.Icon.Question, DISPLAY_NAME,
                          "Install the missing Python modules by running this command?", parent=self)
        box.setInformativeText(f"{command}\n\nIt downloads the packages from the Python Package Index (torch is "
                               "large: several minutes). Restart QGIS when it has finished.")
        box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box.exec()
        return box.clickedButton() is box.button(QMessageBox.StandardButton.Yes)

    def offer_install(self) -> None:
        """Runs the install command, in the background, only after the user has read it and said yes."""
        if not self.install_arguments or self.install_process is not None:
            return
        command = install_command(self.install_arguments)
        if not self.confirm_install(command):
            self.tell(f"Nothing was installed. To install yourself, run: {command}")
            return
        log(f"Running: {command}")
        process = QProcess(self)
        process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        process.readyReadStandardOutput.connect(
            lambda: log(bytes(process.readAllStandardOutput()).decode(errors="replace").rstrip()))
        process.finished.connect(self.installed)
        process.errorOccurred.connect(self.install_failed_to_start)
        self.install_process = process
        self.set_running(True)
        self.status_label.setText(f"Installing (output in the log tab '{DISPLAY_NAME}')...")
        process.start(self.install_arguments[0], self.install_arguments[1:])

    def installed(self, exit_code: int, _status=None) -> None:
        self.install_process = None
        self.set_running(False)
        if exit_code == 0:
            self.tell("Installed. Restart QGIS to use the plugin.", Qgis.MessageLevel.Success)
        else:
            self.tell(f"The install command failed (exit code {exit_code}); its output is in the log tab "
                      f"'{DISPLAY_NAME}'.", Qgis.MessageLevel.Critical)

    def install_failed_to_start(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.install_process = None
            self.set_running(False)
            self.tell(f"Could not start {self.install_arguments[0]}: run the command yourself in a terminal.",
                      Qgis.MessageLevel.Critical)

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
        self.show_time()

    def finish(self, ok: bool, results: dict, error: str, on_success: Callable[[dict], None]) -> None:
        run, self.current_run = self.current_run, None
        self.set_running(False)
        if run is not None:
            self.time_label.setText(f"{run.algorithm_id} took {clock(run.elapsed_s())}")
            run.deleteLater()
        if ok:
            self.progress_bar.setValue(100)
            on_success(results)
        else:
            self.tell(error, Qgis.MessageLevel.Critical if "ancel" not in error else Qgis.MessageLevel.Warning)

    def set_running(self, running: bool) -> None:
        for button in (self.train_button, self.predict_button, self.evaluate_button):
            button.setEnabled(not running and not self.problem)
        self.install_button.setEnabled(not running)
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
        # a linear estimate: good enough once a few percent are done, and said to be rough
        remaining = f", about {clock(elapsed * (100 - percent) / percent)} left" if 0 < percent < 100 else ""
        self.time_label.setText(f"{clock(elapsed)} elapsed{remaining}")

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
