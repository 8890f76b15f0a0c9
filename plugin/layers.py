"""QGIS layers as the plain files the engine reads, and the plugin's styles on the layers it writes."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    Qgis,
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingUtils,
    QgsProject,
    QgsProviderRegistry,
    QgsRasterLayer,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

from . import RESOURCES_DIR
from .log import log

STYLE_KINDS = ("buildings", "probability", "mask", "error_map", "false_positives", "missed")
VECTOR_KINDS = ("buildings", "false_positives", "missed")
# custom layer property naming what the plugin wrote into a layer (a STYLE_KINDS value): such layers are
# results, never training images or labels
OUTPUT_PROPERTY = "unet_buildings/output"
# the tag the engine writes into its GeoTIFFs (model.io.rasters.KIND_TAG), for outputs loaded from disk
KIND_TAG = "UNET_BUILDINGS_KIND"


def layer_file(layer: QgsMapLayer) -> str:
    """The local file behind a layer, '' when there is none."""
    provider = layer.providerType() if layer is not None else ""
    if provider not in ("gdal", "ogr"):
        return ""
    path = QgsProviderRegistry.instance().decodeUri(provider, layer.source()).get("path") or ""
    return path if path and Path(path).is_file() else ""


def is_plugin_output(layer: QgsMapLayer) -> bool:
    """A probability, mask, error map or building layer this plugin wrote (added by the dock or the toolbox,
    or a GeoTIFF the engine tagged, loaded by hand)."""
    if layer.customProperty(OUTPUT_PROPERTY):
        return True
    if isinstance(layer, QgsRasterLayer) and layer.providerType() == "gdal":
        path = layer_file(layer)
        if path:
            from osgeo import gdal

            dataset = gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_READONLY)
            return dataset is not None and bool(dataset.GetMetadataItem(KIND_TAG))
    return False


def raster_path(layer: QgsRasterLayer, role: str) -> str:
    """The local file behind a raster layer; web services and in-memory rasters cannot be streamed
    window by window by the engine, so they are refused with what to do instead."""
    if layer.providerType() == "gdal":
        path = QgsProviderRegistry.instance().decodeUri("gdal", layer.source()).get("path") or ""
        if path and Path(path).is_file():
            return path
    raise QgsProcessingException(
        f"The {role} layer '{layer.name()}' is not a local raster file (it comes from "
        f"'{layer.providerType()}'). Save it as a GeoTIFF first (right-click the layer > Export > Save As...) "
        "and use the saved file."
    )


def vector_path(
    layer: QgsVectorLayer, role: str, context: QgsProcessingContext, feedback: QgsProcessingFeedback | None
) -> str:
    """The polygon file behind a vector layer, or a temporary GeoPackage copy when the engine could not
    read the layer as it is (memory or database layers, a filter, one layer of a multi-layer file)."""
    from ..model.io.rasters import is_vector  # the engine decides which files it reads

    if layer.providerType() == "ogr" and not layer.subsetString():
        parts = QgsProviderRegistry.instance().decodeUri("ogr", layer.source())
        path = parts.get("path") or ""
        if path and Path(path).is_file() and is_vector(path) and not parts.get("layerName"):
            return path
    temporary = QgsProcessingUtils.generateTempFilename(f"{role.replace(' ', '_')}.gpkg")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    error, message, *_ = QgsVectorFileWriter.writeAsVectorFormatV3(
        layer, temporary, context.transformContext(), options
    )
    if error != QgsVectorFileWriter.WriterError.NoError:
        raise QgsProcessingException(
            f"The {role} layer '{layer.name()}' could not be copied to a temporary "
            f"GeoPackage ({message}). Save it as a GeoPackage and use that file."
        )
    if feedback is not None:
        feedback.pushInfo(
            f"The {role} layer '{layer.name()}' is not a plain local file: using a temporary copy {temporary}."
        )
    return temporary


def layer_path(
    layer: QgsMapLayer | None, role: str, context: QgsProcessingContext, feedback: QgsProcessingFeedback | None
) -> str:
    """Raster or polygon layer -> a path the engine opens."""
    if isinstance(layer, QgsRasterLayer):
        return raster_path(layer, role)
    if isinstance(layer, QgsVectorLayer):
        return vector_path(layer, role, context, feedback)
    raise QgsProcessingException(f"The {role} layer is missing or is neither a raster nor a vector layer.")


def style_path(kind: str) -> Path:
    return RESOURCES_DIR / "styles" / f"{kind}.qml"


def apply_style(layer: QgsMapLayer, kind: str) -> None:
    message, ok = layer.loadNamedStyle(str(style_path(kind)))
    if not ok:
        log(f"Could not apply the {kind} style to '{layer.name()}': {message}")
    layer.triggerRepaint()


class StylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Styles an output layer when Processing (toolbox, batch, model designer) loads it into the project."""

    # QGIS takes ownership of a post-processor and deletes it once used (a batch run reusing one finds it
    # deleted), so every output gets its own; Python must still keep the object alive itself, else its
    # Python part is collected while QGIS holds only the C++ pointer. One per destination, replaced on reuse.
    _instances: dict[str, StylePostProcessor] = {}

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def postProcessLayer(
        self,
        layer: QgsMapLayer,
        context: QgsProcessingContext,  # noqa: N802
        feedback: QgsProcessingFeedback,
    ) -> None:
        apply_style(layer, self.kind)
        layer.setCustomProperty(OUTPUT_PROPERTY, self.kind)

    @classmethod
    def for_output(cls, destination: str, kind: str) -> StylePostProcessor:
        cls._instances[destination] = cls(kind)
        return cls._instances[destination]


def style_on_completion(context: QgsProcessingContext, destination: str, kind: str, source_name: str = "") -> None:
    """Style ``destination`` if the caller loads it into the project (the toolbox does, a script may not),
    and name it after ``source_name`` too ("kampala buildings" rather than the output's bare "Buildings")."""
    if destination and context.willLoadLayerOnCompletion(destination):
        details = context.layerToLoadOnCompletionDetails(destination)
        details.setPostProcessor(StylePostProcessor.for_output(destination, kind))
        if source_name and details.name:
            details.name = f"{source_name} {details.name[:1].lower()}{details.name[1:]}"


def add_result_group(name: str) -> QgsLayerTreeGroup:
    """A group for one run's results at the top of the layer tree, where they are seen: never under the
    layer that happens to be selected (which may be the image, hiding them)."""
    return QgsProject.instance().layerTreeRoot().insertGroup(0, name)


def add_styled_layer(
    path: str, name: str, kind: str, visible: bool = True, group: QgsLayerTreeGroup | None = None
) -> QgsMapLayer | None:
    """Adds a file the engine wrote to the project with the plugin's style: at the end of ``group``, or at
    the top of the layer tree without one; switched off when not ``visible``. Main thread only."""
    layer = QgsVectorLayer(path, name, "ogr") if kind in VECTOR_KINDS else QgsRasterLayer(path, name)
    if not layer.isValid():
        log(f"Could not load '{path}' as a layer.", Qgis.MessageLevel.Warning)
        return None
    apply_style(layer, kind)
    layer.setCustomProperty(OUTPUT_PROPERTY, kind)
    project = QgsProject.instance()
    project.addMapLayer(layer, False)  # placed here, not where the selected layer would put it
    node = group.addLayer(layer) if group is not None else project.layerTreeRoot().insertLayer(0, layer)
    if not visible:
        node.setItemVisibilityChecked(False)
    return layer
