"""The plugin object QGIS creates: registers the Processing provider and a button that shows the dock."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from . import DISPLAY_NAME, ICON_PATH, README_PATH
from .provider import UNetBuildingsProvider

if TYPE_CHECKING:  # the dock module is imported on first use only (see show_dock)
    from .dock.dock_widget import BuildingsDock


class UNetBuildingsPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider: UNetBuildingsProvider | None = None
        self.action: QAction | None = None
        self.help_action: QAction | None = None
        self.dock: BuildingsDock | None = None  # built on first use: it imports the engine to name the device

    def initProcessing(self) -> None:  # noqa: N802 (called by QGIS, also for qgis_process)
        self.provider = UNetBuildingsProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()
        self.action = QAction(QIcon(str(ICON_PATH)), DISPLAY_NAME, self.iface.mainWindow())
        self.action.setCheckable(True)
        self.action.setToolTip("Show the U-Net Building Extractor dock: train, predict and evaluate")
        self.action.toggled.connect(self.show_dock)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToMenu(DISPLAY_NAME, self.action)
        self.help_action = QAction("Help and about", self.iface.mainWindow())
        self.help_action.setToolTip("What the plugin does and how to use it, its measurements and licence")
        self.help_action.triggered.connect(self.show_help)
        self.iface.addPluginToMenu(DISPLAY_NAME, self.help_action)

    def show_help(self) -> None:
        from .dock.document_window import show_document

        show_document(README_PATH.as_uri(), f"{DISPLAY_NAME}: help and about", self.iface.mainWindow())

    def show_dock(self, visible: bool = True) -> None:
        if self.dock is None:
            from .dock.dock_widget import BuildingsDock

            self.dock = BuildingsDock(self.iface, self.iface.mainWindow())
            self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
            if self.action is not None:  # closing the dock with its own button unchecks the toolbar button
                self.dock.visibilityChanged.connect(self.action.setChecked)
        self.dock.setVisible(visible)

    def unload(self) -> None:
        if self.dock is not None:
            self.dock.shut_down()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.help_action is not None:
            self.iface.removePluginMenu(DISPLAY_NAME, self.help_action)
            self.help_action.deleteLater()
            self.help_action = None
        if self.action is not None:
            self.iface.removePluginMenu(DISPLAY_NAME, self.action)
            self.iface.removeToolBarIcon(self.action)
            self.action.deleteLater()
            self.action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
