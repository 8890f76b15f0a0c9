"""Pixel scores against hand computations and the paper's Table 2; object matching on hand-drawn squares."""

import math

import numpy as np
import pytest
import shapely

from model.errors import InputError
from model.evaluation.metrics import ConfusionMatrix, ObjectScores, match_objects


def test_scores_of_a_hand_made_matrix():
    matrix = ConfusionMatrix(tn=50, fp=10, fn=5, tp=35)
    # by hand: 100 pixels, 45 predicted building, 40 truly building
    expected_chance = (45 * 40 + 55 * 60) / 100**2
    assert matrix.total == 100
    assert matrix.accuracy == pytest.approx(0.85)
    assert matrix.precision == pytest.approx(35 / 45)
    assert matrix.recall == pytest.approx(35 / 40)
    assert matrix.f1 == pytest.approx(70 / 85)
    assert matrix.iou == pytest.approx(35 / 50)
    assert matrix.kappa == pytest.approx((0.85 - expected_chance) / (1 - expected_chance))
    assert matrix.background_iou == pytest.approx(50 / 65)
    assert matrix.mean_iou == pytest.approx((35 / 50 + 50 / 65) / 2)
    assert matrix.areas(0.25) == {"tn": 12.5, "fp": 2.5, "fn": 1.25, "tp": 8.75}


def test_paper_table_2():
    matrix = ConfusionMatrix(tn=41_317_449, fp=17_776_163, fn=728_649, tp=1_771_975)
    assert round(matrix.accuracy, 4) == 0.6996
    assert round(matrix.recall, 4) == 0.7086
    assert round(matrix.precision, 4) == 0.0906
    assert round(matrix.iou, 4) == 0.0874
    assert round(matrix.f1, 4) == 0.1607
    assert round(matrix.kappa, 4) == 0.0956
    assert matrix.total == 61_594_236  # the paper's 61.6-megapixel test image


def test_update_matches_direct_numpy_counts():
    rng = np.random.default_rng(7)
    predicted, truth, valid = rng.random((3, 300, 257)) < [[[0.3]], [[0.2]], [[0.9]]]
    matrix = ConfusionMatrix().update(predicted, truth, valid)
    assert matrix.counts() == {
        "tn": int(np.sum(~predicted & ~truth & valid)),
        "fp": int(np.sum(predicted & ~truth & valid)),
        "fn": int(np.sum(~predicted & truth & valid)),
        "tp": int(np.sum(predicted & truth & valid)),
    }
    # windows add up to the whole, and 0/1 integer arrays count like booleans
    halves = ConfusionMatrix().update(predicted[:150].astype(np.uint8), truth[:150], valid[:150])
    halves.update(predicted[150:], truth[150:].astype(np.uint8), valid[150:])
    assert halves == matrix
    assert (ConfusionMatrix().update(predicted, truth) + ConfusionMatrix()).total == predicted.size


def test_undefined_scores_are_nan_not_zero():
    matrix = ConfusionMatrix(tn=10)
    assert math.isnan(matrix.precision) and math.isnan(matrix.recall) and math.isnan(matrix.iou)
    assert matrix.accuracy == 1.0
    assert math.isnan(ConfusionMatrix().kappa)


def square(x: float, y: float, size: float = 10.0) -> shapely.Geometry:
    return shapely.box(x, y, x + size, y + size)


def test_object_matching_on_hand_drawn_squares():
    truth = [square(0, 0), square(100, 0), square(200, 0), square(300, 0)]
    predicted = [
        square(0, 0),  # exact: IoU 1
        square(102, 0),  # shifted by 2 of 10: IoU 80 / 120 = 2/3
        square(205, 0),  # shifted by 5: IoU 50 / 150 = 1/3, below 0.5
        square(500, 0),  # nothing there
    ]
    scores = match_objects(predicted, truth, 0.5)
    assert [(p, t) for p, t, _ in scores.pairs] == [(0, 0), (1, 1)]
    assert scores.pairs[1][2] == pytest.approx(2 / 3)
    assert (scores.predicted, scores.true, scores.matched) == (4, 4, 2)
    assert scores.precision == 0.5 and scores.recall == 0.5 and scores.f1 == 0.5
    assert scores.mean_matched_iou == pytest.approx((1 + 2 / 3) / 2)
    assert scores.counts()["false_negative_objects"] == 2
    # a looser threshold admits the third pair
    assert match_objects(predicted, truth, 0.3).matched == 3


def test_matching_is_one_to_one_and_prefers_the_best_iou():
    truth = [square(0, 0)]
    predicted = [square(3, 0), square(1, 0)]  # IoU 7/13 and 9/11: both pass 0.5, only the better one matches
    scores = match_objects(predicted, truth, 0.5)
    assert [(p, t) for p, t, _ in scores.pairs] == [(1, 0)]
    assert scores.precision == 0.5 and scores.recall == 1.0
    # one prediction spanning two true buildings matches at most one of them
    spanning = match_objects([shapely.box(0, 0, 10, 21)], [square(0, 0), square(0, 11)], 0.4)
    assert spanning.matched == 1


def test_object_matching_edge_cases():
    empty = match_objects([], [square(0, 0)])
    assert empty.matched == 0 and empty.recall == 0.0 and math.isnan(empty.precision)
    assert isinstance(empty, ObjectScores)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(InputError, match="IoU threshold"):
            match_objects([square(0, 0)], [square(0, 0)], bad)
