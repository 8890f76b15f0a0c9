"""How a command line command is stopped: SIGTERM made a Ctrl-C, and a Ctrl-C recognised however Python
hands it on, so that a stop ends as "interrupted" with its files cleaned up, never as a bug report."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a job scheduler's stop, ``kill``) ends a command as Ctrl-C does: temporary files and the
    training scratch removed on the way out, nothing under a final name. Python's default is to die at
    once and leave them."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (a command run from a worker keeps its host's)
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def caused_by_interrupt(error: BaseException) -> bool:
    """Whether a KeyboardInterrupt (Ctrl-C, or a SIGTERM made one) is what ``error`` came from: Python wraps
    one raised inside some machinery in another error, e.g. a RuntimeError "Error calling __set_name__"
    when it lands in a class being created during ``import torch``. A stop is not a bug to report."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False
