"""Errors the engine raises for the user to read: plain words, naming the input and the fix."""


class EngineError(Exception):
    """A problem the user can act on. The message is shown as it is, without a traceback."""


class InputError(EngineError):
    """An input (raster, label, model file, parameter) is missing, unreadable or inconsistent."""


class Cancelled(EngineError):
    """The user cancelled a long operation; outputs were not written or were rolled back."""

    def __init__(self, message: str = "Cancelled by the user.") -> None:
        super().__init__(message)


class OutputError(EngineError):
    """An output cannot be written where asked (no folder, no permission, disk full, a folder in the way),
    or came out incomplete; nothing was left under its final name."""
