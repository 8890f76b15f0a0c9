"""Export: a model file as ONNX for the Deepness QGIS plugin (PUTvision/qgis-plugin-deepness)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
)

from ...model.training.start_model import starter_model
from .base import EngineAlgorithm

PER_IMAGE_WARNING = (
    "This model standardises every image by that image's own statistics (per-image normalisation). Deepness "
    "sees one tile at a time, so the export uses the training images' average statistics instead: on imagery "
    "brighter, darker or more contrasted than the training images Deepness will mark other pixels as building "
    "than this plugin's Predict does. Check a few results side by side before relying on it, or train with the "
    "default normalisation (dataset), whose exports Deepness runs as Predict does."
)


class ExportAlgorithm(EngineAlgorithm):
    ALGORITHM_ID = "export"
    SOURCE_PARAMETER = ""
    TITLE = "Export model for Deepness (ONNX)"
    GROUP = "Prediction"
    GROUP_ID = "prediction"
    SUMMARY = (
        "Writes a model file as an ONNX model with the metadata the Deepness plugin reads (segmentation "
        "model, tile size and overlap, resolution, threshold, no extra mask filtering), so the model also "
        'runs in Deepness: pick the .onnx file there and press "Load default parameters".'
    )
    PARAMETER_HELP = {
        "MODEL": "A model file (.pt) written by the Train algorithm, trained on 8-bit (Byte) imagery: Deepness "
        "feeds 8-bit bands only.",
        "OUTPUT": "The ONNX file to write (.onnx). The model's normalisation is built into it.",
    }

    def initAlgorithm(self, configuration: dict | None = None) -> None:  # noqa: N802
        starter = starter_model()
        self.addParameter(
            QgsProcessingParameterFile(
                "MODEL", "Model file (.pt)", extension="pt", defaultValue=str(starter) if starter else None
            )
        )
        self.addParameter(QgsProcessingParameterFileDestination("OUTPUT", "ONNX model", "ONNX models (*.onnx)"))

    def run_engine(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        from ...model.net.export import export_onnx
        from ...model.net.modelfile import read_payload

        model = Path(self.parameterAsFile(parameters, "MODEL", context))
        output = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        if read_payload(model)["info"].get("normalization", {}).get("mode") == "per_image":
            feedback.pushWarning(PER_IMAGE_WARNING)
        feedback.setProgress(10)
        written = export_onnx(model, output)
        feedback.setProgress(100)
        feedback.pushInfo(
            f'Written {written}: in Deepness pick it as the model file and press "Load default parameters".'
        )
        return {"OUTPUT": str(written)}
