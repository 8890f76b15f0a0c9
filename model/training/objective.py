"""What training optimises and how it keeps score: the learning-rate schedule, the loss over valid
pixels, pixel counts of a batch, and the building threshold tuned on validation."""

from __future__ import annotations

import math

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
