"""The files behind the algorithms' inputs and outputs: what they are (local files, not databases or
web services), the checks made before a run (no output over an input, the format the name says), and
feature sinks written whole under a temporary name and renamed into place, or not at all."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsFeatureSink,
    QgsFields,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputLayerDefinition,
    QgsProperty,
    QgsVectorFileWriter,
    QgsWkbTypes,
)

INPUT_TYPES = {"raster", "vector", "layer", "multilayer", "file", "source", "mesh", "pointcloud"}


def local_file(source: str) -> str | None:
    """The local file behind a layer source or destination ('a.gpkg|layername=b' -> 'a.gpkg'); None for
    memory layers, databases and web services."""
    path = (source or "").split("|")[0].strip()
    if not path or "://" in path or path.startswith(("memory:", "ogr:", "postgres:", "dbname=")):
        return None
    return path


def output_layer(algorithm: QgsProcessingAlgorithm, parameters: dict, name: str, context: QgsProcessingContext) -> str:
    """The destination of the layer output ``name`` ("" for an optional output left empty), as
    ``parameterAsOutputLayer`` gives it, without the empty name that call lists among the layers to load
    when the output is a definition with an empty sink. The batch dialog passes every optional output
    left blank that way, and loading "" ends each of its rows with "The following layers were not
    correctly generated" in red."""
    destination = algorithm.parameterAsOutputLayer(parameters, name, context)
    if not destination:
        layers = context.layersToLoadOnCompletion()
        if layers.pop("", None) is not None:
            context.setLayersToLoadOnCompletion(layers)
    return destination


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
            value = output_layer(algorithm, parameters, definition.name(), context)
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
    definition = QgsProcessingOutputLayerDefinition(
        value if isinstance(value, QgsProcessingOutputLayerDefinition) else str(value)
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
