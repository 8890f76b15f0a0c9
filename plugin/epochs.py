"""A training epoch's record as one line of text, and back.

The train algorithm can only talk to its caller through Processing feedback text; the dock runs that
same algorithm and draws its live curves from these lines, so writing and reading live side by side.
"""

from __future__ import annotations

PREFIX = "Epoch "


def format_epoch(record: dict) -> str:
    """{'epoch': 3, 'train_loss': 0.41, ...} -> 'Epoch 3: train_loss=0.4100 ...'."""
    numbers = " ".join(
        f"{key}={float(value):.4f}"
        for key, value in record.items()
        if key != "epoch" and isinstance(value, (int, float))
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
            record[key] = float(value)
    except ValueError:
        return None
    return record
