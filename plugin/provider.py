"""The Processing provider: the algorithms under "U-Net Building Extractor" in the toolbox."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from . import DISPLAY_NAME, ICON_PATH, PROVIDER_ID
from .algorithms.evaluate import EvaluateAlgorithm
from .algorithms.export import ExportAlgorithm
from .algorithms.extract import ExtractAlgorithm
from .algorithms.predict import PredictAlgorithm
from .algorithms.train import TrainAlgorithm
from .algorithms.vectorize import VectorizeAlgorithm

ALGORITHMS = (
    TrainAlgorithm,
    PredictAlgorithm,
    VectorizeAlgorithm,
    ExtractAlgorithm,
    EvaluateAlgorithm,
    ExportAlgorithm,
)


class UNetBuildingsProvider(QgsProcessingProvider):
    def id(self) -> str:
        return PROVIDER_ID

    def name(self) -> str:
        return DISPLAY_NAME

    def longName(self) -> str:  # noqa: N802
        from ..model import __version__

        return f"{DISPLAY_NAME} {__version__}"

    def icon(self) -> QIcon:
        return QIcon(str(ICON_PATH))

    def loadAlgorithms(self) -> None:  # noqa: N802
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802
        return ["tif"]  # the engine writes tiled, compressed GeoTIFFs only
