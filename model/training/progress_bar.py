"""A training run's progress bar and remaining time, from the measured time of its batches, and the
smoothed training loss it reports between epochs."""

from __future__ import annotations

import math
import time

from ..progress import Reporter


class TrainingProgress:
    """Progress and remaining time from the measured time of training and validation batches (a
    validation batch, forward only, is guessed at a third of a training batch until one is timed);
    under a time budget neither can pass the budget, and the bar never moves back."""

    def __init__(
        self, reporter: Reporter, epochs: int, time_budget_s: float | None, batches_per_epoch: int, val_batches: int
    ) -> None:
        self.reporter = reporter
        self.epochs, self.time_budget_s = epochs, time_budget_s
        self.batches_per_epoch, self.val_batches = batches_per_epoch, val_batches
        # seconds per training and per validation batch, a running mean as training goes
        self.train_batch_s: float | None = None
        self.val_batch_s: float | None = None
        self.fraction_shown = 0.0

    @staticmethod
    def running_mean(previous: float | None, value: float) -> float:
        return value if previous is None else 0.8 * previous + 0.2 * value

    def timed_train_batch(self, seconds: float) -> None:
        self.train_batch_s = self.running_mean(self.train_batch_s, seconds)

    def timed_validation_batch(self, seconds: float) -> None:
        self.val_batch_s = self.running_mean(self.val_batch_s, seconds)

    def report(self, elapsed_s: float, epoch: int, train_done: int, val_done: int, detail: str) -> None:
        """Says where training is (``elapsed_s`` of training so far, a resumed run's included)."""
        train_s = self.train_batch_s or 0.0
        val_s = self.val_batch_s if self.val_batch_s is not None else train_s / 3
        epochs_after = self.epochs - epoch
        remaining_s = (self.batches_per_epoch - train_done + epochs_after * self.batches_per_epoch) * train_s + (
            self.val_batches - val_done + epochs_after * self.val_batches
        ) * val_s
        fraction = elapsed_s / max(elapsed_s + remaining_s, 1e-9)
        if self.time_budget_s is not None:
            remaining_s = min(remaining_s, max(self.time_budget_s - elapsed_s, 0.0))
            fraction = max(fraction, elapsed_s / self.time_budget_s)
        self.fraction_shown = fraction = max(fraction, self.fraction_shown)
        where = f"epoch {epoch}" if self.time_budget_s is not None else f"epoch {epoch}/{self.epochs}"
        step = (
            f"batch {train_done}/{self.batches_per_epoch}"
            if not val_done
            else f"validation batch {val_done}/{self.val_batches}"
        )
        self.reporter.report(fraction, f"{where}, {step}, {detail}, about {remaining_s / 60:.1f} min left")


LOSS_SMOOTHING = 0.9  # weight of the previous value in the exponential mean of the batch losses


class SmoothedLoss:
    """An exponential mean of the batch losses with its start-up bias removed (as Adam's moments), and
    the time it was last reported."""

    def __init__(self) -> None:
        self.total, self.weight, self.reported_at = 0.0, 0.0, -math.inf

    def add(self, loss: float) -> bool:
        """Takes a batch's loss; False, and nothing taken, for a non-finite one."""
        if not math.isfinite(loss):
            return False
        self.total = LOSS_SMOOTHING * self.total + (1 - LOSS_SMOOTHING) * loss
        self.weight = LOSS_SMOOTHING * self.weight + (1 - LOSS_SMOOTHING)
        return True

    @property
    def value(self) -> float:
        return self.total / self.weight

    def due(self, every_s: float) -> bool:
        """True, and the clock restarted, when ``every_s`` have passed since the last report."""
        now = time.monotonic()
        if now - self.reported_at < every_s:
            return False
        self.reported_at = now
        return True
