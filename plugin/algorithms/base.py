"""What every algorithm of the provider shares: identity and help, the dependency check, engine errors
as plain Processing errors, progress and cancel wired to the feedback, styled outputs."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from html import escape
from pathlib import Path
from typing import Callable

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsFeatureSink,
    QgsFields,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProperty,
    QgsVectorFileWriter,
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QIcon

from ...model.choices import DEVICE_CHOICES
from .. import ICON_PATH, LOG_TAG
from ..dependencies import dependency_problem

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

    def __init__(self) -> None:
        super().__init__()
        # output destination -> style kind, applied in postProcessAlgorithm (main thread)
        self._styles: dict[str, str] = {}

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
            style_on_completion(context, destination, kind)
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
INPUT_TYPES = {"raster", "vector", "layer", "multilayer", "file", "source", "mesh", "pointcloud"}


def local_file(source: str) -> str | None:
    """The local file behind a layer source or destination ('a.gpkg|layername=b' -> 'a.gpkg'); None for
    memory layers, databases and web services."""
    path = (source or "").split("|")[0].strip()
    if not path or "://" in path or path.startswith(("memory:", "ogr:", "postgres:", "dbname=")):
        return None
    return path


def destination_paths(
    algorithm: QgsProcessingAlgorithm, parameters: dict, context: QgsProcessingContext
) -> dict[str, str]:
    """Every output file the run will write, by parameter name (temporary outputs and memory layers left out)."""
    paths = {}
    for definition in algorithm.parameterDefinitions():
        if not definition.isDestination() or parameters.get(definition.name()) in (None, ""):
            continue
        if definition.type() in ("fileDestination", "folderDestination"):
            value = algorithm.parameterAsFileOutput(parameters, definition.name(), context)
        else:
            value = algorithm.parameterAsOutputLayer(parameters, definition.name(), context)
        path = local_file(value)
        if path:
            paths[definition.name()] = path
    return paths


def input_paths(
    algorithm: QgsProcessingAlgorithm, parameters: dict, context: QgsProcessingContext
) -> dict[str, list[str]]:
    """Every local file the run reads, by parameter name."""
    paths: dict[str, list[str]] = {}
    for definition in algorithm.parameterDefinitions():
        name = definition.name()
        if definition.isDestination() or definition.type() not in INPUT_TYPES or parameters.get(name) in (None, ""):
            continue
        if definition.type() == "file":
            sources = [algorithm.parameterAsFile(parameters, name, context)]
        elif definition.type() == "multilayer":
            sources = [layer.source() for layer in algorithm.parameterAsLayerList(parameters, name, context)]
        else:
            layer = algorithm.parameterAsLayer(parameters, name, context)
            sources = [layer.source()] if layer is not None else []
        files = [path for path in map(local_file, sources) if path]
        if files:
            paths[name] = files
    return paths


def check_destinations(algorithm: QgsProcessingAlgorithm, parameters: dict, context: QgsProcessingContext) -> None:
    """Before any work, for every algorithm alike: no output over an input (links included) or over another
    output, every output in the format its extension names, and somewhere a file can be written."""
    import re

    from ...model.io.files import GEOTIFF_SUFFIXES, check_output_location, check_output_paths, check_output_suffix

    outputs = destination_paths(algorithm, parameters, context)
    check_output_paths(input_paths(algorithm, parameters, context), outputs)
    for name, path in outputs.items():
        definition = algorithm.parameterDefinition(name)
        if definition.type() != "folderDestination":
            check_output_location(path, name)
        if definition.type() == "rasterDestination":  # the engine writes GeoTIFFs only
            check_output_suffix(path, GEOTIFF_SUFFIXES, "a GeoTIFF", name)
        elif definition.type() == "fileDestination":
            suffixes = tuple(f".{extension.lower()}" for extension in re.findall(r"\*\.(\w+)", definition.fileFilter()))
            if suffixes:
                check_output_suffix(path, suffixes, definition.fileFilter().split("(")[0].strip() or "its format", name)


_sessions_cleaned = False


def clean_dead_sessions_leftovers() -> None:
    """Once per process: remove the temporary files that killed runs left in the processing temporary
    folders of QGIS sessions, which QGIS itself removes only when it exits normally (each output has a
    folder of its own there, so no later run writes beside them). Only this plugin's own temporary names,
    of processes that no longer run, are touched."""
    global _sessions_cleaned
    if _sessions_cleaned:
        return
    _sessions_cleaned = True
    from qgis.core import QgsProcessingUtils

    from ...model.io.files import clean_leftovers

    for folder in Path(QgsProcessingUtils.tempFolder()).parent.glob("processing_*/*"):
        if folder.is_dir():
            clean_leftovers(folder)


def write_features(
    algorithm: QgsProcessingAlgorithm,
    parameters: dict,
    name: str,
    context: QgsProcessingContext,
    fields: QgsFields,
    geometry_type: QgsWkbTypes.Type,
    crs: QgsCoordinateReferenceSystem,
    features: Iterable[QgsFeature],
) -> tuple[str | None, int]:
    """Writes ``features`` to the feature sink output ``name``; returns its destination (None for an optional
    output left out) and how many were written. A plain file is written under a temporary name beside it
    and renamed into place once it reads back whole: a killed run leaves no layer-less file under the final
    name (the next run removes its temporary file), and two runs writing one file do not collide: the
    last to finish wins. On any failure, a cancel included, nothing is left under the final name."""
    from ...model.io.files import publish, temporary_beside

    final = algorithm.parameterAsOutputLayer(parameters, name, context)
    path = local_file(final)
    target = Path(path) if path and final == path else None  # a plain file, not a layer in a database
    aside = None
    if target is not None and target.suffix and target.suffix.lower() != ".shp":  # a shapefile is several files
        aside = temporary_beside(target, ".part" + target.suffix)
        parameters = {**parameters, name: _redirected(parameters[name], aside, target.stem)}
    try:
        sink, destination = algorithm.parameterAsSink(parameters, name, context, fields, geometry_type, crs)
        if sink is None:
            return None, 0
        try:
            count = 0
            for feature in features:
                if not sink.addFeature(feature, QgsFeatureSink.Flag.FastInsert):  # a full disk, format limits
                    reason = sink.lastError() or "the format refused a feature"
                    raise QgsProcessingException(
                        f"Could not write to the output {name} ({reason}): check the free disk space "
                        "and the output's format, then run again."
                    )
                count += 1
            sink = None  # closes the file writer, so the file is complete before it is read back
            check_written_features(destination, name, count)
            if aside is not None and target is not None:
                publish(aside, target)
                _load_on_completion_as(context, destination, final)
                destination = final
        except BaseException:
            sink = None
            discard_output(str(aside) if aside is not None else destination)  # with a GeoPackage's journal
            raise
    finally:
        if aside is not None:
            aside.unlink(missing_ok=True)
    return destination, count


def _redirected(value: object, path: Path, layer_name: str) -> QgsProcessingOutputLayerDefinition:
    """The sink definition ``value`` (a path or a definition) pointed at ``path``, its layer still named
    as the final file would name it."""
    definition = (
        QgsProcessingOutputLayerDefinition(value)
        if isinstance(value, QgsProcessingOutputLayerDefinition)
        else (QgsProcessingOutputLayerDefinition(str(value)))
    )
    definition.sink = QgsProperty.fromValue(str(path))
    definition.createOptions = {**definition.createOptions, "layerName": layer_name}
    return definition


def _load_on_completion_as(context: QgsProcessingContext, written: str, final: str) -> None:
    """The project loads the renamed file, not the temporary name the sink registered."""
    layers = context.layersToLoadOnCompletion()
    if written in layers:
        layers[final] = layers.pop(written)
        context.setLayersToLoadOnCompletion(layers)


def check_written_features(destination: str, name: str, count: int) -> None:
    """Read a file output back once its sink is closed (the caller drops its last reference first): the
    layer opens and holds every feature, else it is removed and the run fails. QGIS's file writers report
    some failures (a full disk while closing a GeoPackage) only in the log."""
    from qgis.core import QgsVectorLayer

    from ...model.io.files import incomplete_output

    path = local_file(destination)
    if not path or not os.path.isfile(path):
        return  # a memory layer or a database: nothing on disk to check
    layer = QgsVectorLayer(destination, "written", "ogr")
    written = layer.featureCount() if layer.isValid() else -1
    layer = None
    if written != count:
        discard_output(destination)
        problem = "it cannot be read back" if written < 0 else f"it holds {written} of {count} features"
        raise QgsProcessingException(f"{name}: {incomplete_output(path, problem)}")


def discard_output(destination: str) -> None:
    """Remove what a failed or cancelled run wrote under an output's final name (a plain file output only;
    QGIS replaced any earlier file of that name when the run began)."""
    path = local_file(destination)
    if not path or destination != path or not os.path.isfile(path):
        return
    if path.lower().endswith(".shp"):
        QgsVectorFileWriter.deleteShapeFile(path)
        return
    for name in (path, path + "-wal", path + "-shm", path + "-journal"):
        try:
            os.remove(name)
        except OSError:
            pass


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
