"""Vectorize: a building mask raster to building polygons in any vector format."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QMetaType, QVariant

from ...model.choices import DEFAULT_MIN_AREA_M2, DEFAULT_SIMPLIFY_M
from .base import EngineAlgorithm, advanced, engine_hooks
from .outputs import write_features

# Shared with extract
POLYGON_HELP = {
    "MIN_AREA": "Smallest building kept, in square metres on the ground, whatever the CRS (converted at the "
    "raster's centre). 0 keeps every blob.",
    "SIMPLIFY": "Tolerance of the outline simplification, in metres on the ground, whatever the CRS (converted "
    "at the raster's centre; e.g. about one pixel size). 0 keeps the pixel staircase.",
    "OUTPUT": "Building polygons with the attributes id, area_m2 and perimeter_m (on the ground, whatever the "
    "CRS, to 0.01 m² and 0.01 m), mean_probability (empty without a probability raster), and source, model "
    "and created: the image (or mask) and model file names and the run's UTC time. Any vector format, or a "
    "temporary layer.",
    "FILL_HOLES": "(advanced) Holes smaller than this area, in square metres on the ground whatever the CRS "
    "(converted at the raster's centre), are filled: courtyards bigger than it stay.",
    "REGULARIZE": "(advanced) Square the outlines: right angles along each building's main direction.",
}


def add_polygon_parameters(algorithm: EngineAlgorithm) -> None:
    """MIN_AREA, SIMPLIFY, OUTPUT, plus the advanced FILL_HOLES and REGULARIZE."""
    algorithm.addParameter(
        QgsProcessingParameterNumber(
            "MIN_AREA",
            "Minimum building area (m² on the ground)",
            QgsProcessingParameterNumber.Type.Double,
            defaultValue=DEFAULT_MIN_AREA_M2,
            minValue=0.0,
        )
    )
    algorithm.addParameter(
        QgsProcessingParameterNumber(
            "SIMPLIFY",
            "Simplification tolerance (m on the ground)",
            QgsProcessingParameterNumber.Type.Double,
            defaultValue=DEFAULT_SIMPLIFY_M,
            minValue=0.0,
        )
    )
    algorithm.addParameter(
        advanced(
            QgsProcessingParameterNumber(
                "FILL_HOLES",
                "Fill holes smaller than (m² on the ground)",
                QgsProcessingParameterNumber.Type.Double,
                defaultValue=0.0,
                minValue=0.0,
            )
        )
    )
    algorithm.addParameter(
        advanced(QgsProcessingParameterBoolean("REGULARIZE", "Square the outlines (right angles)", defaultValue=False))
    )
    algorithm.addParameter(
        QgsProcessingParameterFeatureSink(
            "OUTPUT",
            "Buildings",
            QgsProcessing.SourceType.TypeVectorPolygon,
            defaultValue=QgsProcessing.TEMPORARY_OUTPUT,
        )
    )
    algorithm.addOutput(QgsProcessingOutputNumber("BUILDING_COUNT", "Number of buildings"))
    algorithm.addOutput(QgsProcessingOutputNumber("BUILT_UP_AREA_M2", "Built-up area (m² on the ground)"))


def typed_field(name: str, type_name: str) -> QgsField:
    """A field of a Qt value type ("LongLong", "Double", "String"): QGIS 3.38 and later (every Qt6 build
    among them) take QMetaType.Type, which PyQt6 has instead of QVariant.Type (and names String QString);
    older QGIS takes QVariant.Type."""
    if Qgis.versionInt() >= 33800:
        return QgsField(name, getattr(QMetaType.Type, "QString" if type_name == "String" else type_name))
    return QgsField(name, getattr(QVariant.Type, type_name))


QT_TYPE_OF_OGR = {"OFTInteger64": "LongLong", "OFTReal": "Double", "OFTString": "String"}


def building_fields() -> QgsFields:
    """The engine's polygon schema (``vector_io.FIELDS``) as QGIS fields: both writers give one table."""
    from ...model.io.vector_io import FIELDS

    fields = QgsFields()
    for _, name, ogr_type in FIELDS:
        fields.append(typed_field(name, QT_TYPE_OF_OGR[ogr_type]))
    return fields


def write_buildings(
    algorithm: EngineAlgorithm,
    parameters: dict,
    context: QgsProcessingContext,
    feedback: QgsProcessingFeedback,
    mask_path: str,
    probability_path: str | None,
    crs: QgsCoordinateReferenceSystem,
    source: str,
    model: str | None = None,
) -> dict:
    """Vectorizes ``mask_path`` into the OUTPUT sink, every polygon saying it was made from the files
    ``source`` (image or mask) and ``model`` (``vector_io.with_provenance``); returns OUTPUT,
    BUILDING_COUNT and BUILT_UP_AREA_M2 (the sum of the buildings' area_m2)."""
    from ...model.io.vector_io import with_provenance
    from ...model.vectors.vectorize import polygons_from_mask

    fields = building_fields()
    progress, cancelled = engine_hooks(feedback)
    # the engine checks the mask when called, so a wrong input is refused before the output exists
    polygons = polygons_from_mask(
        mask_path,
        probability_path=probability_path or None,
        min_area_m2=algorithm.parameterAsDouble(parameters, "MIN_AREA", context),
        simplify_m=algorithm.parameterAsDouble(parameters, "SIMPLIFY", context),
        fill_holes_below_m2=algorithm.parameterAsDouble(parameters, "FILL_HOLES", context),
        regularize=algorithm.parameterAsBoolean(parameters, "REGULARIZE", context),
        progress=progress,
        cancelled=cancelled,
    )
    areas_m2: list[float] = []
    destination, count = write_features(
        algorithm,
        parameters,
        "OUTPUT",
        context,
        fields,
        QgsWkbTypes.Type.Polygon,
        crs,
        features(with_provenance(polygons, source, model), fields, areas_m2),
    )
    algorithm.style_output(destination, "buildings")
    return {"OUTPUT": destination, "BUILDING_COUNT": count, "BUILT_UP_AREA_M2": round(math.fsum(areas_m2), 2)}


def features(polygons: Iterable, fields: QgsFields, areas_m2: list[float]) -> Iterator[QgsFeature]:
    """Engine (shapely geometry, attributes) pairs -> features; each building's area_m2 goes to ``areas_m2``."""
    from ...model.io.vector_io import FIELDS

    for shape, attributes in polygons:
        areas_m2.append(attributes["area_m2"])
        geometry = QgsGeometry()
        geometry.fromWkb(shape.wkb)  # the engine yields one shapely Polygon per building
        feature = QgsFeature(fields)
        feature.setGeometry(geometry)
        feature.setAttributes([attributes.get(key) for key, _, _ in FIELDS])  # building_fields' order
        yield feature


class VectorizeAlgorithm(EngineAlgorithm):
    ALGORITHM_ID = "vectorize"
    TITLE = "Vectorize building mask"
    GROUP = "Prediction"
    GROUP_ID = "prediction"
    SUMMARY = (
        "Turns a building mask raster (1 = building) into one polygon per building. Buildings cut by "
        "the processing windows are merged back; small blobs can be dropped, outlines simplified, "
        "small holes filled and corners squared."
    )
    PARAMETER_HELP = {
        "INPUT": "Building mask raster, e.g. the mask output of Predict (1 = building, 0 = background, 255 = no data).",
        "PROBABILITY": "(advanced) The probability raster of the same prediction, to fill the mean_probability "
        "attribute.",
        **POLYGON_HELP,
    }

    def initAlgorithm(self, configuration: dict | None = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Building mask"))
        self.addParameter(
            advanced(
                QgsProcessingParameterRasterLayer(
                    "PROBABILITY", "Building probability (for the mean_probability attribute)", optional=True
                )
            )
        )
        add_polygon_parameters(self)

    def run_engine(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        from ..layers import raster_path

        mask_layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        probability_layer = self.parameterAsRasterLayer(parameters, "PROBABILITY", context)
        probability_path = raster_path(probability_layer, "probability") if probability_layer else None
        mask_path = raster_path(mask_layer, "mask")
        return write_buildings(
            self, parameters, context, feedback, mask_path, probability_path, mask_layer.crs(), mask_path
        )
