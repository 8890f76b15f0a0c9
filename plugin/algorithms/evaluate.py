"""Evaluate: a prediction against labels: confusion matrix, scores, error map and an HTML report."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsFields,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterVectorLayer,
    QgsProcessingUtils,
    QgsWkbTypes,
)

from .base import EngineAlgorithm, advanced, building_values_parameter, engine_hooks, threshold_parameter
from .outputs import output_layer, write_features

# output name -> (title, ConfusionMatrix attribute)
COUNT_OUTPUTS = {
    "TP": ("True positives (building pixels found)", "tp"),
    "FP": ("False positives (background marked building)", "fp"),
    "FN": ("False negatives (building pixels missed)", "fn"),
    "TN": ("True negatives", "tn"),
}
SCORE_OUTPUTS = {
    "ACCURACY": ("Overall accuracy", "accuracy"),
    "PRECISION": ("Precision", "precision"),
    "RECALL": ("Recall", "recall"),
    "F1": ("F1 score", "f1"),
    "IOU": ("Building IoU", "iou"),
    "KAPPA": ("Cohen's kappa", "kappa"),
    "BACKGROUND_IOU": ("Background IoU", "background_iou"),
    "MEAN_IOU": ("Mean IoU (building and background)", "mean_iou"),
}
# object-level scores (one-to-one matches at OBJECT_IOU), from ObjectScores
OBJECT_OUTPUTS = {
    "OBJECT_PRECISION": ("Object precision", "precision"),
    "OBJECT_RECALL": ("Object recall", "recall"),
    "OBJECT_F1": ("Object F1", "f1"),
}


def score_text(value: float) -> str:
    """A score for the log: 'n/a' where it is undefined (NaN), the reason following as a warning."""
    return "n/a" if math.isnan(value) else f"{value:.4f}"


class EvaluateAlgorithm(EngineAlgorithm):
    ALGORITHM_ID = "evaluate"
    SOURCE_PARAMETER = "PREDICTION"
    TITLE = "Evaluate buildings against labels"
    GROUP = "Evaluation"
    GROUP_ID = "evaluation"
    SUMMARY = (
        "Compares a building prediction with reference labels pixel by pixel (no-data pixels of either "
        "are not counted): the confusion matrix, overall accuracy, precision, recall, F1, building IoU "
        "and Cohen's kappa as numeric outputs, plus object-level scores (a predicted building matches "
        "a true one at IoU >= 0.5) in an HTML report and a JSON file beside it. Labels that cannot be the "
        "buildings meant (an image, a continuous raster, building values marking none or nearly all of the "
        "labelled pixels) are refused. A score that is undefined (NaN) or 0 because one side holds no building "
        "comes with the reason in the log, the report and the WARNINGS output."
    )
    PARAMETER_HELP = {
        "PREDICTION": "The prediction: a building mask raster (1 = building), a probability raster (thresholded "
        "with THRESHOLD) or building polygons.",
        "LABELS": "The reference: a class raster (any CRS, resolution or extent; aligned onto the prediction) "
        "or building polygons.",
        "BUILDING_VALUES": "Class values of the label raster that mean building, comma-separated: 1 for a 0/1 building "
        "mask (the default), 2 for the paper's classes, or e.g. 2,5. Ignored for polygon labels.",
        "THRESHOLD": "For a probability raster: probability from which a pixel counts as building. Empty: 0.5.",
        "OUTPUT_REPORT": "HTML report with the confusion matrix and every score; a .json file with the same "
        "numbers is written beside it.",
        "OUTPUT_ERROR_MAP": "Optional error map raster: 0 true negative, 1 false positive, 2 false negative, "
        "3 true positive, 255 no data.",
        "OUTPUT_FALSE_POSITIVES": "Optional polygon layer of the predicted buildings that match no true building "
        "(at the object match IoU): false alarms. Attributes: id, area_m2 (square metres on the ground, "
        "whatever the CRS).",
        "OUTPUT_MISSED": "Optional polygon layer of the true buildings that no predicted building matches: missed "
        "buildings. Attributes: id, area_m2.",
        "AOI": "(advanced) Only score pixels inside these polygons.",
        "OBJECT_IOU": "(advanced) IoU from which a predicted building matches a true one in the object scores "
        "(OBJECT_PRECISION, OBJECT_RECALL, OBJECT_F1).",
        "PIXEL_SIZE": "(advanced) Only when both layers are polygons: the pixel size, in map units of the "
        "prediction layer, at which they are compared.",
    }

    def initAlgorithm(self, configuration: dict | None = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterMapLayer("PREDICTION", "Prediction (mask raster or polygons)"))
        self.addParameter(QgsProcessingParameterMapLayer("LABELS", "Labels (class raster or polygons)"))
        self.addParameter(building_values_parameter())
        self.addParameter(threshold_parameter("Probability threshold (probability rasters only)"))
        self.addParameter(
            advanced(
                QgsProcessingParameterVectorLayer(
                    "AOI", "Area of interest", [QgsProcessing.SourceType.TypeVectorPolygon], optional=True
                )
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterNumber(
                    "OBJECT_IOU",
                    "Object match IoU",
                    QgsProcessingParameterNumber.Type.Double,
                    defaultValue=0.5,
                    minValue=0.0,
                    maxValue=1.0,
                )
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterNumber(
                    "PIXEL_SIZE",
                    "Comparison pixel size for two polygon layers (map units)",
                    QgsProcessingParameterNumber.Type.Double,
                    optional=True,
                    minValue=0.0,
                )
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                "OUTPUT_REPORT", "Report", "HTML files (*.html)", optional=True, createByDefault=True
            )
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                "OUTPUT_ERROR_MAP", "Error map", optional=True, createByDefault=False
            )
        )
        for name, title in (
            ("OUTPUT_FALSE_POSITIVES", "False-positive buildings"),
            ("OUTPUT_MISSED", "Missed buildings"),
        ):
            self.addParameter(
                QgsProcessingParameterFeatureSink(
                    name, title, QgsProcessing.SourceType.TypeVectorPolygon, optional=True, createByDefault=False
                )
            )
        for name, (title, _) in {**COUNT_OUTPUTS, **SCORE_OUTPUTS}.items():
            self.addOutput(QgsProcessingOutputNumber(name, title))
        for name, (title, _) in OBJECT_OUTPUTS.items():
            self.addOutput(QgsProcessingOutputNumber(name, title))
        self.addOutput(QgsProcessingOutputFile("OUTPUT_REPORT_JSON", "Report (JSON)"))
        # numeric outputs cannot hold text: why a score is undefined (NaN) or 0 is said here, '' when all is well
        self.addOutput(QgsProcessingOutputString("WARNINGS", "Why scores are undefined or 0"))

    def run_engine(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        from ...model.choices import parse_building_values
        from ...model.evaluation.evaluate import evaluate
        from ..layers import layer_path

        prediction = layer_path(
            self.parameterAsLayer(parameters, "PREDICTION", context), "prediction", context, feedback
        )
        labels = layer_path(self.parameterAsLayer(parameters, "LABELS", context), "label", context, feedback)
        aoi_layer = self.parameterAsVectorLayer(parameters, "AOI", context)
        aoi = layer_path(aoi_layer, "area of interest", context, feedback) if aoi_layer else None
        report = self.parameterAsFileOutput(
            parameters, "OUTPUT_REPORT", context
        ) or QgsProcessingUtils.generateTempFilename("evaluation.html")
        report_json = str(Path(report).with_suffix(".json"))
        error_map = output_layer(self, parameters, "OUTPUT_ERROR_MAP", context)
        progress, cancelled = engine_hooks(feedback)
        result = evaluate(
            prediction,
            labels,
            parse_building_values(self.parameterAsString(parameters, "BUILDING_VALUES", context)),
            threshold=self.optional_number(parameters, "THRESHOLD", context),
            aoi=aoi,
            error_map_path=error_map or None,
            report_html_path=report,
            report_json_path=report_json,
            object_iou_threshold=self.parameterAsDouble(parameters, "OBJECT_IOU", context),
            pixel_size_map_units=self.optional_number(parameters, "PIXEL_SIZE", context),
            progress=progress,
            cancelled=cancelled,
        )
        outputs = {
            name: getattr(result.matrix, attribute)
            for name, (_, attribute) in {**COUNT_OUTPUTS, **SCORE_OUTPUTS}.items()
        }
        outputs.update(
            {
                name: getattr(result.objects, attribute) if result.objects else None
                for name, (_, attribute) in OBJECT_OUTPUTS.items()
            }
        )
        feedback.pushInfo(
            "Confusion matrix (pixels): " + ", ".join(f"{name} {outputs[name]}" for name in COUNT_OUTPUTS)
        )
        feedback.pushInfo(
            "Scores: " + ", ".join(f"{name.lower()} {score_text(outputs[name])}" for name in SCORE_OUTPUTS)
        )
        for warning in result.warnings:
            feedback.pushWarning(warning)
        self.style_output(error_map, "error_map")
        crs = QgsCoordinateReferenceSystem.fromWkt(result.grid.crs_wkt or "")
        for name, shapes, kind in (
            ("OUTPUT_FALSE_POSITIVES", result.false_positive_objects, "false_positives"),
            ("OUTPUT_MISSED", result.missed_objects, "missed"),
        ):
            outputs[name] = self.write_objects(parameters, name, context, shapes, result.ground_area, crs, kind)
        return {
            **outputs,
            "OUTPUT_REPORT": report,
            "OUTPUT_REPORT_JSON": report_json,
            "OUTPUT_ERROR_MAP": error_map or None,
            "WARNINGS": " ".join(result.warnings),
        }

    def write_objects(
        self,
        parameters: dict,
        name: str,
        context: QgsProcessingContext,
        shapes: list,
        ground_area: Callable[[object], float],
        crs: QgsCoordinateReferenceSystem,
        kind: str,
    ):
        """Unmatched buildings (engine shapely polygons) into an optional sink; its destination, or None."""
        from .vectorize import typed_field

        fields = QgsFields()
        fields.append(typed_field("fid", "LongLong"))  # a GeoPackage's feature id column, not a second one
        fields.append(typed_field("area_m2", "Double"))

        def features() -> Iterator[QgsFeature]:
            for index, shape in enumerate(shapes, 1):
                geometry = QgsGeometry()
                geometry.fromWkb(shape.wkb)
                geometry.convertToMultiType()
                feature = QgsFeature(fields)
                feature.setGeometry(geometry)
                feature.setAttributes([index, ground_area(shape)])
                yield feature

        destination, _ = write_features(
            self, parameters, name, context, fields, QgsWkbTypes.Type.MultiPolygon, crs, features()
        )
        self.style_output(destination, kind)
        return destination
