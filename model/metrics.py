"""Pixel confusion matrix of building (positive) against background, and the scores derived from it.

"IoU" here is always the building class's IoU; background IoU and mean IoU are named as such.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else float("nan")


@dataclass
class ConfusionMatrix:
    tn: int = 0
    fp: int = 0
    fn: int = 0
    tp: int = 0

    def update(self, predicted: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> "ConfusionMatrix":
        """Add boolean arrays of one window; pixels where ``valid`` is False are not counted."""
        predicted = np.asarray(predicted, dtype=bool)
        truth = np.asarray(truth, dtype=bool)
        if valid is not None:
            predicted, truth = predicted[valid], truth[valid]
        # one bincount over 2*truth + predicted is a single pass, faster than four masked sums
        counts = np.bincount((truth.ravel().astype(np.uint8) << 1) | predicted.ravel(), minlength=4)
        self.tn += int(counts[0]); self.fp += int(counts[1]); self.fn += int(counts[2]); self.tp += int(counts[3])
        return self

    def __add__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        return ConfusionMatrix(self.tn + other.tn, self.fp + other.fp, self.fn + other.fn, self.tp + other.tp)

    @property
    def total(self) -> int:
        return self.tn + self.fp + self.fn + self.tp

    @property
    def accuracy(self) -> float:
        return _ratio(self.tp + self.tn, self.total)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def iou(self) -> float:
        return _ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def background_iou(self) -> float:
        return _ratio(self.tn, self.tn + self.fp + self.fn)

    @property
    def mean_iou(self) -> float:
        return (self.iou + self.background_iou) / 2

    @property
    def kappa(self) -> float:
        total = float(self.total)
        if not total:
            return float("nan")
        observed = (self.tp + self.tn) / total
        expected = ((self.tp + self.fp) * (self.tp + self.fn) + (self.tn + self.fn) * (self.tn + self.fp)) / total ** 2
        return _ratio(observed - expected, 1 - expected)

    def scores(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "precision": self.precision, "recall": self.recall, "f1": self.f1,
                "iou": self.iou, "kappa": self.kappa, "background_iou": self.background_iou,
                "mean_iou": self.mean_iou}

    def counts(self) -> dict[str, int]:
        return {"tn": self.tn, "fp": self.fp, "fn": self.fn, "tp": self.tp}
