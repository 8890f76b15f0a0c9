"""Extract buildings: predict + vectorize in one step, from an image straight to building polygons."""

from __future__ import annotations

import os
from collections.abc import Iterable

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingMultiStepFeedback,
    QgsProcessingUtils,
)

from .base import EngineAlgorithm
from .outputs import output_layer
from .predict import PREDICTION_HELP, add_prediction_parameters, add_raster_outputs, raster_outputs, run_prediction
from .vectorize import POLYGON_HELP, add_polygon_parameters, write_buildings


class ExtractAlgorithm(EngineAlgorithm):
    ALGORITHM_ID = "extract"
    TITLE = "Extract buildings"
    GROUP = "Prediction"
    GROUP_ID = "prediction"
    SUMMARY = (
        "From an image to building polygons in one step: predicts building probability with a trained "
        "U-Net (as Predict building rasters) and vectorizes the mask (as Vectorize building mask). "
        "The rasters are kept only when you ask for them."
    )
    PARAMETER_HELP = {
        **PREDICTION_HELP,
        **POLYGON_HELP,
        "OUTPUT_PROBABILITY": "Optional: also keep the building probability raster (byte, probability x 254).",
        "OUTPUT_MASK": "Optional: also keep the building mask raster (1 = building). Without it the mask is "
        "a temporary file.",
    }

    def initAlgorithm(self, configuration: dict | None = None) -> None:  # noqa: N802
        add_prediction_parameters(self)
        add_polygon_parameters(self)
        add_raster_outputs(self, create_by_default=False)

    def run_engine(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        probability_path = output_layer(self, parameters, "OUTPUT_PROBABILITY", context)
        mask_path = output_layer(self, parameters, "OUTPUT_MASK", context)
        # Vectorizing needs a mask file, and the mean_probability attribute a probability file, whether
        # or not the user keeps them.
        working_mask = mask_path or QgsProcessingUtils.generateTempFilename("building_mask.tif")
        working_probability = probability_path or QgsProcessingUtils.generateTempFilename("building_probability.tif")
        steps = QgsProcessingMultiStepFeedback(2, feedback)
        result = run_prediction(self, parameters, context, steps, working_probability, working_mask)
        steps.setCurrentStep(1)
        from ..layers import raster_path

        image = self.parameterAsRasterLayer(parameters, "INPUT", context)
        made_from = (raster_path(image, "image"), self.parameterAsFile(parameters, "MODEL", context))
        written = (working_mask, working_probability)
        try:
            outputs = write_buildings(
                self, parameters, context, steps, working_mask, working_probability, image.crs(), *made_from
            )
        except BaseException:
            remove_files(written)  # a failed or cancelled run leaves no rasters of its own behind either
            raise
        # the working rasters nobody asked for go now, not when QGIS exits: they are as large as the image
        remove_files(path for path in written if path not in (mask_path, probability_path))
        return {**outputs, **raster_outputs(self, probability_path, mask_path, result.threshold)}


def remove_files(paths: Iterable[str]) -> None:
    for path in paths:
        try:
            os.remove(path)
        except OSError:  # never written (the prediction failed first), or already gone
            pass
