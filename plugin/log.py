"""Messages to the QGIS message log, under the plugin's own tab."""

from qgis.core import Qgis, QgsMessageLog

from . import LOG_TAG


def log(message: str, level: Qgis.MessageLevel = Qgis.MessageLevel.Info) -> None:
    QgsMessageLog.logMessage(message, LOG_TAG, level)
