"""A training epoch's record, and a batch report within an epoch, as one line of text each, and back.

The train algorithm can only talk to its caller through Processing feedback text; the dock runs that
same algorithm and draws its live curves from these lines, so writing and reading live side by side.
The lines are also what a person reads in the Processing log, so numbers carry the digits that mean
something: counts as whole numbers, seconds to a tenth, a learning rate to three significant digits.
"""

from __future__ import annotations

import re

PREFIX = "Epoch "
# digits per key of an epoch record; any other number is a loss or a score in [0, 1]
NUMBER_FORMATS = {"learning_rate": ".3g", "seconds": ".1f"}
SCORE_FORMAT = ".4f"
BATCH_LINE = re.compile(
    r"Batch (?P<batch>\d+)/(?P<batches_per_epoch>\d+) of epoch (?P<epoch>\d+), (?P<elapsed_s>\S+) s into training: "
    r"smoothed training loss (?P<train_loss>\S+)"
)


def number_text(key: str, value: float) -> str:
    if isinstance(value, int):  # counts (train_batches) stay whole numbers, not 75.0000
        return str(value)
    return format(value, NUMBER_FORMATS.get(key, SCORE_FORMAT))


def number(text: str) -> float:
    """A number as number_text wrote it: a count comes back an int, anything else a float."""
    return int(text) if text.lstrip("-").isdigit() else float(text)


def format_epoch(record: dict) -> str:
    """{'epoch': 3, 'train_loss': 0.41, ...} -> 'Epoch 3: train_loss=0.4100 ...', keyed as the history CSV's
    columns, so that the log and the CSV read alike."""
    numbers = " ".join(
        f"{key}={number_text(key, value)}"
        for key, value in record.items()
        if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool)
    )
    return f"{PREFIX}{record['epoch']}: {numbers}"


def parse_epoch(line: str) -> dict | None:
    """The record of a line written by format_epoch; None for any other line."""
    if not line.startswith(PREFIX) or ":" not in line:
        return None
    head, _, tail = line.partition(":")
    try:
        record: dict = {"epoch": int(head[len(PREFIX) :])}
        for pair in tail.split():
            key, _, value = pair.partition("=")
            record[key] = number(value)
    except ValueError:
        return None
    return record


def format_batch(record: dict) -> str:
    """{'epoch': 2, 'batch': 12, 'batches_per_epoch': 75, 'train_loss': 0.4123, 'elapsed_s': 41.2} ->
    'Batch 12/75 of epoch 2, 41.2 s into training: smoothed training loss 0.4123'."""
    return (
        f"Batch {record['batch']}/{record['batches_per_epoch']} of epoch {record['epoch']}, "
        f"{record['elapsed_s']:.1f} s into training: smoothed training loss {record['train_loss']:{SCORE_FORMAT}}"
    )


def parse_batch(line: str) -> dict | None:
    """The record of a line written by format_batch; None for any other line."""
    match = BATCH_LINE.fullmatch(line)
    if match is None:
        return None
    try:
        return {key: number(text) for key, text in match.groupdict().items()}
    except ValueError:  # a float field that is not a number
        return None
