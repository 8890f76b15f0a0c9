"""Installing the missing Python modules from the dock: the exact command shown and confirmed first,
then run in the background with its output in the log; nothing is ever installed silently."""

from __future__ import annotations

from typing import Callable

from qgis.core import (
    Qgis,
)
from qgis.PyQt.QtCore import QProcess, Qt
from qgis.PyQt.QtWidgets import (
    QLabel,
    QMessageBox,
)

from .. import DISPLAY_NAME
from ..dependencies import install_command
from ..log import log


class InstallFlow:
    """Mixed into the dock, which provides what is declared here."""

    install_arguments: list[str]  # the install command, empty when nothing is missing
    install_process: QProcess | None  # the running install, if any
    status_label: QLabel
    tell: Callable[..., None]  # (text, message level)
    set_running: Callable[[bool], None]

    def confirm_install(self, command: str) -> bool:
        box = QMessageBox(
            QMessageBox.Icon.Question,
            DISPLAY_NAME,
            "Install the missing Python modules by running this command?",
            parent=self,
        )
        box.setInformativeText(
            f"{command}\n\nIt downloads the packages from the Python Package Index (torch is "
            "large: several minutes). Restart QGIS when it has finished."
        )
        box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box.exec()
        return box.clickedButton() is box.button(QMessageBox.StandardButton.Yes)

    def offer_install(self) -> None:
        """Runs the install command, in the background, only after the user has read it and said yes."""
        if not self.install_arguments or self.install_process is not None:
            return
        command = install_command(self.install_arguments)
        if not self.confirm_install(command):
            self.tell(f"Nothing was installed. To install yourself, run: {command}")
            return
        log(f"Running: {command}")
        process = QProcess(self)
        process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        process.readyReadStandardOutput.connect(
            lambda: log(bytes(process.readAllStandardOutput()).decode(errors="replace").rstrip())
        )
        process.finished.connect(self.installed)
        process.errorOccurred.connect(self.install_failed_to_start)
        self.install_process = process
        self.set_running(True)
        self.status_label.setText(f"Installing (output in the log tab '{DISPLAY_NAME}')...")
        process.start(self.install_arguments[0], self.install_arguments[1:])

    def installed(self, exit_code: int, _status=None) -> None:
        self.install_process = None
        self.set_running(False)
        if exit_code == 0:
            self.tell("Installed. Restart QGIS to use the plugin.", Qgis.MessageLevel.Success)
        else:
            self.tell(
                f"The install command failed (exit code {exit_code}); its output is in the log tab '{DISPLAY_NAME}'.",
                Qgis.MessageLevel.Critical,
            )

    def install_failed_to_start(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.install_process = None
            self.set_running(False)
            self.tell(
                f"Could not start {self.install_arguments[0]}: run the command yourself in a terminal.",
                Qgis.MessageLevel.Critical,
            )
