"""Running one of the provider's Processing algorithms in the background, as QGIS's toolbox does.

The algorithm runs in an ``AlgorithmTask`` thread; everything that reaches the widgets goes
through Qt signals, which Qt delivers in the main thread, and layers are only touched once the task has
finished (in the ``finished`` signal's handler, main thread).
"""

from __future__ import annotations

import time

from qgis.core import (
    QgsApplication,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsTask,
)
from qgis.PyQt.QtCore import QObject, pyqtSignal

from . import PROVIDER_ID
from .log import log


class TaskFeedback(QgsProcessingFeedback):
    """Processing feedback whose text also reaches the dock, and with it the training records as data
    (``push_record``), so the dock draws its curves from numbers, not from log lines read back. Called
    from the task's thread: it only emits signals and keeps the error text for the main thread to read
    once the task has finished."""

    info = pyqtSignal(str)
    record = pyqtSignal(str, dict)  # kind ("epoch" or "batch"), the engine's record

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    def pushInfo(self, info: str) -> None:  # noqa: N802
        super().pushInfo(info)
        self.info.emit(info)

    def push_record(self, kind: str, record: dict) -> None:
        self.record.emit(kind, dict(record))

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802, N803
        super().reportError(error, fatalError)
        self.errors.append(error)


class AlgorithmTask(QgsTask):
    """What QgsProcessingAlgRunnerTask does (prepare here on the main thread, run in the task's thread,
    post-process back on the main thread), except that a run the user cancels ends as a completed task
    named as cancelled: QGIS announces every terminated task as "Task failed", and a cancel asked for is
    not a failure. ``executed`` says whether the algorithm ran to its end, with its results."""

    executed = pyqtSignal(bool, dict)

    def __init__(
        self,
        algorithm: QgsProcessingAlgorithm,
        parameters: dict,
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> None:
        super().__init__(f"Executing '{algorithm.displayName()}'", QgsTask.CanCancel)
        self.title = algorithm.displayName()
        self.algorithm = algorithm.create()
        self.parameters, self.context, self.feedback = parameters, context, feedback
        self.results: dict = {}
        try:
            self.prepared = self.algorithm.prepare(parameters, context, feedback)
        except QgsProcessingException as error:
            feedback.reportError(str(error))
            self.prepared = False
        self.feedback.progressChanged.connect(self.setProgress)

    def cancel(self) -> None:
        self.setDescription(f"'{self.title}' cancelled by the user")  # what QGIS's task list and bar show
        self.feedback.cancel()
        super().cancel()

    def run(self) -> bool:
        if not self.prepared:
            return False
        try:
            self.results = self.algorithm.runPrepared(self.parameters, self.context, self.feedback) or {}
        except QgsProcessingException as error:
            self.feedback.reportError(str(error))
            return self.feedback.isCanceled()  # stopped as asked: not a failed task
        return True

    def finished(self, result: bool) -> None:
        ran_to_end = result and not self.feedback.isCanceled()
        results = self.algorithm.postProcess(self.context, self.feedback) if ran_to_end else {}
        self.executed.emit(ran_to_end, dict(results or self.results))


class AlgorithmRun(QObject):
    """One run of ``unet_buildings:<algorithm_id>``: the task with its context and feedback, kept alive
    together here because Qt only holds C++ pointers to them."""

    progress_changed = pyqtSignal(float)
    info = pyqtSignal(str)
    record = pyqtSignal(str, dict)  # kind ("epoch" or "batch"), the record
    finished = pyqtSignal(bool, dict, str)  # ok, results, error message

    def __init__(self, algorithm_id: str, parameters: dict, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.algorithm_id = algorithm_id
        self.parameters = parameters
        self.started_at = 0.0
        self.context = QgsProcessingContext()
        self.context.setProject(QgsProject.instance())
        self.feedback = TaskFeedback()
        self.feedback.info.connect(self.info)
        self.feedback.record.connect(self.record)
        algorithm = QgsApplication.processingRegistry().createAlgorithmById(f"{PROVIDER_ID}:{algorithm_id}")
        if algorithm is None:
            raise RuntimeError(f"The algorithm {PROVIDER_ID}:{algorithm_id} is not registered.")
        self.title = algorithm.displayName()  # what users read ("Extract buildings"), not the id
        self.task: AlgorithmTask | None = AlgorithmTask(algorithm, parameters, self.context, self.feedback)
        self.task.progressChanged.connect(self.progress_changed)
        self.task.executed.connect(self._executed)

    def start(self) -> None:
        self.started_at = time.monotonic()
        log(f"Running {self.algorithm_id} with {self.parameters}")
        QgsApplication.taskManager().addTask(self.task)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def cancel_and_wait(self, timeout_s: float = 30.0) -> bool:
        """Cancels the task and blocks until its work has stopped (the engine looks for a cancel
        before every U-Net block, so about a second): for unloading the plugin, when none of its
        code may go on running. Nothing is reported any more: the signals are disconnected first.
        False when the task did not stop within ``timeout_s``."""
        for signal in (self.progress_changed, self.info, self.record, self.finished):
            try:
                signal.disconnect()
            except TypeError:  # nothing was connected
                pass
        task = self.task
        if task is None:
            return True
        task.cancel()
        return task.waitForFinished(int(timeout_s * 1000))

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_at if self.started_at else 0.0

    def _executed(self, ok: bool, results: dict) -> None:
        self.task = None  # the task manager deletes the task once this signal has been handled
        error = (
            ""
            if ok
            else (
                self.feedback.errors[-1]
                if self.feedback.errors
                else "Cancelled."
                if self.feedback.isCanceled()
                else "The algorithm failed."
            )
        )
        log(f"{self.algorithm_id} {'finished' if ok else 'failed: ' + error} after {self.elapsed_s():.1f} s")
        self.finished.emit(ok, dict(results or {}), error)
