"""Predict: building probability and/or mask rasters for an image, with a trained model."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingUtils,
)

from ...model.training.start_model import starter_model
from .base import EngineAlgorithm, advanced, device_parameter, engine_hooks, threshold_parameter
from .outputs import output_layer

# Shared with extract (same names, same meaning)
PREDICTION_HELP = {
    "INPUT": "The image to find buildings in: a local raster file with the bands the model was trained on, "
    "at a similar resolution (the model file records both). Any size: it is read window by window.",
    "MODEL": "A model file (.pt) written by the Train algorithm. It carries the bands, normalisation, tile "
    "size and tuned threshold it needs. When the plugin ships its starter model "
    "(resources/models/buildings_rgb_starter.pt, RGB imagery of 0.1-0.6 m), that is the default.",
    "EXTENT": "Optional area of interest: only the part of the image inside this extent is predicted (the "
    "outputs cover that part only). Empty: the whole image.",
    "THRESHOLD": "Probability from which a pixel counts as building, between 0 and 1. Empty: the threshold "
    "tuned on validation data when the model was trained.",
    "PIXEL_SIZE": "(advanced) Pixel size the network runs at, in the image's map units. Empty: the model's "
    "training resolution, compared on the ground (Web Mercator at any latitude, UTM, feet and "
    "degrees alike), finer imagery resampled to it and the results back to the image's grid; "
    "coarser imagery is not enlarged: its own pixels, up to four times the model's pixel size; 0: "
    "the image's own pixels, as they are.",
    "BATCH_SIZE": "(advanced) Tiles predicted at once; 0: as many as half a million pixels hold (two 512 px "
    "tiles). Larger is faster on a GPU but needs more memory.",
    "DEVICE": "(advanced) auto: the GPU when torch sees one, else the CPU; or force cpu or cuda.",
    "TTA": "(advanced) Test-time augmentation: average the predictions of the 8 flips and quarter turns of "
    "every tile. Slightly cleaner edges, about 8 times slower.",
}


def add_prediction_parameters(algorithm: EngineAlgorithm) -> None:
    """INPUT, MODEL, THRESHOLD and EXTENT, plus the advanced PIXEL_SIZE, BATCH_SIZE, DEVICE, TTA."""
    algorithm.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Image"))
    starter = starter_model()
    algorithm.addParameter(
        QgsProcessingParameterFile(
            "MODEL", "Model file (.pt)", extension="pt", defaultValue=str(starter) if starter else None
        )
    )
    algorithm.addParameter(threshold_parameter("Building probability threshold (empty: the model's tuned threshold)"))
    algorithm.addParameter(
        QgsProcessingParameterExtent("EXTENT", "Area of interest (empty: the whole image)", optional=True)
    )
    algorithm.addParameter(
        advanced(
            QgsProcessingParameterNumber(
                "PIXEL_SIZE",
                "Processing pixel size in map units (empty: the model's resolution; 0: the image's own)",
                QgsProcessingParameterNumber.Type.Double,
                optional=True,
                minValue=0.0,
            )
        )
    )
    algorithm.addParameter(
        advanced(
            QgsProcessingParameterNumber(
                "BATCH_SIZE",
                "Tiles per batch (0: automatic)",
                QgsProcessingParameterNumber.Type.Integer,
                defaultValue=0,
                minValue=0,
            )
        )
    )
    algorithm.addParameter(advanced(device_parameter()))
    algorithm.addParameter(
        advanced(QgsProcessingParameterBoolean("TTA", "Test-time augmentation (flips; slower)", defaultValue=False))
    )


def add_raster_outputs(algorithm: EngineAlgorithm, create_by_default: bool) -> None:
    algorithm.addParameter(
        QgsProcessingParameterRasterDestination(
            "OUTPUT_PROBABILITY", "Building probability", optional=True, createByDefault=create_by_default
        )
    )
    algorithm.addParameter(
        QgsProcessingParameterRasterDestination(
            "OUTPUT_MASK", "Building mask", optional=True, createByDefault=create_by_default
        )
    )
    algorithm.addOutput(QgsProcessingOutputNumber("THRESHOLD_USED", "Threshold used"))


def run_prediction(
    algorithm: EngineAlgorithm,
    parameters: dict,
    context: QgsProcessingContext,
    feedback: QgsProcessingFeedback,
    probability_path: str,
    mask_path: str,
):
    """Runs the engine's prediction on INPUT with MODEL; returns its PredictionResult."""
    from ...model.prediction.predict import extent_window, predict_raster
    from ..layers import raster_path

    layer = algorithm.parameterAsRasterLayer(parameters, "INPUT", context)
    image = raster_path(layer, "image")
    extent = algorithm.parameterAsExtent(parameters, "EXTENT", context, layer.crs())
    window = None
    if not extent.isNull():
        # a window of the image, not a cut-out: its pixels get the tiles and normalisation of the whole image
        window = extent_window(image, (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()))
        feedback.pushInfo(
            f"Area of interest: {extent.toString(2)}, {window.width} x {window.height} pixels of the image "
            f"from column {window.col_off}, row {window.row_off}."
        )
    progress, cancelled = engine_hooks(feedback)
    result = predict_raster(
        image,
        algorithm.parameterAsFile(parameters, "MODEL", context),
        probability_path=probability_path or None,
        mask_path=mask_path or None,
        threshold=algorithm.optional_number(parameters, "THRESHOLD", context),
        batch_size=algorithm.parameterAsInt(parameters, "BATCH_SIZE", context) or None,
        device=algorithm.device(parameters, context),
        tta=algorithm.parameterAsBoolean(parameters, "TTA", context),
        processing_pixel_size_map_units=processing_pixel_size(
            algorithm.optional_number(parameters, "PIXEL_SIZE", context)
        ),
        window=window,
        progress=progress,
        cancelled=cancelled,
    )
    size_x, size_y = result.processing_pixel_size_map_units
    how = "resampled to the model's resolution and back" if result.resampled else "the image's own pixels"
    feedback.pushInfo(
        f"Predicted {result.tile_count} tiles at {size_x:.4g} x {size_y:.4g} map units per pixel "
        f"({how}) on {result.device_description}, {result.precision}, in {result.seconds:.1f} s."
    )
    return result


def raster_outputs(algorithm: EngineAlgorithm, probability_path: str, mask_path: str, threshold: float) -> dict:
    """The outputs added by ``add_raster_outputs``, the rasters styled; a raster not asked for is None."""
    algorithm.style_output(probability_path, "probability")
    algorithm.style_output(mask_path, "mask")
    return {
        "OUTPUT_PROBABILITY": probability_path or None,
        "OUTPUT_MASK": mask_path or None,
        "THRESHOLD_USED": threshold,
    }


def processing_pixel_size(value: float | None):
    """PIXEL_SIZE as the engine takes it: None (the model's resolution), "native" (0) or a size."""
    if value is None:
        return None
    return "native" if value == 0 else value


class PredictAlgorithm(EngineAlgorithm):
    ALGORITHM_ID = "predict"
    TITLE = "Predict building rasters"
    GROUP = "Prediction"
    GROUP_ID = "prediction"
    SUMMARY = (
        "Runs a trained U-Net over an image, tile by tile with overlapping, smoothly blended tiles "
        "(no seams), and writes a building probability raster and/or a building mask raster on the "
        "image's grid (same CRS, extent and pixel size)."
    )
    PARAMETER_HELP = {
        **PREDICTION_HELP,
        "OUTPUT_PROBABILITY": "Building probability raster (GeoTIFF, byte 0-254 = probability x 254, "
        "255 = no data). Optional.",
        "OUTPUT_MASK": "Building mask raster (GeoTIFF, 1 = building, 0 = background, 255 = no data). "
        "Optional; when neither output is chosen the mask is written to a temporary file.",
    }

    def initAlgorithm(self, configuration: dict | None = None) -> None:  # noqa: N802
        add_prediction_parameters(self)
        add_raster_outputs(self, create_by_default=True)

    def run_engine(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        probability_path = output_layer(self, parameters, "OUTPUT_PROBABILITY", context)
        mask_path = output_layer(self, parameters, "OUTPUT_MASK", context)
        if not probability_path and not mask_path:
            mask_path = QgsProcessingUtils.generateTempFilename("building_mask.tif")
        result = run_prediction(self, parameters, context, feedback, probability_path, mask_path)
        return raster_outputs(self, probability_path, mask_path, result.threshold)
