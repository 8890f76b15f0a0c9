"""A document shown in a window of QGIS itself: the evaluation report (HTML) and the plugin's help (the
README, Markdown). A bare link opens nowhere on a machine with no web browser or viewer set up, and a
user should not need one to read the scores or the help."""

from __future__ import annotations

from pathlib import Path

from qgis.PyQt.QtCore import Qt, QUrl
from qgis.PyQt.QtGui import QDesktopServices, QTextDocument
from qgis.PyQt.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout, QWidget


def show_document(url: str, title: str, parent: QWidget | None = None) -> QDialog:
    """A window with the local file at ``url`` (a file:// URL; .md read as Markdown, anything else as
    HTML), and a button that opens it in the desktop's own program instead, for printing or saving.
    Returns the window, already shown."""
    markdown = Path(QUrl(url).toLocalFile()).suffix.lower() == ".md"
    dialog = QDialog(parent)
    dialog.setWindowTitle(title)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    browser = QTextBrowser(dialog)
    browser.setOpenExternalLinks(True)
    kind = QTextDocument.ResourceType.MarkdownResource if markdown else QTextDocument.ResourceType.HtmlResource
    browser.setSource(QUrl(url), kind)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, dialog)
    outside = buttons.addButton(
        "Open in another program" if markdown else "Open in web browser", QDialogButtonBox.ButtonRole.ActionRole
    )
    outside.setToolTip(QUrl(url).toLocalFile())
    outside.clicked.connect(lambda: QDesktopServices.openUrl(QUrl(url)))
    buttons.rejected.connect(dialog.reject)
    layout = QVBoxLayout(dialog)
    layout.addWidget(browser)
    layout.addWidget(buttons)
    dialog.resize(760, 680)
    dialog.show()
    return dialog
