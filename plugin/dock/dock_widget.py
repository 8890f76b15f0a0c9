"""The dock: pick layers and a model, press Train, Predict, Evaluate or Export for Deepness.

Each button runs the provider's own Processing algorithm (train, extract, evaluate, export) as a
background task, so the dock and the toolbox share one code path and QGIS never freezes. Results are added
to the project, styled, in a group per run at the top of the layer tree, when the task has finished. Files
go to a real folder (the user's choice, remembered; else beside the project file or the image) under names
that never replace an earlier run's. Its widgets are laid out in ``layout.py``, the pieces they
are made of live in ``widgets.py``, what they ask for is read in ``inputs.py`` and installing
missing modules in ``install_flow.py``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from qgis.core import Qgis, QgsProject
from qgis.gui import QgsDockWidget
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import (
    QTableWidgetItem,
    QWidget,
)

from .. import DISPLAY_NAME
from ..dependencies import dependency_problem, install_arguments, missing_requirements
from ..layers import add_result_group, add_styled_layer
from ..log import log
from ..tasks import AlgorithmRun
from .document_window import show_document
from .inputs import DockInputs
from .install_flow import Installer
from .layout import DockWidgets
from .requests import DockRequest, TrainRequest
from .widgets import (
    DEFAULT_TRAINING_MINUTES,
    ERROR_STYLE,
    breakable,
    built_up_area,
    clock,
    is_image_layer,
    readable,
    remember,
)

# the evaluation's outputs as the dock's scores line names them
SCORE_NAMES = {
    "IOU": "IoU",
    "F1": "F1",
    "PRECISION": "Precision",
    "RECALL": "Recall",
    "ACCURACY": "Accuracy",
    "KAPPA": "Kappa",
}


OBJECT_SCORE_NAMES = {"OBJECT_F1": "F1", "OBJECT_PRECISION": "Precision", "OBJECT_RECALL": "Recall"}


class BuildingsDock(QgsDockWidget):
    """The dock: its widgets (``layout.py``), what they ask for (``inputs.py``), the install button's
    command (``install_flow.py``) and the runs of the provider's algorithms."""

    def __init__(self, iface, parent: QWidget | None = None) -> None:
        super().__init__(DISPLAY_NAME, parent)
        self.setObjectName("UNetBuildingsDock")
        self.iface = iface
        self.current_run: AlgorithmRun | None = None
        self.resumable: TrainRequest | None = None  # the last training run, when it can be continued
        self.quiet = False  # True while the dock itself changes layers and pickers: that makes nothing stale
        self.clock_timer = QTimer(self)
        self.clock_timer.setInterval(1000)
        self.clock_timer.timeout.connect(self.show_time)
        self.problem = dependency_problem()
        self.widgets = DockWidgets()
        self.setWidget(self.widgets.root)
        self.inputs = DockInputs(self.widgets, iface, self.tell)
        self.installer = Installer(
            self,
            install_arguments(missing_requirements()) if self.problem else [],
            self.tell,
            self.set_running,
            self.widgets.status_label.setText,
        )
        self.connect_widgets()
        self.widgets.dependency_label.setVisible(bool(self.problem))
        self.widgets.dependency_label.setText(self.problem or "")
        self.widgets.install_button.setVisible(bool(self.problem))
        self.set_running(False)
        self.widgets.device_label.setText(self.describe_device())

    def connect_widgets(self) -> None:
        """The widgets to what they do; the model picked at the start (the starter model) shows its curves."""
        w, inputs = self.widgets, self.inputs
        w.install_button.clicked.connect(self.installer.offer)
        w.model_widget.fileChanged.connect(self.show_model_history)
        w.output_widget.fileChanged.connect(inputs.remember_output_folder)
        for checklist in (w.train_images, w.train_labels):
            checklist.checkedItemsChanged.connect(inputs.show_pairs)
            checklist.checkedItemsChanged.connect(self.inputs_changed)
        w.train_labels.checkedItemsChanged.connect(inputs.show_label_values)
        w.scores_label.linkActivated.connect(lambda url: show_document(url, "Building extraction accuracy", self))
        for combo in (w.image_combo, w.prediction_combo, w.reference_combo):
            combo.layerChanged.connect(self.inputs_changed)
        QgsProject.instance().layersRemoved.connect(self.inputs_changed)
        QgsProject.instance().layersAdded.connect(self.leave_out_plugin_outputs)
        for button, slot in (
            (w.train_button, self.train),
            (w.predict_button, self.predict),
            (w.evaluate_button, self.evaluate),
            (w.cancel_button, self.cancel),
            (w.export_button, self.export),
            (w.resume_button, self.resume),
        ):
            button.clicked.connect(slot)
        inputs.show_pairs()
        self.leave_out_plugin_outputs()  # the layers of a project open before the dock
        self.show_model_history(w.model_widget.filePath())

    def leave_out_plugin_outputs(self, *_) -> None:
        """The Predict picker offers images, not the masks, probabilities and error maps the plugin wrote."""
        layers = QgsProject.instance().mapLayers().values()
        self.widgets.image_combo.setExceptedLayerList([layer for layer in layers if not is_image_layer(layer)])

    def describe_device(self) -> str:
        if self.problem:
            return "Device: none (the engine's Python modules are missing, see above)"
        from ...model.net.device import describe_device, resolve_device

        return f"Device: {describe_device(resolve_device('auto'))}"

    # -- inputs --------------------------------------------------------------------------------
    def inputs_changed(self, *_) -> None:
        """The layers changed: what the dock says about the previous inputs is stale."""
        if self.quiet or self.current_run is not None:
            return
        self.clear_results()
        self.widgets.status_label.setText("Ready.")
        self.widgets.status_label.setStyleSheet("")

    def clear_results(self) -> None:
        self.widgets.time_label.setText("")
        self.widgets.matrix_table.clearContents()
        self.widgets.scores_label.setText("")

    def tell(self, text: str, level: Qgis.MessageLevel = Qgis.MessageLevel.Info) -> None:
        """The status line and the message bar get one readable line; the plugin's log tab the whole text.
        Warnings and errors also go to the message bar (errors stay until closed, so a failure that happens
        while the user looks elsewhere is not missed)."""
        line = readable(text)
        self.widgets.status_label.setText(breakable(line))
        self.widgets.status_label.setStyleSheet(ERROR_STYLE if level == Qgis.MessageLevel.Critical else "")
        log(text, level)
        if level != Qgis.MessageLevel.Info:
            self.iface.messageBar().pushMessage(
                DISPLAY_NAME, line, level, 0 if level == Qgis.MessageLevel.Critical else 8
            )

    def show_model_history(self, path: str) -> None:
        """The training curves recorded in a model file, so a model's quality shows when it is picked."""
        # quiet: the dock picked a model a training run just wrote, whose curves (live batch loss included)
        # are already drawn
        if self.problem or self.quiet or self.current_run is not None or not path or not Path(path).is_file():
            return
        from ...model.errors import EngineError
        from ...model.net.modelfile import read_payload

        try:
            history = read_payload(Path(path))["info"].get("history", [])
        except EngineError as error:
            self.tell(str(error), Qgis.MessageLevel.Warning)
            return
        self.widgets.curves.show_history(history)

    # -- actions -------------------------------------------------------------------------------
    def train(self) -> None:
        request = self.inputs.train_request()
        if request is None:
            return
        remember("building_values", request.building_values.strip())
        self.widgets.curves.clear()
        self.run_training(request)

    def resume(self) -> None:
        """Continues the last cancelled or timed-out training run for the minutes set, with its own images,
        labels, start model and model file (the engine checks that the checkpoint fits them)."""
        request = self.resumable
        if request is None:
            return
        from ...model.training.checkpoints import checkpoint_dir_for, training_time_s

        checkpoint = checkpoint_dir_for(request.output_model) / "last.pt"
        minutes = self.widgets.minutes_spin.value() or DEFAULT_TRAINING_MINUTES
        # the budget covers the whole run: the time already spent, then the minutes asked for now
        budget_min = training_time_s(checkpoint) / 60 + minutes
        self.run_training(replace(request, resume_from=checkpoint, time_budget_min=budget_min))

    def run_training(self, request: TrainRequest) -> None:
        self.run_request(request, self.trained, lambda ok, results: self.training_ended(request, ok, results))

    def trained(self, results: dict) -> None:
        """Says how the new model compares with its start, and makes it the dock's model only when better."""
        if results["KEPT_START"]:  # the dock's model was at least as good: it stays the dock's model
            self.tell(f"{results['OUTCOME']} The dock goes on using it.", Qgis.MessageLevel.Warning)
            return
        self.widgets.model_widget.setFilePath(results["OUTPUT_MODEL"])
        self.tell(
            f"{results['OUTCOME']} The dock now uses the new model, {results['OUTPUT_MODEL']}.",
            Qgis.MessageLevel.Success,
        )

    def training_ended(self, request: TrainRequest, ok: bool, results: dict) -> None:
        """A run cancelled, failed or out of time after it wrote a checkpoint can be resumed."""
        from ...model.training.checkpoints import checkpoint_dir_for

        continuable = not ok or results.get("OUT_OF_TIME")
        checkpoint = checkpoint_dir_for(request.output_model) / "last.pt"
        self.resumable = request if continuable and checkpoint.is_file() else None
        self.widgets.resume_button.setEnabled(self.resumable is not None)

    def predict(self) -> None:
        request = self.inputs.predict_request()
        if request is None:
            return
        image = self.widgets.image_combo.currentLayer()
        buildings, suffix = request.output_buildings, request.run_label

        def predicted(results: dict) -> None:
            name = image.name()
            group = add_result_group(f"{name} buildings{suffix}")
            add_styled_layer(results["OUTPUT"], f"{name} buildings{suffix}", "buildings", group=group)
            # the outlines say what the mask says: the mask starts switched off so the probability shows
            mask_layer = add_styled_layer(
                results["OUTPUT_MASK"], f"{name} building mask{suffix}", "mask", visible=False, group=group
            )
            add_styled_layer(
                results["OUTPUT_PROBABILITY"], f"{name} building probability{suffix}", "probability", group=group
            )
            if mask_layer is not None:
                self.widgets.prediction_combo.setLayer(mask_layer)
            self.tell(
                # the filter said, as Evaluate scores the mask's every blob and counts more "buildings"
                f"{results['BUILDING_COUNT']:.0f} buildings of {request.min_area_m2:g} m² or more found, "
                f"{built_up_area(results['BUILT_UP_AREA_M2'])} built up; written to {buildings.parent}.",
                Qgis.MessageLevel.Success,
            )

        self.run_request(request, predicted)

    def evaluate(self) -> None:
        request = self.inputs.evaluate_request()
        if request is None:
            return
        prediction = self.widgets.prediction_combo.currentLayer()
        suffix = request.run_label

        def evaluated(results: dict) -> None:
            self.show_evaluation(results)
            name = prediction.name()
            group = add_result_group(f"{name} evaluation{suffix}")
            for key, title in (("OUTPUT_FALSE_POSITIVES", "false positives"), ("OUTPUT_MISSED", "missed buildings")):
                if results.get(key):
                    add_styled_layer(results[key], f"{name} {title}{suffix}", key.lower()[7:], group=group)
            add_styled_layer(results["OUTPUT_ERROR_MAP"], f"{name} errors{suffix}", "error_map", group=group)
            if results.get("WARNINGS"):  # undefined or zero scores: the reason, not "IoU nan"
                self.tell(results["WARNINGS"], Qgis.MessageLevel.Warning)
            else:
                self.tell(f"IoU {results['IOU']:.3f}, F1 {results['F1']:.3f}.", Qgis.MessageLevel.Success)

        self.run_request(request, evaluated)

    def export(self) -> None:
        request = self.inputs.export_request()
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
        self.installer.stop(wait_ms=5000)

    def cancel(self) -> None:
        if self.current_run is not None:
            self.widgets.status_label.setText("Cancelling...")
            self.current_run.cancel()
        self.installer.stop()

    # -- running -------------------------------------------------------------------------------
    def run_request(
        self,
        request: DockRequest,
        on_success: Callable[[dict], None],
        on_end: Callable[[bool, dict], None] | None = None,
    ) -> None:
        """Runs the request's algorithm; ``on_success`` gets its results, ``on_end`` (ok, results) is
        called after any ending, a failure or cancel included."""
        self.start(request.algorithm_id, request.parameters(), on_success, on_end)

    def start(
        self,
        algorithm_id: str,
        parameters: dict,
        on_success: Callable[[dict], None],
        on_end: Callable[[bool, dict], None] | None = None,
    ) -> None:
        if self.current_run is not None:
            self.tell("Another run is still going: wait for it or press Cancel.", Qgis.MessageLevel.Warning)
            return
        run = AlgorithmRun(algorithm_id, parameters, self)
        run.progress_changed.connect(self.show_progress)
        run.info.connect(log)
        run.record.connect(self.show_record)
        run.finished.connect(lambda ok, results, error: self.finish(ok, results, error, on_success, on_end))
        self.clear_results()  # the previous run's time, matrix and scores say nothing about this one
        self.current_run = run
        self.set_running(True)
        self.widgets.progress_bar.setValue(0)
        self.widgets.status_label.setStyleSheet("")
        self.widgets.status_label.setText(f"{run.title}...")
        run.start()
        self.show_time()

    def finish(
        self,
        ok: bool,
        results: dict,
        error: str,
        on_success: Callable[[dict], None],
        on_end: Callable[[bool, dict], None] | None = None,
    ) -> None:
        run, self.current_run = self.current_run, None
        self.set_running(False)
        cancelled = run is not None and run.feedback.isCanceled()  # asked for: a warning, not a failure
        if run is not None:
            # how the run ended, in the time line too: a bar left at 24 % with a bare time read as a stall
            ended = "" if ok else "cancelled after " if cancelled else "failed after "
            self.widgets.time_label.setText(f"{run.title}: {ended}{clock(run.elapsed_s())}")
            run.deleteLater()
        if not ok:
            self.widgets.progress_bar.setValue(0)
        if ok:
            self.widgets.progress_bar.setValue(100)
            self.quiet = True  # the results it adds and picks are not a change of the user's inputs
            try:
                on_success(results)
            finally:
                self.quiet = False
        else:
            self.tell(error, Qgis.MessageLevel.Warning if cancelled else Qgis.MessageLevel.Critical)
        if on_end is not None:
            on_end(ok, results)

    def set_running(self, running: bool) -> None:
        run_buttons = (
            self.widgets.train_button,
            self.widgets.predict_button,
            self.widgets.evaluate_button,
            self.widgets.export_button,
        )
        # Cancel first, and the focus onto it: a disabled button with the focus hands it on to the next
        # widget down the dock, and the scroll area then scrolls that widget into view
        self.widgets.cancel_button.setEnabled(running)
        if running and any(button.hasFocus() for button in run_buttons):
            self.widgets.cancel_button.setFocus(Qt.FocusReason.OtherFocusReason)
        for button in run_buttons:
            button.setEnabled(not running and not self.problem)
        self.widgets.install_button.setEnabled(not running)
        self.widgets.resume_button.setEnabled(not running and not self.problem and self.resumable is not None)
        if not running and self.widgets.cancel_button.hasFocus():
            self.widgets.cancel_button.clearFocus()
        if running:
            self.clock_timer.start()
        else:
            self.clock_timer.stop()

    def show_progress(self, percent: float) -> None:
        self.widgets.progress_bar.setValue(int(percent))
        self.show_time()

    def show_time(self) -> None:
        if self.current_run is None:
            return
        elapsed = self.current_run.elapsed_s()
        percent = self.widgets.progress_bar.value()
        # a linear estimate: good enough once a few percent are done, and said to be rough
        remaining = f", about {clock(elapsed * (100 - percent) / percent)} left" if 0 < percent < 100 else ""
        self.widgets.time_label.setText(f"{clock(elapsed)} elapsed{remaining}")

    def show_record(self, kind: str, record: dict) -> None:
        """A training run's epoch record or batch report, as the engine made it, onto the live curves."""
        (self.widgets.curves.add_epoch if kind == "epoch" else self.widgets.curves.add_batch)(record)

    def show_evaluation(self, results: dict) -> None:
        # laid out as the report and the paper's Table 2: non-building first, in rows and in columns
        cells = ((0, 0, "TN"), (0, 1, "FP"), (1, 0, "FN"), (1, 1, "TP"))
        for row, column, name in cells:
            self.widgets.matrix_table.setItem(row, column, QTableWidgetItem(f"{results[name]:,.0f}"))
        scores = ", ".join(f"{name} {results[key]:.3f}" for key, name in SCORE_NAMES.items())
        # buildings as objects, as the report scores them: each predicted one matched to a true one
        objects = ", ".join(
            f"{name} {results[key]:.3f}" for key, name in OBJECT_SCORE_NAMES.items() if results.get(key) is not None
        )
        report = Path(results["OUTPUT_REPORT"]).as_uri()
        by_building = f"<br>Buildings (one-to-one matches, every blob of the mask): {objects}." if objects else ""
        self.widgets.scores_label.setText(f'Pixels: {scores}.{by_building} <a href="{report}">Show the report</a>')
