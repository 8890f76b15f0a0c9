"""A training epoch's record, and a batch report within an epoch, as the line a person reads in the
Processing log; and the reporter that sends each record both as that line and, to the dock's task, as
the record itself (the dock draws its live curves from the numbers, never from the text read back).
Numbers carry the digits that mean something: counts as whole numbers, seconds to a tenth, a learning
rate to three significant digits.
"""

from __future__ import annotations

from typing import Callable

from qgis.core import QgsProcessingFeedback

# digits per key of an epoch record; any other number is a loss or a score in [0, 1]
NUMBER_FORMATS = {"learning_rate": ".3g", "seconds": ".1f"}
SCORE_FORMAT = ".4f"


def number_text(key: str, value: float) -> str:
    if isinstance(value, int):  # counts (train_batches) stay whole numbers, not 75.0000
        return str(value)
    return format(value, NUMBER_FORMATS.get(key, SCORE_FORMAT))


def format_epoch(record: dict) -> str:
    """{'epoch': 3, 'train_loss': 0.41, ...} -> 'Epoch 3: train_loss=0.4100 ...', keyed as the history CSV's
    columns, so that the log and the CSV read alike."""
    numbers = " ".join(
        f"{key}={number_text(key, value)}"
        for key, value in record.items()
        if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool)
    )
    return f"Epoch {record['epoch']}: {numbers}"


def format_batch(record: dict) -> str:
    """{'epoch': 2, 'batch': 12, 'batches_per_epoch': 75, 'train_loss': 0.4123, 'elapsed_s': 41.2} ->
    'Batch 12/75 of epoch 2, 41.2 s into training: smoothed training loss 0.4123'."""
    return (
        f"Batch {record['batch']}/{record['batches_per_epoch']} of epoch {record['epoch']}, "
        f"{record['elapsed_s']:.1f} s into training: smoothed training loss {record['train_loss']:{SCORE_FORMAT}}"
    )


def record_reporter(
    feedback: QgsProcessingFeedback, kind: str, line_of: Callable[[dict], str]
) -> Callable[[dict], None]:
    """The engine's ``on_epoch`` / ``on_batch`` hook: the record's line for the log of every caller
    (toolbox, qgis_process, the dock), and the record itself for the dock's task."""
    from .tasks import TaskFeedback

    to_dock = feedback.push_record if isinstance(feedback, TaskFeedback) else None

    def report(record: dict) -> None:
        feedback.pushInfo(line_of(record))
        if to_dock is not None:
            to_dock(kind, record)

    return report
