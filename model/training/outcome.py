"""What a training run ends with: its result, the sentence comparing the new model with the one it
started from, and the best epoch kept while it ran."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..net.modelfile import ModelInfo


@dataclass
class TrainResult:
    model_path: Path
    history: list[dict]
    best_epoch: int
    device_description: str
    history_csv_path: Path
    checkpoint_dir: Path
    stopped_early: bool = False  # the time budget or early stopping ended training before its last epoch
    stop_reason: str = ""  # why, in words, when it stopped early
    sizing: str = ""  # what the preset chose for this device, and why
    precision: str = ""  # the arithmetic training ran in, and why
    start_model: str = ""  # the model file training started from; "" for a new network
    start_val_iou: float | None = None  # the start model's score on the validation areas (epoch 0)
    out_of_time: bool = False  # the time budget ended it: resuming with a larger budget trains on

    @property
    def best_val_iou(self) -> float:
        return next(record["val_iou_tuned"] for record in self.history if record["epoch"] == self.best_epoch)

    @property
    def kept_start(self) -> bool:
        """No epoch beat the model training started from: the model file holds the start's weights."""
        return self.start_val_iou is not None and self.best_epoch == 0

    @property
    def outcome(self) -> str:
        """One sentence: how the new model compares with the one it started from, on the validation areas."""
        if self.start_val_iou is None:
            return f"Validation IoU {self.best_val_iou:.3f} (best epoch {self.best_epoch}, a new network)."
        start = Path(self.start_model).name
        if self.kept_start:
            return (
                f"The new model is not better than the one it started from on your validation areas: kept "
                f"'{start}' (validation IoU {self.start_val_iou:.3f}; no epoch beat it), written to "
                f"'{self.model_path.name}' with its threshold tuned on your areas."
            )
        return (
            f"Validation IoU {self.best_val_iou:.3f} (best epoch {self.best_epoch}), up from "
            f"{self.start_val_iou:.3f} for '{start}', the model it started from."
        )


@dataclass
class BestEpoch:
    """The best epoch so far by the recipe's score, and its weights: what the model file holds. The first
    epoch offered (epoch 0, the start model, when there is one) is taken; later ones must beat it."""

    state: dict | None = None
    score: float = -math.inf

    def offer(self, record: dict, net: torch.nn.Module, info: ModelInfo, select_by: str) -> None:
        if record[select_by] > self.score or self.state is None:
            self.score, self.state = record[select_by], state_on_cpu(net)
            info.best_epoch, info.threshold = record["epoch"], record["val_threshold"]


def state_on_cpu(net: torch.nn.Module) -> dict:
    """A copy of the weights that later steps do not change (``.cpu()`` of a CPU tensor is no copy)."""
    return copy.deepcopy({name: value.detach().cpu() for name, value in net.state_dict().items()})
