"""The dock: pick layers and a model, press Train, Predict, Evaluate or Export for Deepness.

Each button runs the provider's own Processing algorithm (train, extract, evaluate, export) as a
background task, so the dock and the toolbox share one code path and QGIS never freezes. Results are added
to the project, styled, in a group per run at the top of the layer tree, when the task has finished. Files
go to a real folder (the user's choice, remembered; else beside the project file or the image) under names
that never replace an earlier run's. Its widgets are laid out in ``dock_layout.py``, the pieces they
are made of live in ``dock_widgets.py`` and installing missing modules in ``install_flow.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from qgis.core import (
    Qgis,
    QgsMapLayer,
    QgsProcessingUtils,
    QgsProject,
)
from qgis.gui import QgsDockWidget
from qgis.PyQt.QtCore import QProcess, Qt, QTimer
from qgis.PyQt.QtWidgets import (
    QTableWidgetItem,
    QWidget,
)

from . import DISPLAY_NAME
from .algorithms.predict import starter_model
from .dependencies import dependency_problem, install_arguments, missing_requirements
from .dock_layout import build_dock_widgets
from .dock_requests import DockRequest, EvaluateRequest, ExportRequest, PredictRequest, TrainRequest
from .dock_widgets import ERROR_STYLE, breakable, clock, file_stem, label_values, numbered, readable, remember
from .epochs import parse_epoch
from .install_flow import InstallFlow
from .layers import add_result_group, add_styled_layer, layer_file
from .log import log
from .tasks import AlgorithmRun


class BuildingsDock(InstallFlow, QgsDockWidget):
    def __init__(self, iface, parent: QWidget | None = None) -> None:
        super().__init__(DISPLAY_NAME, parent)
        self.setObjectName("UNetBuildingsDock")
        self.iface = iface
        self.current_run: AlgorithmRun | None = None
        self.install_process: QProcess | None = None
        self.quiet = False  # True while the dock itself changes layers and pickers: that makes nothing stale
        self.clock_timer = QTimer(self)
        self.clock_timer.setInterval(1000)
        self.clock_timer.timeout.connect(self.show_time)
        self.problem = dependency_problem()
        build_dock_widgets(self)
        self.install_arguments = install_arguments(missing_requirements()) if self.problem else []
        self.dependency_label.setVisible(bool(self.problem))
        self.dependency_label.setText(self.problem or "")
        self.install_button.setVisible(bool(self.problem))
        self.set_running(False)
        self.device_label.setText(self.describe_device())

    def describe_device(self) -> str:
        if self.problem:
            return "Device: none (the engine's Python modules are missing, see above)"
        from ..model.device import describe_device, resolve_device

        return f"Device: {describe_device(resolve_device('auto'))}"

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
        chosen = self.output_widget.filePath()
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
        images, labels = self.train_images.ticked_layers(), self.train_labels.ticked_layers()
        if not images:
            return images, labels, "Tick the images to train on and one label layer per image."
        if len(images) != len(labels):
            return (
                images,
                labels,
                (
                    f"{len(images)} image(s) but {len(labels)} label layer(s) ticked: tick one "
                    "label layer per image (they are paired in name order)."
                ),
            )
        return images, labels, ""

    def show_pairs(self, *_) -> None:
        images, labels, problem = self.training_pairs()
        self.pairs_label.setStyleSheet(ERROR_STYLE if problem and images else "")
        self.pairs_label.setText(
            problem
            if problem
            else "\n".join(f"{image.name()} ↔ {label.name()}" for image, label in zip(images, labels))
        )

    def show_label_values(self, *_) -> None:
        """Says which values the first ticked label raster holds, and picks building value 1 for 0/1 labels
        when the building values set match nothing in them."""
        found = next(
            ((layer, held) for layer in self.train_labels.ticked_layers() if (held := label_values(layer)) is not None),
            None,
        )
        if found is None:
            self.label_values_label.setText("")
            return
        layer, (values, nodata) = found
        text = f"'{layer.name()}' holds the values {', '.join(map(str, values)) or 'none'}"
        text += f" ({nodata:g} = no data)." if nodata is not None else "."
        chosen = {
            part.strip() for part in self.building_values_edit.text().replace(";", ",").split(",") if part.strip()
        }
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
            self.iface.messageBar().pushMessage(
                DISPLAY_NAME, line, level, 0 if level == Qgis.MessageLevel.Critical else 8
            )

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

    # -- requests: what the widgets say the user asked for -------------------------------------
    def train_request(self) -> TrainRequest | None:
        """None, and the user told why, when the ticked layers cannot be paired."""
        images, labels, problem = self.training_pairs()
        if problem:
            self.tell(problem, Qgis.MessageLevel.Warning)
            return None
        (model_path,) = numbered(self.output_folder(images[0]), [f"{file_stem(images[0].name())}_model{{n}}.pt"])
        return TrainRequest(
            image_ids=tuple(layer.id() for layer in images),
            label_ids=tuple(layer.id() for layer in labels),
            building_values=self.building_values_edit.text(),
            preset=self.preset_combo.currentText(),
            output_model=model_path,
            # 0 is shown as "preset's value"
            epochs=self.epochs_spin.value() or None,
            time_budget_min=self.minutes_spin.value() or None,
        )

    def predict_request(self) -> PredictRequest | None:
        image, model = self.image_combo.currentLayer(), self.model_widget.filePath()
        if not (self.require(image, "an image layer") and self.require(model, "a model file")):
            return None
        stem = file_stem(image.name())
        buildings, probability, mask = numbered(
            self.output_folder(image),
            [f"{stem}_buildings{{n}}.gpkg", f"{stem}_probability{{n}}.tif", f"{stem}_mask{{n}}.tif"],
        )
        return PredictRequest(
            image_id=image.id(),
            model=Path(model),
            output_buildings=buildings,
            output_probability=probability,
            output_mask=mask,
            min_area_m2=self.min_area_spin.value(),
            simplify_m=self.simplify_spin.value(),
            regularize=self.regularize_check.isChecked(),
            threshold=self.threshold_spin.value() or None,  # 0 is shown as "model's tuned value"
            extent=self.canvas_extent() if self.visible_area_check.isChecked() else None,
        )

    def canvas_extent(self) -> str:
        """The map canvas's extent as a Processing extent value (with its CRS)."""
        canvas = self.iface.mapCanvas()
        extent, crs = canvas.extent(), canvas.mapSettings().destinationCrs()
        return (
            f"{extent.xMinimum()!r},{extent.xMaximum()!r},{extent.yMinimum()!r},{extent.yMaximum()!r} [{crs.authid()}]"
        )

    def evaluate_request(self) -> EvaluateRequest | None:
        prediction, labels = self.prediction_combo.currentLayer(), self.reference_combo.currentLayer()
        if not (
            self.require(prediction, "a prediction layer (press Predict first)")
            and self.require(labels, "the label layer to score against (Evaluation > Labels)")
        ):
            return None
        stem = file_stem(prediction.name())
        report, error_map, false_positives, missed = numbered(
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
            building_values=self.building_values_edit.text(),
            output_report=report,
            output_error_map=error_map,
            output_false_positives=false_positives,
            output_missed=missed,
        )

    def export_request(self) -> ExportRequest | None:
        model = self.model_widget.filePath()
        if not self.require(model, "a model file"):
            return None
        # beside the model unless a folder is chosen (the starter model's folder is the plugin's: not there)
        folder = Path(model).parent
        if self.output_widget.filePath() or not os.access(folder, os.W_OK) or Path(model) == starter_model():
            folder = self.output_folder()
        (onnx,) = numbered(folder, [f"{file_stem(Path(model).stem)}{{n}}.onnx"])
        return ExportRequest(model=Path(model), output=onnx)

    # -- actions -------------------------------------------------------------------------------
    def train(self) -> None:
        request = self.train_request()
        if request is None:
            return
        remember("building_values", request.building_values.strip())
        self.curves.clear()

        def trained(results: dict) -> None:
            self.model_widget.setFilePath(results["OUTPUT_MODEL"])
            self.tell(
                f"Model written to {results['OUTPUT_MODEL']} (best epoch {results['BEST_EPOCH']:.0f}).",
                Qgis.MessageLevel.Success,
            )

        self.run_request(request, trained)

    def predict(self) -> None:
        request = self.predict_request()
        if request is None:
            return
        image = self.image_combo.currentLayer()
        buildings = request.output_buildings
        run_name = (
            buildings.stem.replace("_buildings", " buildings", 1)
            if buildings.stem != f"{file_stem(image.name())}_buildings"
            else f"{image.name()} buildings"
        )

        def predicted(results: dict) -> None:
            name = image.name()
            group = add_result_group(run_name)
            add_styled_layer(results["OUTPUT"], f"{name} buildings", "buildings", group=group)
            # the outlines say what the mask says: the mask starts switched off so the probability shows
            mask_layer = add_styled_layer(
                results["OUTPUT_MASK"], f"{name} building mask", "mask", visible=False, group=group
            )
            add_styled_layer(results["OUTPUT_PROBABILITY"], f"{name} building probability", "probability", group=group)
            if mask_layer is not None:
                self.prediction_combo.setLayer(mask_layer)
            self.tell(
                f"{results['BUILDING_COUNT']:.0f} buildings found; written to {buildings.parent}.",
                Qgis.MessageLevel.Success,
            )

        self.run_request(request, predicted)

    def evaluate(self) -> None:
        request = self.evaluate_request()
        if request is None:
            return
        prediction = self.prediction_combo.currentLayer()

        def evaluated(results: dict) -> None:
            self.show_evaluation(results)
            group = add_result_group(f"{prediction.name()} evaluation")
            for key, title in (("OUTPUT_FALSE_POSITIVES", "false positives"), ("OUTPUT_MISSED", "missed buildings")):
                if results.get(key):
                    add_styled_layer(results[key], f"{prediction.name()} {title}", key.lower()[7:], group=group)
            add_styled_layer(results["OUTPUT_ERROR_MAP"], f"{prediction.name()} errors", "error_map", group=group)
            self.tell(f"IoU {results['IOU']:.3f}, F1 {results['F1']:.3f}.", Qgis.MessageLevel.Success)

        self.run_request(request, evaluated)

    def export(self) -> None:
        request = self.export_request()
        if request is None:
            return

        def exported(results: dict) -> None:
            self.tell(
                f'Written {results["OUTPUT"]}: in Deepness, pick it as the model and press "Load default parameters".',
                Qgis.MessageLevel.Success,
            )

        self.run_request(request, exported)

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

    # -- running -------------------------------------------------------------------------------
    def run_request(self, request: DockRequest, on_success: Callable[[dict], None]) -> None:
        self.start(request.algorithm_id, request.parameters(), on_success)

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
        scores = ", ".join(
            f"{name.lower().replace('_', ' ')} {results[name]:.3f}"
            for name in ("ACCURACY", "PRECISION", "RECALL", "F1", "IOU", "KAPPA")
        )
        report = Path(results["OUTPUT_REPORT"]).as_uri()
        self.scores_label.setText(f'{scores}. <a href="{report}">Open the report</a>')
