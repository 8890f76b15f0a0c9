"""The sentence an evaluation gives when its scores are undefined (n/a) or can only be 0: what the
inputs held that made them so, what follows for each score, and what to check."""

from __future__ import annotations

import math

from ..io.label_checks import listed
from .metrics import ConfusionMatrix, ObjectScores

# how warning sentences name the scores (keys of EvaluationResult.scores())
SCORE_WORDS = {
    "accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
    "iou": "IoU",
    "kappa": "kappa",
    "background_iou": "background IoU",
    "mean_iou": "mean IoU",
    "object_precision": "object precision",
    "object_recall": "object recall",
    "object_f1": "object F1",
    "object_mean_matched_iou": "the mean IoU of matched buildings",
}


def score_warnings(matrix: ConfusionMatrix, objects: ObjectScores | None, scores: dict[str, float]) -> list[str]:
    """Why scores came out undefined (n/a) or can only be 0, as one sentence: never a bare n/a or 0.
    ``scores``: an evaluation's scores by key (``EvaluationResult.scores()``)."""
    scored = f"among the {matrix.total:,} pixels scored"
    if not matrix.tp + matrix.fn and not matrix.tp + matrix.fp:
        reason = f"Neither the labels nor the prediction mark a building pixel {scored}"
        advice = "check the building values and that both layers cover buildings in the area scored"
    elif not matrix.tp + matrix.fn:
        reason = f"The labels mark no building pixel {scored}, so every building pixel predicted is a false positive"
        advice = "check that the labels cover the area scored (the prediction's extent and the area of interest)"
    elif not matrix.tp + matrix.fp:
        reason = f"The prediction marks no building pixel {scored}"
        advice = "check the prediction's threshold and that it is the layer meant"
    elif not matrix.tn + matrix.fp + matrix.fn:
        reason = f"All {matrix.total:,} pixels scored are building in both layers"
        advice = "score an area that holds background too"
    elif objects is not None and not (objects.predicted and objects.true):
        reason = f"No building object is left to match ({objects.predicted} predicted, {objects.true} true)"
        advice = "check the minimum object area"
    elif objects is not None and not objects.matched:
        reason = f"No predicted building matches a true one at IoU >= {objects.iou_threshold:g}"
        advice = ""
    else:
        return []
    undefined = [SCORE_WORDS[key] for key, value in scores.items() if math.isnan(value)]
    zero = [SCORE_WORDS[key] for key, value in scores.items() if value == 0]
    consequences = []
    if undefined:
        consequences.append(f"{listed(undefined)} {'is' if len(undefined) == 1 else 'are'} undefined (n/a)")
    if zero:
        consequences.append(f"{listed(zero)} {'is' if len(zero) == 1 else 'are'} 0")
    return [f"{reason}: {' and '.join(consequences)}" + (f"; {advice}." if advice else ".")]
