"""The evaluation report shown in a window of QGIS itself: the link alone opens nowhere on a machine
with no web browser set up, and a user should not need one to read the scores."""

from __future__ import annotations

from qgis.PyQt.QtCore import Qt, QUrl
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout, QWidget

TITLE = "Building extraction accuracy"


def show_report(url: str, parent: QWidget | None = None) -> QDialog:
    """A window with the report at ``url`` (a file:// URL of the HTML report), and a button that opens it in
    the web browser instead, for printing or saving. Returns the window, already shown."""
    dialog = QDialog(parent)
    dialog.setWindowTitle(TITLE)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    browser = QTextBrowser(dialog)
    browser.setOpenExternalLinks(True)
    browser.setSource(QUrl(url))
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, dialog)
    in_browser = buttons.addButton("Open in web browser", QDialogButtonBox.ButtonRole.ActionRole)
    in_browser.setToolTip(QUrl(url).toLocalFile())
    in_browser.clicked.connect(lambda: QDesktopServices.openUrl(QUrl(url)))
    buttons.rejected.connect(dialog.reject)
    layout = QVBoxLayout(dialog)
    layout.addWidget(browser)
    layout.addWidget(buttons)
    dialog.resize(720, 640)
    dialog.show()
    return dialog
