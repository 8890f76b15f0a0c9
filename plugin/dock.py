"""The dock: pick layers and a model, press Train, Predict, Evaluate or Export for Deepness.

Each button runs the provider's own Processing algorithm (train, extract, evaluate, export) as a
background task, so the dock and the toolbox share one code path and QGIS never freezes. Results are added
to the project, styled, in a group per run at the top of the layer tree, when the task has finished. Files
go to a real folder (the user's choice, remembered; else beside the project file or the image) under names
that never replace an earlier run's. The layout is meant for a narrow (~350 px) dock: forms wrap their
labels above the fields when space runs out, buttons sit in a grid, everything scrolls vertically.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Optional

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapLayer,
    QgsMapLayerProxyModel,
    QgsProcessingUtils,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsSettings,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.gui import QgsCheckableComboBox, QgsDockWidget, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QProcess, Qt, QTimer
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
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

from . import DISPLAY_NAME, PROVIDER_ID
from .algorithms.predict import starter_model
from .algorithms.train import PRESETS
from .curves import CurvesWidget
from .dependencies import dependency_problem, install_arguments, install_command, missing_requirements
from .epochs import parse_epoch
from .layers import add_result_group, add_styled_layer, is_plugin_output, layer_file
from .log import log
from .tasks import AlgorithmRun

ERROR_STYLE = "QLabel { color: #a40000; }"
SETTINGS_GROUP = "unet_buildings/dock/"
DEFAULT_TRAINING_MINUTES = 30
DEFAULT_MIN_AREA_M2 = 2.0  # speckles below this are no buildings (the toolbox default keeps every blob)
DEFAULT_SIMPLIFY_M = 0.2  # about a pixel of 0.1-0.3 m imagery: removes the staircase, keeps the corners
MAX_MESSAGE_CHARS = 500
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# parts of a library's message that are advice for programmers, not for the person at the map
NOT_FOR_USERS = re.compile(r"weights_only|Traceback|safe_globals|add_safe_globals|pytorch\.org", re.IGNORECASE)


def setting(key: str, default=None):
    return QgsSettings().value(SETTINGS_GROUP + key, default)


def remember(key: str, value) -> None:
    QgsSettings().setValue(SETTINGS_GROUP + key, value)


def readable(text: str) -> str:
    """An error as one plain line for the dock and the message bar (the log keeps the whole text): no
    terminal escape codes, no parenthesised library advice (torch's "weights_only=False" among it), no
    line breaks, at most MAX_MESSAGE_CHARS characters."""
    text = ANSI_ESCAPE.sub("", text)
    kept, depth, start = [], 0, 0
    for index, character in enumerate(text):  # drop "( ... )" groups that hold programmer advice
        if character == "(":
            if depth == 0:
                kept.append(text[start:index])
                start = index
            depth += 1
        elif character == ")" and depth:
            depth -= 1
            if depth == 0:
                group = text[start:index + 1]
                if not NOT_FOR_USERS.search(group) and "\n" not in group:
                    kept.append(group)
                start = index + 1
    kept.append(text[start:])
    lines = [line for line in " ".join(kept).splitlines() if line.strip() and not NOT_FOR_USERS.search(line)]
    line = re.sub(r"\s+", " ", " ".join(lines)).strip()
    line = re.sub(r"\s+([.,;:])(?=\s|$)", r"\1", line)  # where a dropped group left "word ."
    if len(line) > MAX_MESSAGE_CHARS:
        line = line[:MAX_MESSAGE_CHARS].rsplit(" ", 1)[0] + "... (the whole message is in the log)"
    return line or "The run failed: the details are in the log."


def breakable(text: str) -> str:
    """Long paths get break opportunities (zero-width spaces after separators), so a word-wrapped label
    wraps them instead of widening the dock."""
    return re.sub(r"([/\\_.-])(?=\S)", "\\1\u200b", text)


def numbered(folder: Path, names: list[str]) -> list[Path]:
    """``names`` holding ``{n}`` in ``folder``, with the first run number none of whose files exists yet:
    '' for the first run, then '_2', '_3'... so nothing written earlier is ever replaced."""
    number = 1
    while True:
        suffix = "" if number == 1 else f"_{number}"
        paths = [folder / name.format(n=suffix) for name in names]
        if not any(path.exists() for path in paths):
            return paths
        number += 1


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


def is_image_layer(layer: QgsMapLayer) -> bool:
    return isinstance(layer, QgsRasterLayer) and not is_plugin_output(layer)


def is_label_layer(layer: QgsMapLayer) -> bool:
    return (isinstance(layer, QgsRasterLayer) or (
        isinstance(layer, QgsVectorLayer) and layer.geometryType() == QgsWkbTypes.GeometryType.PolygonGeometry)) \
        and not is_plugin_output(layer)


def label_values(layer: QgsMapLayer) -> Optional[tuple[list[int], Optional[float]]]:
    """(class values, nodata value) of a byte label raster, from a sample of its pixels; None for other
    layers (polygons, non-byte rasters)."""
    if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
        return None
    provider = layer.dataProvider()
    if provider.dataType(1) != Qgis.DataType.Byte:
        return None
    histogram = provider.histogram(1, 256, -0.5, 255.5, QgsRectangle(), 250_000)
    values = [value for value, count in enumerate(histogram.histogramVector) if count]
    nodata = provider.sourceNoDataValue(1) if provider.sourceHasNoDataValue(1) else None
    return [value for value in values if value != nodata], nodata


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
        self.quiet = False  # True while the dock itself changes layers and pickers: that makes nothing stale
        self.clock_timer = QTimer(self)
        self.clock_timer.setInterval(1000)
        self.clock_timer.timeout.connect(self.show_time)
        self.problem = dependency_problem()
        self._build()
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
        self.model_widget = shrinkable(QgsFileWidget())
        self.model_widget.setFilter("Model files (*.pt)")
        self.model_widget.fileChanged.connect(self.show_model_history)
        form.addRow("Model file", self.model_widget)
        self.output_widget = shrinkable(QgsFileWidget())
        self.output_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.output_widget.lineEdit().setPlaceholderText("beside the project file, else beside the image")
        self.output_widget.setToolTip("Where models, rasters, buildings and reports are written. Empty: the project "
                                      "file's folder, else the image's folder. Your choice is remembered.")
        form.addRow("Output folder", self.output_widget)
        self.building_values_edit = shrinkable(QLineEdit(str(setting("building_values", "1"))))
        self.building_values_edit.setToolTip("Label raster values that mean building, comma-separated. Remembered.")
        self.building_values_edit.editingFinished.connect(
            lambda: remember("building_values", self.building_values_edit.text().strip()))
        form.addRow("Building values", self.building_values_edit)
        layout.addLayout(form)

        training = QGroupBox("Training")
        training_form = narrow_form(training)
        self.train_images = shrinkable(LayerChecklist(is_image_layer))
        self.train_images.setToolTip("Tick the images to train on.")
        training_form.addRow("Images", self.train_images)
        self.train_labels = shrinkable(LayerChecklist(is_label_layer))
        self.train_labels.setToolTip("Tick one label layer (class raster or building polygons) per image: they are "
                                     "paired with the images in name order.")
        training_form.addRow("Labels", self.train_labels)
        self.pairs_label = QLabel()
        self.pairs_label.setWordWrap(True)
        training_form.addRow(self.pairs_label)
        self.label_values_label = QLabel()
        self.label_values_label.setWordWrap(True)
        training_form.addRow(self.label_values_label)
        for checklist in (self.train_images, self.train_labels):
            checklist.checkedItemsChanged.connect(self.show_pairs)
        self.train_labels.checkedItemsChanged.connect(self.show_label_values)
        self.preset_combo = shrinkable(QComboBox())
        self.preset_combo.addItems(PRESETS)
        training_form.addRow("Preset", self.preset_combo)
        self.epochs_spin = shrinkable(QSpinBox())
        self.epochs_spin.setRange(0, 1000)
        self.epochs_spin.setSpecialValueText("preset's value")
        training_form.addRow("Epochs", self.epochs_spin)
        self.minutes_spin = shrinkable(QSpinBox())
        self.minutes_spin.setRange(0, 10_000)
        self.minutes_spin.setSuffix(" minutes")
        self.minutes_spin.setSpecialValueText("preset's value")
        self.minutes_spin.setValue(DEFAULT_TRAINING_MINUTES)
        self.minutes_spin.setToolTip("Training stops after this time with the best model so far (the preset's "
                                     "value: 30 minutes on a computer without a GPU).")
        training_form.addRow("Train for", self.minutes_spin)
        layout.addWidget(training)

        prediction = QGroupBox("Prediction")
        prediction_form = narrow_form(prediction)
        self.image_combo = shrinkable(QgsMapLayerComboBox())
        self.image_combo.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.image_combo.setExceptedLayerList([])
        self.image_combo.setToolTip("The image Predict finds buildings in.")
        prediction_form.addRow("Image", self.image_combo)
        self.threshold_spin = shrinkable(QDoubleSpinBox())
        self.threshold_spin.setRange(0.0, 1.0)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setSpecialValueText("model's tuned value")
        self.threshold_spin.setToolTip("Probability from which a pixel counts as building.")
        prediction_form.addRow("Threshold", self.threshold_spin)
        self.min_area_spin = shrinkable(QDoubleSpinBox())
        self.min_area_spin.setRange(0.0, 100_000.0)
        self.min_area_spin.setDecimals(1)
        self.min_area_spin.setSuffix(" m²")
        self.min_area_spin.setValue(DEFAULT_MIN_AREA_M2)
        self.min_area_spin.setToolTip("Smaller blobs are dropped (square map units of the image's CRS).")
        prediction_form.addRow("Minimum area", self.min_area_spin)
        self.simplify_spin = shrinkable(QDoubleSpinBox())
        self.simplify_spin.setRange(0.0, 100.0)
        self.simplify_spin.setDecimals(2)
        self.simplify_spin.setSingleStep(0.1)
        self.simplify_spin.setSuffix(" m")
        self.simplify_spin.setValue(DEFAULT_SIMPLIFY_M)
        self.simplify_spin.setToolTip("Outline simplification tolerance (map units of the image's CRS).")
        prediction_form.addRow("Simplify", self.simplify_spin)
        self.regularize_check = shrinkable(QCheckBox("Square corners"))
        self.regularize_check.setToolTip("Regularise the outlines: right angles along each building's main direction.")
        prediction_form.addRow(self.regularize_check)
        self.visible_area_check = shrinkable(QCheckBox("Only the visible map area"))
        self.visible_area_check.setToolTip("Predict only the part of the image inside the map canvas's extent.")
        prediction_form.addRow(self.visible_area_check)
        layout.addWidget(prediction)

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
        self.export_button = QPushButton("Export for Deepness")
        self.export_button.setToolTip("Writes the model file as ONNX for the Deepness plugin, in the output folder.")
        self.export_button.clicked.connect(self.export)
        buttons.addWidget(self.export_button, 2, 0, 1, 2)
        layout.addLayout(buttons)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        layout.addWidget(self.progress_bar)
        self.time_label = QLabel()
        layout.addWidget(self.time_label)
        self.status_label = QLabel("Ready.")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # a long message wraps: it never widens the dock and pushes the buttons out of sight
        self.status_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.status_label.setMinimumWidth(60)
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
        # two-line headers: "predicted building" fits a narrow dock without being clipped
        self.matrix_table.setHorizontalHeaderLabels(["predicted\nbuilding", "predicted\nother"])
        self.matrix_table.setVerticalHeaderLabels(["true\nbuilding", "true\nother"])
        self.matrix_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.matrix_table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.matrix_table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.matrix_table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.matrix_table.setMinimumWidth(60)
        self.matrix_table.setFixedHeight(self.matrix_table.horizontalHeader().sizeHint().height()
                                         + sum(self.matrix_table.verticalHeader().sectionSizeHint(row)
                                               for row in (0, 1)) + 2 * self.matrix_table.frameWidth() + 2)
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

        remembered = setting("output_folder", "")
        if remembered and Path(remembered).is_dir():
            self.output_widget.setFilePath(remembered)
        self.output_widget.fileChanged.connect(self.remember_output_folder)
        starter = starter_model()
        if starter is not None:
            self.model_widget.setFilePath(str(starter))
            self.model_widget.setToolTip(f"Default: the starter model shipped with the plugin ({starter.name}).")
        for combo in (self.image_combo, self.prediction_combo, self.reference_combo):
            combo.layerChanged.connect(self.inputs_changed)
        for checklist in (self.train_images, self.train_labels):
            checklist.checkedItemsChanged.connect(self.inputs_changed)
        QgsProject.instance().layersRemoved.connect(self.inputs_changed)
        self.show_pairs()

    def describe_device(self) -> str:
        if self.problem:
            return "Device: none (the engine's Python modules are missing, see above)"
        from ..model.device import describe_device, resolve_device

        return f"Device: {describe_device(resolve_device('auto'))}"

    # -- inputs --------------------------------------------------------------------------------
    def remember_output_folder(self, path: str) -> None:
        if path:
            remember("output_folder", path)

    def default_output_folder(self, near: Optional[QgsMapLayer]) -> Optional[Path]:
        """The project file's folder, else the folder of ``near``'s file: the first one that can be written."""
        near_file = layer_file(near) if near is not None else ""
        candidates = [QgsProject.instance().absolutePath(), str(Path(near_file).parent) if near_file else ""]
        for folder in candidates:
            if folder and Path(folder).is_dir() and os.access(folder, os.W_OK):
                return Path(folder)
        return None

    def output_folder(self, near: Optional[QgsMapLayer] = None) -> Path:
        """Where a run writes: the chosen folder, else beside the project or ``near``'s file. Only when none
        of them can be written, the temporary folder, and the user is told plainly that it is temporary."""
        chosen = self.output_widget.filePath()
        if chosen:
            folder = Path(chosen)
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        folder = self.default_output_folder(near)
        if folder is not None:
            return folder
        folder = Path(QgsProcessingUtils.tempFolder())
        self.tell(f"No output folder is chosen and neither the project's nor the image's folder can be written: "
                  f"the results go to the temporary folder {folder}, which QGIS deletes when it quits. Choose an "
                  "output folder to keep them.", Qgis.MessageLevel.Warning)
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

    def show_label_values(self, *_) -> None:
        """Says which values the first ticked label raster holds, and picks building value 1 for 0/1 labels
        when the building values set match nothing in them."""
        found = next(((layer, values) for layer in self.train_labels.ticked_layers()
                      if (values := label_values(layer)) is not None), None)
        if found is None:
            self.label_values_label.setText("")
            return
        layer, (values, nodata) = found
        text = f"'{layer.name()}' holds the values {', '.join(map(str, values)) or 'none'}"
        text += f" ({nodata:g} = no data)." if nodata is not None else "."
        chosen = {part.strip() for part in self.building_values_edit.text().replace(";", ",").split(",")
                  if part.strip()}
        if values and not chosen & {str(value) for value in values}:
            if set(values) <= {0, 1}:
                self.building_values_edit.setText("1")
                text += " Building values set to 1."
            else:
                text += f" None of the building values ({self.building_values_edit.text()}) is among them."
        self.label_values_label.setText(text)

    def inputs_changed(self, *_) -> None:
        """The layers changed: what the dock says about the previous inputs is stale."""
        if self.quiet or self.current_run is not None:
            return
        self.clear_results()
        self.status_label.setText("Ready.")
        self.status_label.setStyleSheet("")

    def clear_results(self) -> None:
        self.time_label.setText("")
        self.matrix_table.clearContents()
        self.scores_label.setText("")

    def require(self, value, what: str) -> bool:
        if not value:
            self.tell(f"Pick {what} first.", Qgis.MessageLevel.Warning)
        return bool(value)

    def tell(self, text: str, level: Qgis.MessageLevel = Qgis.MessageLevel.Info) -> None:
        """The status line and the message bar get one readable line; the plugin's log tab the whole text.
        Warnings and errors also go to the message bar (errors stay until closed, so a failure that happens
        while the user looks elsewhere is not missed)."""
        line = readable(text)
        self.status_label.setText(breakable(line))
        self.status_label.setStyleSheet(ERROR_STYLE if level == Qgis.MessageLevel.Critical else "")
        log(text, level)
        if level != Qgis.MessageLevel.Info:
            self.iface.messageBar().pushMessage(DISPLAY_NAME, line, level,
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
        model_path, = numbered(self.output_folder(images[0]), [f"{file_stem(images[0].name())}_model{{n}}.pt"])
        parameters = {"IMAGES": [layer.id() for layer in images], "LABELS": [layer.id() for layer in labels],
                      "BUILDING_VALUES": self.building_values_edit.text(),
                      "PRESET": self.preset_combo.currentText(),
                      "OUTPUT_MODEL": str(model_path)}
        if self.epochs_spin.value():
            parameters["EPOCHS"] = self.epochs_spin.value()
        if self.minutes_spin.value() and algorithm_takes("train", "TIME_BUDGET_MIN"):
            parameters["TIME_BUDGET_MIN"] = self.minutes_spin.value()
        remember("building_values", self.building_values_edit.text().strip())
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
        stem = file_stem(image.name())
        buildings, probability, mask = numbered(self.output_folder(image), [
            f"{stem}_buildings{{n}}.gpkg", f"{stem}_probability{{n}}.tif", f"{stem}_mask{{n}}.tif"])
        parameters = {"INPUT": image.id(), "MODEL": model, "OUTPUT": str(buildings),
                      "OUTPUT_PROBABILITY": str(probability), "OUTPUT_MASK": str(mask),
                      "MIN_AREA": self.min_area_spin.value(), "SIMPLIFY": self.simplify_spin.value(),
                      "REGULARIZE": self.regularize_check.isChecked()}
        if self.threshold_spin.value() > 0:
            parameters["THRESHOLD"] = self.threshold_spin.value()
        if self.visible_area_check.isChecked():
            parameters["EXTENT"] = self.canvas_extent()
        run_name = buildings.stem.replace("_buildings", " buildings", 1) if buildings.stem != f"{stem}_buildings" \
            else f"{image.name()} buildings"

        def predicted(results: dict) -> None:
            name = image.name()
            group = add_result_group(run_name)
            add_styled_layer(results["OUTPUT"], f"{name} buildings", "buildings", group=group)
            # the outlines say what the mask says: the mask starts switched off so the probability shows
            mask_layer = add_styled_layer(results["OUTPUT_MASK"], f"{name} building mask", "mask", visible=False,
                                          group=group)
            add_styled_layer(results["OUTPUT_PROBABILITY"], f"{name} building probability", "probability",
                             group=group)
            if mask_layer is not None:
                self.prediction_combo.setLayer(mask_layer)
            self.tell(f"{results['BUILDING_COUNT']:.0f} buildings found; written to {buildings.parent}.",
                      Qgis.MessageLevel.Success)

        self.start("extract", parameters, predicted)

    def canvas_extent(self) -> str:
        """The map canvas's extent as a Processing extent value (with its CRS)."""
        canvas = self.iface.mapCanvas()
        extent, crs = canvas.extent(), canvas.mapSettings().destinationCrs()
        return (f"{extent.xMinimum()!r},{extent.xMaximum()!r},{extent.yMinimum()!r},{extent.yMaximum()!r} "
                f"[{crs.authid()}]")

    def evaluate(self) -> None:
        prediction, labels = self.prediction_combo.currentLayer(), self.reference_combo.currentLayer()
        if not (self.require(prediction, "a prediction layer (press Predict first)")
                and self.require(labels, "the label layer to score against (Evaluation > Labels)")):
            return
        stem = file_stem(prediction.name())
        report, error_map, false_positives, missed = numbered(self.output_folder(prediction), [
            f"{stem}_evaluation{{n}}.html", f"{stem}_errors{{n}}.tif", f"{stem}_false_positives{{n}}.gpkg",
            f"{stem}_missed{{n}}.gpkg"])
        parameters = {"PREDICTION": prediction.id(), "LABELS": labels.id(),
                      "BUILDING_VALUES": self.building_values_edit.text(),
                      "OUTPUT_REPORT": str(report), "OUTPUT_ERROR_MAP": str(error_map)}
        if algorithm_takes("evaluate", "OUTPUT_MISSED"):
            parameters.update(OUTPUT_FALSE_POSITIVES=str(false_positives), OUTPUT_MISSED=str(missed))

        def evaluated(results: dict) -> None:
            self.show_evaluation(results)
            group = add_result_group(f"{prediction.name()} evaluation")
            for key, title in (("OUTPUT_FALSE_POSITIVES", "false positives"), ("OUTPUT_MISSED", "missed buildings")):
                if results.get(key):
                    add_styled_layer(results[key], f"{prediction.name()} {title}", key.lower()[7:], group=group)
            add_styled_layer(results["OUTPUT_ERROR_MAP"], f"{prediction.name()} errors", "error_map", group=group)
            self.tell(f"IoU {results['IOU']:.3f}, F1 {results['F1']:.3f}.", Qgis.MessageLevel.Success)

        self.start("evaluate", parameters, evaluated)

    def export(self) -> None:
        model = self.model_widget.filePath()
        if not self.require(model, "a model file"):
            return
        # beside the model unless a folder is chosen (the starter model's folder is the plugin's: not there)
        folder = Path(model).parent
        if self.output_widget.filePath() or not os.access(folder, os.W_OK) or Path(model) == starter_model():
            folder = self.output_folder()
        onnx, = numbered(folder, [f"{file_stem(Path(model).stem)}{{n}}.onnx"])

        def exported(results: dict) -> None:
            self.tell(f"Written {results['OUTPUT']}: in Deepness, pick it as the model and press \"Load default "
                      "parameters\".", Qgis.MessageLevel.Success)

        self.start("export", {"MODEL": model, "OUTPUT": str(onnx)}, exported)

    def shut_down(self) -> None:
        """Before the plugin unloads or reloads: a running task is cancelled and waited for, so none
        of the plugin's code runs on once its modules are gone."""
        run, self.current_run = self.current_run, None
        if run is not None and not run.cancel_and_wait():
            log(f"The {run.algorithm_id} task had not stopped 30 s after it was cancelled.")
        if self.install_process is not None:
            self.install_process.kill()
            self.install_process.waitForFinished(5000)
            self.install_process = None

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
        self.clear_results()  # the previous run's time, matrix and scores say nothing about this one
        self.current_run = run
        self.set_running(True)
        self.progress_bar.setValue(0)
        self.status_label.setStyleSheet("")
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
            self.quiet = True  # the results it adds and picks are not a change of the user's inputs
            try:
                on_success(results)
            finally:
                self.quiet = False
        else:
            self.tell(error, Qgis.MessageLevel.Critical if "ancel" not in error else Qgis.MessageLevel.Warning)

    def set_running(self, running: bool) -> None:
        run_buttons = (self.train_button, self.predict_button, self.evaluate_button, self.export_button)
        # Cancel first, and the focus onto it: a disabled button with the focus hands it on to the next
        # widget down the dock, and the scroll area then scrolls that widget into view
        self.cancel_button.setEnabled(running)
        if running and any(button.hasFocus() for button in run_buttons):
            self.cancel_button.setFocus(Qt.FocusReason.OtherFocusReason)
        for button in run_buttons:
            button.setEnabled(not running and not self.problem)
        self.install_button.setEnabled(not running)
        if not running and self.cancel_button.hasFocus():
            self.cancel_button.clearFocus()
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


def algorithm_takes(algorithm_id: str, parameter: str) -> bool:
    """Whether the provider's algorithm has ``parameter`` (so the dock passes only what it understands)."""
    algorithm = QgsApplication.processingRegistry().algorithmById(f"{PROVIDER_ID}:{algorithm_id}")
    return algorithm is not None and algorithm.parameterDefinition(parameter) is not None
