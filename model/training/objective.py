"""What training optimises and how it keeps score: the learning-rate schedule, the loss over valid
pixels and the pull towards the start weights, pixel counts of a batch, and validation's tally with the
building threshold tuned on it."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..evaluation.metrics import ConfusionMatrix
from .recipe import TrainConfig

THRESHOLD_BINS = 100  # validation probabilities are histogrammed in 1 % steps to tune the threshold


def learning_rate_at(config: TrainConfig, progress: float) -> float:
    """The rate at ``progress`` (0..1) through training: a pure function, so a resumed run continues
    the schedule exactly. Linear warm-up, then cosine decay to 1 % of the peak."""
    if config.schedule == "constant":
        return config.learning_rate
    warmup = config.warmup_fraction
    if progress < warmup:
        return config.learning_rate * max(progress / warmup, 0.01)
    decay = min((progress - warmup) / (1 - warmup), 1.0)
    return config.learning_rate * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * decay)))


def masked_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean BCE over valid pixels (weight 1), plus soft Dice on them for "bce_dice"."""
    valid = weight.sum().clamp_min(1.0)
    loss = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum") / valid
    if kind == "bce_dice":
        probability = torch.sigmoid(logits) * weight
        overlap = (probability * target).sum()
        loss = loss + 1 - (2 * overlap + 1) / (probability.sum() + (target * weight).sum() + 1)
    return loss


def confusion_counts(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> ConfusionMatrix:
    predicted = logits > 0  # probability > 0.5
    truth = target > 0.5
    valid = weight > 0
    tp = int((predicted & truth & valid).sum())
    fp = int((predicted & ~truth & valid).sum())
    fn = int((~predicted & truth & valid).sum())
    return ConfusionMatrix(tn=int(valid.sum()) - tp - fp - fn, fp=fp, fn=fn, tp=tp)


def tuned_threshold(positive_hist: np.ndarray, negative_hist: np.ndarray) -> tuple[float, float]:
    """The probability threshold (bin edge) maximising building IoU, and that IoU."""
    tp = positive_hist[::-1].cumsum()[::-1]  # pixels at or above each bin's lower edge
    fp = negative_hist[::-1].cumsum()[::-1]
    fn = positive_hist.sum() - tp
    iou = tp / np.maximum(tp + fp + fn, 1)
    candidates = np.arange(5, THRESHOLD_BINS - 4)  # 0.05 .. 0.95: avoid degenerate extremes
    best = candidates[np.argmax(iou[candidates])]
    return float(best) / THRESHOLD_BINS, float(iou[best])


@torch.no_grad()
def pull_towards(net: torch.nn.Module, anchors: list[torch.Tensor], weight: float) -> None:
    """L2-SP: the gradient of weight / 2 * |w - w_start|^2 added to each weight's gradient (``anchors``:
    the start weights in ``net.parameters()``'s order; none, no pull)."""
    for parameter, anchor in zip(net.parameters(), anchors):
        if parameter.grad is not None:
            parameter.grad.add_(parameter - anchor, alpha=weight)


class ValidationTally:
    """Validation's sums over its batches: loss, pixel counts and probability histograms of building and
    background pixels (the threshold is tuned on these)."""

    def __init__(self) -> None:
        self.loss_sum, self.matrix = 0.0, ConfusionMatrix()
        self.positive_hist = np.zeros(THRESHOLD_BINS, np.int64)
        self.negative_hist = np.zeros(THRESHOLD_BINS, np.int64)

    def add(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, loss_kind: str) -> None:
        self.loss_sum += float(masked_loss(logits, target, weight, loss_kind)) * len(logits)
        self.matrix += confusion_counts(logits, target, weight)
        bins = (torch.sigmoid(logits) * THRESHOLD_BINS).long().clamp_(0, THRESHOLD_BINS - 1)
        valid = weight > 0
        self.positive_hist += torch.bincount(bins[valid & (target > 0.5)], minlength=THRESHOLD_BINS).cpu().numpy()
        self.negative_hist += torch.bincount(bins[valid & (target < 0.5)], minlength=THRESHOLD_BINS).cpu().numpy()

    def summed(self, sum_over_ranks: Callable[[list], list]) -> ValidationTally:
        """The tally of every rank's share (``sum_over_ranks``: one rank's numbers -> all ranks' sums)."""
        m = self.matrix
        total = ValidationTally()
        (total.loss_sum, tn, fp, fn, tp, *counts) = sum_over_ranks(
            [self.loss_sum, m.tn, m.fp, m.fn, m.tp, *self.positive_hist, *self.negative_hist]
        )
        total.matrix = ConfusionMatrix(int(tn), int(fp), int(fn), int(tp))
        total.positive_hist = np.array(counts[:THRESHOLD_BINS], np.int64)
        total.negative_hist = np.array(counts[THRESHOLD_BINS:], np.int64)
        return total

    def record(self, crop_count: int, tune_threshold: bool) -> dict:
        """The epoch's validation columns, the threshold tuned on the histograms (0.5 when not tuned)."""
        m = self.matrix
        threshold, tuned_iou = (
            tuned_threshold(self.positive_hist, self.negative_hist) if tune_threshold else (0.5, m.iou)
        )
        return {
            "val_loss": self.loss_sum / max(1, crop_count),
            "val_accuracy": m.accuracy,
            "val_precision": m.precision,
            "val_recall": m.recall,
            "val_f1": m.f1,
            "val_iou": m.iou,
            "val_threshold": threshold,
            "val_iou_tuned": tuned_iou,
        }
