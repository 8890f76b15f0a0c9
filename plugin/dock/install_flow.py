"""Installing the missing Python modules from the dock: the exact command shown and confirmed first,
then run in the background with its output in the log; nothing is ever installed silently."""

from __future__ import annotations

from typing import Callable

from qgis.core import Qgis
from qgis.PyQt.QtCore import QProcess, Qt
from qgis.PyQt.QtWidgets import QMessageBox, QWidget

from .. import DISPLAY_NAME
from ..dependencies import install_command
from ..log import log


class Installer:
    """The dock's install button: ``arguments`` is the install command (empty when nothing is missing);
    ``tell`` says (text, message level) to the user, ``set_running`` disables the dock's buttons while
    the command runs and ``show_status`` puts a line in its status label."""

    def __init__(
        self,
        parent: QWidget,
        arguments: list[str],
        tell: Callable[..., None],
        set_running: Callable[[bool], None],
        show_status: Callable[[str], None],
    ) -> None:
        self.parent = parent
        self.arguments = arguments
        self.tell = tell
        self.set_running = set_running
        self.show_status = show_status
        self.process: QProcess | None = None  # the running install, if any

    def confirm(self, command: str) -> bool:
        box = QMessageBox(
            QMessageBox.Icon.Question,
            DISPLAY_NAME,
            "Install the missing Python modules by running this command?",
            parent=self.parent,
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

    def offer(self) -> None:
        """Runs the install command, in the background, only after the user has read it and said yes."""
        if not self.arguments or self.process is not None:
            return
        command = install_command(self.arguments)
        if not self.confirm(command):
            self.tell(f"Nothing was installed. To install yourself, run: {command}")
            return
        log(f"Running: {command}")
        process = QProcess(self.parent)
        process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        process.readyReadStandardOutput.connect(
            lambda: log(bytes(process.readAllStandardOutput()).decode(errors="replace").rstrip())
        )
        process.finished.connect(self.finished)
        process.errorOccurred.connect(self.failed_to_start)
        self.process = process
        self.set_running(True)
        self.show_status(f"Installing (output in the log tab '{DISPLAY_NAME}')...")
        process.start(self.arguments[0], self.arguments[1:])

    def finished(self, exit_code: int, _status=None) -> None:
        self.process = None
        self.set_running(False)
        if exit_code == 0:
            self.tell("Installed. Restart QGIS to use the plugin.", Qgis.MessageLevel.Success)
        else:
            self.tell(
                f"The install command failed (exit code {exit_code}); its output is in the log tab '{DISPLAY_NAME}'.",
                Qgis.MessageLevel.Critical,
            )

    def failed_to_start(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.process = None
            self.set_running(False)
            self.tell(
                f"Could not start {self.arguments[0]}: run the command yourself in a terminal.",
                Qgis.MessageLevel.Critical,
            )

    def stop(self, wait_ms: int = 0) -> None:
        """Kills a running install (waiting up to ``wait_ms`` for it to end)."""
        if self.process is not None:
            self.process.kill()
            if wait_ms:
                self.process.waitForFinished(wait_ms)
                self.process = None
