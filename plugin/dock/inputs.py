"""What the dock's widgets say the user asked for: paired training layers, the output folder, and the
plain requests (``requests.py``) that the dock runs. The widgets are made in ``layout.py``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from qgis.core import Qgis, QgsMapLayer, QgsProcessingUtils, QgsProject
from qgis.gui import QgisInterface

from ...model.choices import check_pairs
from ...model.errors import InputError
from ...model.training.start_model import starter_model
from ..layers import layer_file
from .layout import DockWidgets
from .requests import EvaluateRequest, ExportRequest, PredictRequest, TrainRequest
from .widgets import ERROR_STYLE, file_stem, label_values, numbered, remember


class DockInputs:
    """What the dock's widgets say the user asked for, read from the widgets it is given; ``tell`` says
    to the user (text, message level) why a request cannot be made."""

    def __init__(self, widgets: DockWidgets, iface: QgisInterface, tell: Callable[..., None]) -> None:
        self.widgets = widgets
        self.iface = iface
        self.tell = tell

    def require(self, value, what: str) -> bool:
        """False, and the user told to pick ``what``, when ``value`` is missing."""
        if not value:
            self.tell(f"Pick {what} first.", Qgis.MessageLevel.Warning)
        return bool(value)

    # -- inputs --------------------------------------------------------------------------------
    def remember_output_folder(self, path: str) -> None:
        if path:
            remember("output_folder", path)

    def default_output_folder(self, near: QgsMapLayer | None) -> Path | None:
        """The project file's folder, else the folder of ``near``'s file: the first one that can be written."""
        near_file = layer_file(near) if near is not None else ""
        candidates = [QgsProject.instance().absolutePath(), str(Path(near_file).parent) if near_file else ""]
        for folder in candidates:
            if folder and Path(folder).is_dir() and os.access(folder, os.W_OK):
                return Path(folder)
        return None

    def output_folder(self, near: QgsMapLayer | None = None) -> Path:
        """Where a run writes: the chosen folder, else beside the project or ``near``'s file. Only when none
        of them can be written, the temporary folder, and the user is told plainly that it is temporary."""
        chosen = self.widgets.output_widget.filePath()
        if chosen:
            folder = Path(chosen)
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        default = self.default_output_folder(near)
        if default is not None:
            return default
        folder = Path(QgsProcessingUtils.tempFolder())
        self.tell(
            f"No output folder is chosen and neither the project's nor the image's folder can be written: "
            f"the results go to the temporary folder {folder}, which QGIS deletes when it quits. Choose an "
            "output folder to keep them.",
            Qgis.MessageLevel.Warning,
        )
        return folder

    def training_pairs(self) -> tuple[list[QgsMapLayer], list[QgsMapLayer], str]:
        """(images, labels, problem): the ticked layers and, when they cannot be paired, why not."""
        images, labels = self.widgets.train_images.ticked_layers(), self.widgets.train_labels.ticked_layers()
        if not images:
            return images, labels, "Tick the images to train on and one label layer per image."
        try:
            check_pairs(images, labels, paired_by="in name order")
        except InputError as problem:
            return images, labels, str(problem)
        return images, labels, ""

    def show_pairs(self, *_) -> None:
        images, labels, problem = self.training_pairs()
        self.widgets.pairs_label.setStyleSheet(ERROR_STYLE if problem and images else "")
        self.widgets.pairs_label.setText(
            problem
            if problem
            else "\n".join(f"{image.name()} ↔ {label.name()}" for image, label in zip(images, labels))
        )

    def show_label_values(self, *_) -> None:
        """Says what is wrong with the first ticked label raster, one sentence per problem (the engine's
        label checks), else which values it holds; picks building value 1 for 0/1 labels that hold none of
        the building values set, and says so."""
        from ...model.choices import parse_building_values
        from ...model.errors import EngineError

        found = next(
            (held for layer in self.widgets.train_labels.ticked_layers() if (held := label_values(layer)) is not None),
            None,
        )
        problems: list[str] = []
        text = ""
        if isinstance(found, str):  # no class raster at all: an image, an unreadable file
            problems = [found]
        elif found is not None:
            try:
                chosen = parse_building_values(self.widgets.building_values_edit.text())
            except EngineError as error:
                problems = [str(error)]
            else:
                binary = found.binary_building_values(chosen)
                if binary is not None:
                    self.widgets.building_values_edit.setText(",".join(map(str, binary)))
                    chosen = binary
                problems = found.problems(chosen)
                if not problems:
                    switched = f" Building values set to {', '.join(map(str, binary))}." if binary else ""
                    text = found.summary() + switched
        self.widgets.label_values_label.setStyleSheet(ERROR_STYLE if problems else "")
        self.widgets.label_values_label.setText(" ".join(problems) or text)

    # -- requests: what the widgets say the user asked for -------------------------------------
    def train_request(self) -> TrainRequest | None:
        """None, and the user told why, when the ticked layers cannot be paired."""
        images, labels, problem = self.training_pairs()
        if problem:
            self.tell(problem, Qgis.MessageLevel.Warning)
            return None
        (model_path,), _ = numbered(self.output_folder(images[0]), [f"{file_stem(images[0].name())}_model{{n}}.pt"])
        return TrainRequest(
            image_ids=tuple(layer.id() for layer in images),
            label_ids=tuple(layer.id() for layer in labels),
            building_values=self.widgets.building_values_edit.text(),
            preset=self.widgets.preset_combo.currentText(),
            output_model=model_path,
            # 0 is shown as "preset's value"
            epochs=self.widgets.epochs_spin.value() or None,
            time_budget_min=self.widgets.minutes_spin.value() or None,
            # the dock's model (the starter model unless the user picked another) is adapted, unless unticked
            init_model=Path(self.widgets.model_widget.filePath())
            if self.widgets.adapt_check.isChecked() and self.widgets.model_widget.filePath()
            else None,
        )

    def predict_request(self) -> PredictRequest | None:
        image, model = self.widgets.image_combo.currentLayer(), self.widgets.model_widget.filePath()
        if not (self.require(image, "an image layer") and self.require(model, "a model file")):
            return None
        stem = file_stem(image.name())
        (buildings, probability, mask), run_label = numbered(
            self.output_folder(image),
            [f"{stem}_buildings{{n}}.gpkg", f"{stem}_probability{{n}}.tif", f"{stem}_mask{{n}}.tif"],
        )
        return PredictRequest(
            image_id=image.id(),
            model=Path(model),
            output_buildings=buildings,
            run_label=run_label,
            output_probability=probability,
            output_mask=mask,
            min_area_m2=self.widgets.min_area_spin.value(),
            simplify_m=self.widgets.simplify_spin.value(),
            regularize=self.widgets.regularize_check.isChecked(),
            threshold=self.widgets.threshold_spin.value() or None,  # 0 is shown as "model's tuned value"
            extent=self.canvas_extent() if self.widgets.visible_area_check.isChecked() else None,
        )

    def canvas_extent(self) -> str:
        """The map canvas's extent as a Processing extent value (with its CRS)."""
        canvas = self.iface.mapCanvas()
        extent, crs = canvas.extent(), canvas.mapSettings().destinationCrs()
        return (
            f"{extent.xMinimum()!r},{extent.xMaximum()!r},{extent.yMinimum()!r},{extent.yMaximum()!r} [{crs.authid()}]"
        )

    def evaluate_request(self) -> EvaluateRequest | None:
        prediction, labels = self.widgets.prediction_combo.currentLayer(), self.widgets.reference_combo.currentLayer()
        if not (
            self.require(prediction, "a prediction layer (press Predict first)")
            and self.require(labels, "the label layer to score against (Evaluation > Labels)")
        ):
            return None
        stem = file_stem(prediction.name())
        (report, error_map, false_positives, missed), run_label = numbered(
            self.output_folder(prediction),
            [
                f"{stem}_evaluation{{n}}.html",
                f"{stem}_errors{{n}}.tif",
                f"{stem}_false_positives{{n}}.gpkg",
                f"{stem}_missed{{n}}.gpkg",
            ],
        )
        return EvaluateRequest(
            prediction_id=prediction.id(),
            labels_id=labels.id(),
            building_values=self.widgets.building_values_edit.text(),
            output_report=report,
            output_error_map=error_map,
            output_false_positives=false_positives,
            output_missed=missed,
            run_label=run_label,
        )

    def export_request(self) -> ExportRequest | None:
        model = self.widgets.model_widget.filePath()
        if not self.require(model, "a model file"):
            return None
        # beside the model unless a folder is chosen (the starter model's folder is the plugin's: not there)
        folder = Path(model).parent
        if self.widgets.output_widget.filePath() or not os.access(folder, os.W_OK) or Path(model) == starter_model():
            folder = self.output_folder()
        (onnx,), _ = numbered(folder, [f"{file_stem(Path(model).stem)}{{n}}.onnx"])
        return ExportRequest(model=Path(model), output=onnx)
