"""Pixel confusion matrix of building (positive) against background, and the scores derived from it;
object-level matching of building polygons (the SpaceNet measure).

"IoU" here is always the building class's IoU; background IoU and mean IoU are named as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely

from ..errors import InputError


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else float("nan")


@dataclass
class ConfusionMatrix:
    tn: int = 0
    fp: int = 0
    fn: int = 0
    tp: int = 0

    def update(self, predicted: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> ConfusionMatrix:
        """Add boolean arrays of one window; pixels where ``valid`` is False are not counted."""
        predicted = np.asarray(predicted, dtype=bool)
        truth = np.asarray(truth, dtype=bool)
        if valid is None:
            counted = predicted.size
        else:
            valid = np.asarray(valid, dtype=bool)
            counted = int(np.count_nonzero(valid))
            predicted, truth = predicted & valid, truth & valid
        # three vectorised counts of set bytes, without copying the valid pixels out, are about three times
        # faster than np.bincount, which widens every pixel to a 64-bit index (bench/bench_evaluation.py)
        tp = int(np.count_nonzero(predicted & truth))
        predicted_count = int(np.count_nonzero(predicted))
        truth_count = int(np.count_nonzero(truth))
        self.tp += tp
        self.fp += predicted_count - tp
        self.fn += truth_count - tp
        self.tn += counted - predicted_count - truth_count + tp
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
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
        expected = ((self.tp + self.fp) * (self.tp + self.fn) + (self.tn + self.fn) * (self.tn + self.fp)) / total**2
        return _ratio(observed - expected, 1 - expected)

    def scores(self) -> dict[str, float]:
        return {
            "accuracy": self.accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "iou": self.iou,
            "kappa": self.kappa,
            "background_iou": self.background_iou,
            "mean_iou": self.mean_iou,
        }

    def counts(self) -> dict[str, int]:
        return {"tn": self.tn, "fp": self.fp, "fn": self.fn, "tp": self.tp}

    def areas(self, pixel_area: float) -> dict[str, float]:
        """The four cells as ground areas, given one pixel's area (square map units)."""
        return {name: count * pixel_area for name, count in self.counts().items()}


@dataclass
class ObjectScores:
    """One-to-one matching of predicted to true buildings: a pair matches when its IoU reaches the
    threshold (SpaceNet: 0.5). Precision = matched / predicted, recall = matched / true."""

    predicted: int
    true: int
    iou_threshold: float
    # (predicted index, true index, IoU) of every match, best IoU first
    pairs: list[tuple[int, int, float]] = field(default_factory=list)

    @property
    def matched(self) -> int:
        return len(self.pairs)

    @property
    def precision(self) -> float:
        return _ratio(self.matched, self.predicted)

    @property
    def recall(self) -> float:
        return _ratio(self.matched, self.true)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.matched, self.predicted + self.true)

    @property
    def mean_matched_iou(self) -> float:
        return _ratio(sum(iou for _, _, iou in self.pairs), self.matched)

    def scores(self) -> dict[str, float]:
        return {
            "object_precision": self.precision,
            "object_recall": self.recall,
            "object_f1": self.f1,
            "object_mean_matched_iou": self.mean_matched_iou,
        }

    def counts(self) -> dict[str, int]:
        return {
            "predicted_objects": self.predicted,
            "true_objects": self.true,
            "matched_objects": self.matched,
            "false_positive_objects": self.predicted - self.matched,
            "false_negative_objects": self.true - self.matched,
        }


def check_iou_threshold(iou_threshold: float) -> None:
    if not 0.0 < iou_threshold <= 1.0:
        raise InputError(
            f"The object IoU threshold must be above 0 and at most 1 (SpaceNet uses 0.5); got {iou_threshold}."
        )


def match_objects(
    predicted: Sequence[shapely.Geometry], truth: Sequence[shapely.Geometry], iou_threshold: float = 0.5
) -> ObjectScores:
    """Match predicted building polygons to true ones, one to one, greedily by descending IoU.

    Geometries must be valid and in the same coordinates. Only pairs that intersect are measured
    (an STRtree finds them), so the cost grows with the number of buildings, not its square.
    """
    check_iou_threshold(iou_threshold)
    predicted_shapes = np.asarray(predicted, dtype=object)
    true_shapes = np.asarray(truth, dtype=object)
    scores = ObjectScores(len(predicted_shapes), len(true_shapes), iou_threshold)
    if not len(predicted_shapes) or not len(true_shapes):
        return scores
    predicted_index, true_index = shapely.STRtree(true_shapes).query(predicted_shapes, predicate="intersects")
    first, second = predicted_shapes[predicted_index], true_shapes[true_index]
    overlap = shapely.area(shapely.intersection(first, second))
    with np.errstate(invalid="ignore", divide="ignore"):  # two zero-area shapes give NaN, never a match
        iou = overlap / (shapely.area(first) + shapely.area(second) - overlap)
    candidates = np.flatnonzero(iou >= iou_threshold)
    # stable sort: equal IoUs keep query order, so the result does not depend on the platform's sort
    candidates = candidates[np.argsort(-iou[candidates], kind="stable")]
    used_predicted: set[int] = set()
    used_true: set[int] = set()
    for candidate in candidates:
        p, t = int(predicted_index[candidate]), int(true_index[candidate])
        if p not in used_predicted and t not in used_true:
            used_predicted.add(p)
            used_true.add(t)
            scores.pairs.append((p, t, float(iou[candidate])))
    return scores
