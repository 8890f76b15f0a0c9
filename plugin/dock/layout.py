"""The dock's widgets and their layout, for a narrow (~350 px) dock: forms wrap their labels above the
fields when space runs out, buttons sit in a grid, everything scrolls vertically."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsMapLayerProxyModel
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QGroupBox,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from ...model.choices import BUILDING_VALUES_TEXT, DEFAULT_MIN_AREA_M2, DEFAULT_SIMPLIFY_M
from ...model.training.start_model import starter_model
from ..algorithms.train import PRESETS
from .curves import CurvesWidget
from .widgets import (
    DEFAULT_TRAINING_MINUTES,
    ERROR_STYLE,
    LayerChecklist,
    is_image_layer,
    is_label_layer,
    narrow_form,
    remember,
    setting,
    shrinkable,
)


class DockWidgets:
    """The dock's widgets, made and laid out; the dock connects them to what they do
    (``BuildingsDock.connect_widgets``) and reads them through ``DockInputs``."""

    def __init__(self) -> None:
        body = QWidget()
        layout = QVBoxLayout(body)

        self.dependency_label = QLabel()
        self.dependency_label.setWordWrap(True)
        self.dependency_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.dependency_label.setStyleSheet(ERROR_STYLE)
        layout.addWidget(self.dependency_label)
        self.install_button = QPushButton("Install the missing modules...")
        self.install_button.setToolTip("Shows the exact command and asks before running it.")
        layout.addWidget(self.install_button)

        form = narrow_form()
        self.model_widget = shrinkable(QgsFileWidget())
        self.model_widget.setFilter("Model files (*.pt)")
        form.addRow("Model file", self.model_widget)
        self.output_widget = shrinkable(QgsFileWidget())
        self.output_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.output_widget.lineEdit().setPlaceholderText("beside the project file, else beside the image")
        self.output_widget.setToolTip(
            "Where models, rasters, buildings and reports are written. Empty: the project "
            "file's folder, else the image's folder. Your choice is remembered."
        )
        form.addRow("Output folder", self.output_widget)
        self.building_values_edit = shrinkable(QLineEdit(str(setting("building_values", BUILDING_VALUES_TEXT))))
        self.building_values_edit.setToolTip("Label raster values that mean building, comma-separated. Remembered.")
        self.building_values_edit.editingFinished.connect(
            lambda: remember("building_values", self.building_values_edit.text().strip())
        )
        form.addRow("Building values", self.building_values_edit)
        layout.addLayout(form)

        training = QGroupBox("Training")
        training_form = narrow_form(training)
        self.train_images = shrinkable(LayerChecklist(is_image_layer))
        self.train_images.setToolTip("Tick the images to train on.")
        training_form.addRow("Images", self.train_images)
        self.train_labels = shrinkable(LayerChecklist(is_label_layer))
        self.train_labels.setToolTip(
            "Tick one label layer (class raster or building polygons) per image: they are "
            "paired with the images in name order."
        )
        training_form.addRow("Labels", self.train_labels)
        self.pairs_label = QLabel()
        self.pairs_label.setWordWrap(True)
        training_form.addRow(self.pairs_label)
        self.label_values_label = QLabel()
        self.label_values_label.setWordWrap(True)
        training_form.addRow(self.label_values_label)
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
        self.minutes_spin.setToolTip(
            "Training stops after this time with the best model so far (the preset's "
            "value: 30 minutes on a computer without a GPU)."
        )
        training_form.addRow("Train for", self.minutes_spin)
        self.adapt_check = shrinkable(QCheckBox("Adapt the model file above"))
        self.adapt_check.setChecked(True)
        self.adapt_check.setToolTip(
            "Training starts from the dock's model (the starter model by default) and keeps it unless the new "
            "model does better on your validation areas. Untick to train a new network from scratch, which "
            "needs many more labels and minutes to match it."
        )
        training_form.addRow(self.adapt_check)
        layout.addWidget(training)

        prediction = QGroupBox("Prediction")
        prediction_form = narrow_form(prediction)
        self.image_combo = shrinkable(QgsMapLayerComboBox())
        self.image_combo.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
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
        self.min_area_spin.setToolTip(
            "Smaller blobs are dropped (square metres on the ground, whatever the image's CRS)."
        )
        prediction_form.addRow("Minimum area", self.min_area_spin)
        self.simplify_spin = shrinkable(QDoubleSpinBox())
        self.simplify_spin.setRange(0.0, 100.0)
        self.simplify_spin.setDecimals(2)
        self.simplify_spin.setSingleStep(0.1)
        self.simplify_spin.setSuffix(" m")
        self.simplify_spin.setValue(DEFAULT_SIMPLIFY_M)
        self.simplify_spin.setToolTip(
            "Outline simplification tolerance (metres on the ground, whatever the image's CRS)."
        )
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
        for index, button in enumerate(
            (self.train_button, self.predict_button, self.evaluate_button, self.cancel_button)
        ):
            buttons.addWidget(button, index // 2, index % 2)
        self.export_button = QPushButton("Export for Deepness")
        self.export_button.setToolTip("Writes the model file as ONNX for the Deepness plugin, in the output folder.")
        buttons.addWidget(self.export_button, 2, 0, 1, 2)
        self.resume_button = QPushButton("Resume training")
        self.resume_button.setToolTip(
            "Continues the last training run that was cancelled or ran out of time, for the minutes set above."
        )
        buttons.addWidget(self.resume_button, 3, 0, 1, 2)
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
        self.prediction_combo.setFilters(
            QgsMapLayerProxyModel.Filter.RasterLayer | QgsMapLayerProxyModel.Filter.PolygonLayer
        )
        self.prediction_combo.setAllowEmptyLayer(True)
        self.prediction_combo.setLayer(None)
        evaluation_form.addRow("Prediction", self.prediction_combo)
        self.reference_combo = shrinkable(QgsMapLayerComboBox())
        self.reference_combo.setFilters(
            QgsMapLayerProxyModel.Filter.RasterLayer | QgsMapLayerProxyModel.Filter.PolygonLayer
        )
        self.reference_combo.setAllowEmptyLayer(True)
        self.reference_combo.setLayer(None)
        self.reference_combo.setToolTip("The labels the prediction is scored against.")
        evaluation_form.addRow("Labels", self.reference_combo)
        evaluation_layout.addLayout(evaluation_form)
        self.matrix_table = QTableWidget(2, 2)
        # two-line headers: "predicted building" fits a narrow dock without being clipped
        self.matrix_table.setHorizontalHeaderLabels(["predicted\nother", "predicted\nbuilding"])
        self.matrix_table.setVerticalHeaderLabels(["true\nother", "true\nbuilding"])
        self.matrix_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.matrix_table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.matrix_table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.matrix_table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.matrix_table.setMinimumWidth(60)
        self.matrix_table.setFixedHeight(
            self.matrix_table.horizontalHeader().sizeHint().height()
            + sum(self.matrix_table.verticalHeader().sectionSizeHint(row) for row in (0, 1))
            + 2 * self.matrix_table.frameWidth()
            + 2
        )
        evaluation_layout.addWidget(self.matrix_table)
        self.scores_label = QLabel()
        self.scores_label.setWordWrap(True)
        evaluation_layout.addWidget(self.scores_label)
        layout.addWidget(evaluation)
        layout.addStretch()

        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        self.root = scroll  # what the dock shows

        remembered = setting("output_folder", "")
        if remembered and Path(remembered).is_dir():
            self.output_widget.setFilePath(remembered)
        starter = starter_model()
        if starter is not None:
            self.model_widget.setFilePath(str(starter))
            self.model_widget.setToolTip(f"Default: the starter model shipped with the plugin ({starter.name}).")
