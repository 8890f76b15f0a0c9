"""Progress and cancel hooks shared by every long engine call.

The engine knows nothing of QGIS feedback objects or Qt tasks: it takes plain callables, and the
plugin adapts them (``feedback.setProgress``, ``feedback.isCanceled``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import Cancelled

# percent in [0, 100] and a short human-readable message
ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]


def _no_progress(percent: float, message: str) -> None:
    pass


def _never_cancelled() -> bool:
    return False


@dataclass
class Reporter:
    """Bundles the two hooks, maps a sub-step's 0-100 onto a slice of the caller's range and
    turns a cancel request into ``Cancelled`` at the points where stopping is safe."""

    progress: ProgressFn = _no_progress
    cancelled: CancelFn = _never_cancelled
    start_percent: float = 0.0
    end_percent: float = 100.0

    @classmethod
    def of(cls, progress: ProgressFn | None = None, cancelled: CancelFn | None = None) -> Reporter:
        return cls(progress or _no_progress, cancelled or _never_cancelled)

    def report(self, fraction: float, message: str = "") -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        self.progress(self.start_percent + fraction * (self.end_percent - self.start_percent), message)

    def check(self) -> None:
        if self.cancelled():
            raise Cancelled()

    def sub(self, start_fraction: float, end_fraction: float) -> Reporter:
        """A reporter for a sub-step covering [start_fraction, end_fraction] of this one."""
        span = self.end_percent - self.start_percent
        return Reporter(
            self.progress,
            self.cancelled,
            self.start_percent + start_fraction * span,
            self.start_percent + end_fraction * span,
        )
