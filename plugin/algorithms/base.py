"""What every algorithm of the provider shares: identity and help, the dependency check, engine errors
as plain Processing errors, progress and cancel wired to the feedback, styled outputs. Where inputs
and outputs are, and how feature sinks are written whole, is in ``outputs.py``."""

from __future__ import annotations

import time
from html import escape
from typing import Callable

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtGui import QIcon

from ...model.choices import BUILDING_VALUES_TEXT, DEVICE_CHOICES
from .. import ICON_PATH, LOG_TAG
from ..dependencies import dependency_problem
from .outputs import check_destinations, clean_dead_sessions_leftovers

CITATION = (
    "<h3>Method</h3><p>A U-Net (O. Ronneberger, P. Fischer, T. Brox, <i>U-Net: Convolutional Networks for "
    "Biomedical Image Segmentation</i>, MICCAI 2015) applied to buildings as in <i>Remote sensing image "
    "building extraction based on U-net</i>. Errors are reported in plain words; nothing is installed "
    "without you.</p>"
)


def advanced(parameter: QgsProcessingParameterDefinition) -> QgsProcessingParameterDefinition:
    parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
    return parameter


def device_parameter() -> QgsProcessingParameterEnum:
    # static strings: scripts and qgis_process pass DEVICE=cpu rather than an index
    return QgsProcessingParameterEnum(
        "DEVICE",
        "Device (auto = the GPU when torch sees one, else the CPU)",
        options=list(DEVICE_CHOICES),
        defaultValue="auto",
        usesStaticStrings=True,
    )


def threshold_parameter(title: str) -> QgsProcessingParameterNumber:
    """THRESHOLD: an optional probability from which a pixel counts as building; ``title`` says what empty means."""
    return QgsProcessingParameterNumber(
        "THRESHOLD", title, QgsProcessingParameterNumber.Type.Double, optional=True, minValue=0.0, maxValue=1.0
    )


def building_values_parameter() -> QgsProcessingParameterString:
    """BUILDING_VALUES: the label values that mean building, with the default the dock and the command line share."""
    return QgsProcessingParameterString("BUILDING_VALUES", "Building class values", defaultValue=BUILDING_VALUES_TEXT)


TEMPORARY_MODEL_WARNING = (
    "<b>Left empty, the model goes to a temporary file that QGIS deletes when it quits:</b> "
    "choose a file to keep the model."
)


def dialog_order(definitions: list[QgsProcessingParameterDefinition]) -> list[QgsProcessingParameterDefinition]:
    """Parameters in the order QGIS's algorithm dialog shows them: inputs, then the folded "Advanced
    Parameters" group, then the outputs; hidden ones not at all."""
    shown = [
        definition
        for definition in definitions
        if not definition.flags() & QgsProcessingParameterDefinition.Flag.FlagHidden
    ]
    inputs = [definition for definition in shown if not definition.isDestination()]

    def is_advanced(definition: QgsProcessingParameterDefinition) -> bool:
        return bool(definition.flags() & QgsProcessingParameterDefinition.Flag.FlagAdvanced)

    return (
        [definition for definition in inputs if not is_advanced(definition)]
        + [definition for definition in inputs if is_advanced(definition)]
        + [definition for definition in shown if definition.isDestination()]
    )


def dialog_label(definition: QgsProcessingParameterDefinition) -> str:
    """The label the dialog shows beside a parameter's widget."""
    optional = definition.flags() & QgsProcessingParameterDefinition.Flag.FlagOptional
    return definition.description() + (" [optional]" if optional else "")


def help_list(definitions: list[QgsProcessingParameterDefinition], texts: dict[str, str]) -> str:
    """Parameter help as an HTML definition list: each parameter by the label the dialog shows, in the
    dialog's order, with its name for scripts and qgis_process in small print. ``texts`` is keyed by
    parameter name."""
    rows = []
    for definition in dialog_order(definitions):
        name = definition.name()
        text = texts.get(name, "")
        if name == "OUTPUT_MODEL" and not definition.defaultValue():
            text = f"{text} {TEMPORARY_MODEL_WARNING}".strip()
        label = escape(dialog_label(definition), quote=False)
        rows.append(f"<dt><b>{label}</b> <small>({name})</small></dt><dd>{text}</dd>")
    return f"<dl>{''.join(rows)}</dl>"


class EngineAlgorithm(QgsProcessingAlgorithm):
    """Base of the provider's algorithms. Subclasses set the class attributes, declare parameters in
    ``initAlgorithm`` and do their work in ``run_engine`` (engine imported there, never at module level,
    because QGIS imports these modules at start-up, torch or not)."""

    ALGORITHM_ID = ""
    TITLE = ""
    GROUP = ""
    GROUP_ID = ""
    SUMMARY = ""  # one paragraph: what the algorithm does
    PARAMETER_HELP: dict[str, str] = {}
    # the input whose layer name starts the names of the layers loaded on completion ("" for none): batch
    # rows and repeated runs otherwise all load as the outputs' descriptions ("Buildings", "Buildings", ...)
    SOURCE_PARAMETER = "INPUT"

    def __init__(self) -> None:
        super().__init__()
        # output destination -> style kind, applied in postProcessAlgorithm (main thread)
        self._styles: dict[str, str] = {}
        self._source_name = ""

    def name(self) -> str:
        return self.ALGORITHM_ID

    def displayName(self) -> str:  # noqa: N802
        return self.TITLE

    def group(self) -> str:
        return self.GROUP

    def groupId(self) -> str:  # noqa: N802
        return self.GROUP_ID

    def shortHelpString(self) -> str:  # noqa: N802
        return f"<p>{self.SUMMARY}</p>{help_list(self.parameterDefinitions(), self.PARAMETER_HELP)}{CITATION}"

    def icon(self) -> QIcon:
        return QIcon(str(ICON_PATH))

    def createInstance(self) -> EngineAlgorithm:  # noqa: N802
        return type(self)()

    def processAlgorithm(
        self,
        parameters: dict,
        context: QgsProcessingContext,  # noqa: N802
        feedback: QgsProcessingFeedback,
    ) -> dict:
        problem = dependency_problem()
        if problem:
            raise QgsProcessingException(problem)
        from ...model.errors import EngineError
        from ...model.io.files import describe_os_error

        source = self.parameterAsLayer(parameters, self.SOURCE_PARAMETER, context) if self.SOURCE_PARAMETER else None
        self._source_name = source.name() if source is not None else ""
        try:
            check_destinations(self, parameters, context)
            clean_dead_sessions_leftovers()
            return self.run_engine(parameters, context, feedback)
        except QgsProcessingException:
            raise
        except EngineError as error:  # the engine's messages are written for users: pass them on as they are
            raise QgsProcessingException(str(error)) from error
        except OSError as error:
            raise QgsProcessingException(describe_os_error(error)) from error
        except MemoryError as error:
            raise QgsProcessingException(
                f"{self.displayName()} ran out of memory: close other programs or use a "
                "smaller batch size, then run again."
            ) from error
        except Exception as error:  # a bug: a short sentence here, the traceback in the log for a report
            log_exception(f"{self.displayName()} failed", error)
            raise QgsProcessingException(unexpected_error_message(self.displayName(), error)) from error

    def run_engine(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        raise NotImplementedError

    def postProcessAlgorithm(
        self,
        context: QgsProcessingContext,  # noqa: N802
        feedback: QgsProcessingFeedback,
    ) -> dict:
        from ..layers import style_on_completion

        for destination, kind in self._styles.items():
            style_on_completion(context, destination, kind, self._source_name)
        return {}  # empty: keep the results processAlgorithm returned

    def style_output(self, destination: str | None, kind: str) -> None:
        if destination:
            self._styles[destination] = kind

    # -- parameter values ----------------------------------------------------------------------
    def optional_number(
        self, parameters: dict, name: str, context: QgsProcessingContext, integer: bool = False
    ) -> float | None:
        """None when an optional number was left empty (so the engine or preset default applies)."""
        value = parameters.get(name)
        if value is None or value == "" or (hasattr(value, "isNull") and value.isNull()):
            return None
        return (
            self.parameterAsInt(parameters, name, context)
            if integer
            else self.parameterAsDouble(parameters, name, context)
        )

    def device(self, parameters: dict, context: QgsProcessingContext) -> str:
        return self.parameterAsEnumString(parameters, "DEVICE", context)


# parameter types whose values are read (files or layers) and must never be overwritten by an output
def log_exception(what: str, error: BaseException) -> None:
    import traceback

    from qgis.core import Qgis

    from ..log import log

    log(
        f"{what}: {''.join(traceback.format_exception(type(error), error, error.__traceback__))}",
        Qgis.MessageLevel.Critical,
    )


def unexpected_error_message(title: str, error: BaseException) -> str:
    """One sentence for an error nobody foresaw: what failed, the error in short, where the details are."""
    detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return (
        f"{title} failed unexpectedly ({type(error).__name__}{': ' + detail if detail else ''}); details in "
        f"the log (View > Panels > Log Messages, tab '{LOG_TAG}'). Please report it with those details."
    )


def engine_hooks(feedback: QgsProcessingFeedback) -> tuple[Callable[[float, str], None], Callable[[], bool]]:
    """The engine's (progress, cancelled) callables on top of a Processing feedback."""
    last_message: list[str] = [""]

    def progress(percent: float, message: str) -> None:
        feedback.setProgress(percent)
        if message and message != last_message[0]:  # the dialog shows it; repeating it only costs time
            last_message[0] = message
            feedback.setProgressText(message)

    return progress, cancel_check(feedback)


# how often a run on the main thread lets Qt deliver events (qgis_process's Ctrl-C among them)
EVENT_PUMP_S = 0.25


def cancel_check(feedback: QgsProcessingFeedback) -> Callable[[], bool]:
    """feedback.isCanceled, which on the main thread (qgis_process, processing.run from the console) also
    lets Qt deliver pending events every EVENT_PUMP_S: qgis_process turns Ctrl-C into a cancel through an
    event, and otherwise looks at events only when the progress moves by 0.1 %, minutes on a long run.
    Background tasks (the dock, the toolbox) are left alone: their cancel needs no event here."""
    from qgis.PyQt.QtCore import QCoreApplication, QThread

    application = QCoreApplication.instance()
    if application is None or QThread.currentThread() != application.thread():
        return feedback.isCanceled
    last_pump = [time.monotonic()]

    def cancelled() -> bool:
        now = time.monotonic()
        if now - last_pump[0] >= EVENT_PUMP_S:
            last_pump[0] = now
            QCoreApplication.processEvents()
        return feedback.isCanceled()

    return cancelled
