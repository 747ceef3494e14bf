"""Points a person can read: the split rule, the rounding rule, and the training record bounds."""
from __future__ import annotations

import math
import random

import pytest

from autograder.grade.plugin import Outcome
from autograder.grade.record import MAX_POINTS, training_record
from autograder.grade.runner import score_outcomes
from autograder.points import QUANTA, fmt_points, split_points


def _is_multiple(x: float, q: float) -> bool:
    return abs(x / q - round(x / q)) < 1e-9


@pytest.mark.parametrize("points,weights", [
    (5, [1] * 9 + [2] * 3), (3, [1] * 5 + [1.5]), (2, [1] * 7 + [2] * 2), (1, [1]),
    (4, [1] * 8 + [2] * 3), (3, [1] * 13), (7, [3, 1, 1]), (2, [1] * 30)])
def test_split_sums_to_the_points_in_readable_shares(points, weights):
    shares = split_points(points, weights)
    assert len(shares) == len(weights)
    assert math.isclose(sum(shares), points, abs_tol=1e-9)
    quantum = next(q for q in QUANTA if all(_is_multiple(s, q) for s in shares))
    assert all(s >= quantum - 1e-12 for s in shares)            # no check is worth nothing
    # a heavier check is never worth less than a lighter one
    for (wa, sa) in zip(weights, shares):
        for (wb, sb) in zip(weights, shares):
            if wa > wb:
                assert sa >= sb - 1e-12


def test_quarters_where_there_are_enough():
    shares = split_points(5, [1] * 9 + [2] * 3)       # compute_gae: 12 checks, 5 points
    assert all(_is_multiple(s, 0.25) for s in shares)
    assert not all(_is_multiple(s, 0.5) for s in shares)
    assert all(_is_multiple(s, 0.1) for s in split_points(2, [1] * 9))   # 8 quarters < 9 checks


def test_random_splits_keep_the_contract():
    rng = random.Random(7)
    for _ in range(300):
        points = rng.choice([1, 2, 3, 4, 5, 6, 10, 0.5, 1.5])
        weights = [rng.choice([1, 1, 1.5, 2, 3]) for _ in range(rng.randint(1, 40))]
        shares = split_points(points, weights)
        assert math.isclose(sum(shares), points, abs_tol=1e-9)
        assert all(s > 0 for s in shares)


def test_score_outcomes_keeps_each_cells_points():
    outcomes = [Outcome(f"t{i}", "m", "gae", f"check {i}", 2.0 if i < 3 else 1.0, passed=i % 2 == 0)
                for i in range(12)]
    outcomes += [Outcome("r", "m", "train", "trains", 1.0, passed=True)]
    tests = score_outcomes(outcomes, {"gae": 5.0, "train": 2.0})
    assert math.isclose(sum(t.max_score for t in tests if t.grade_cell == "gae"), 5.0)
    assert math.isclose(sum(t.max_score for t in tests if t.grade_cell == "train"), 2.0)
    assert all(_is_multiple(t.max_score, 0.25) for t in tests)
    assert all(t.score == (t.max_score if t.status == "passed" else 0) for t in tests)


@pytest.mark.parametrize("x,text", [(10.9583333, "10.96"), (11, "11"), (1.84615, "1.85"),
                                    (0.25, "0.25"), (0.5, "0.5"), (-0.001, "0"), (16.0, "16"),
                                    (2.999999, "3")])
def test_one_rounding_rule(x, text):
    assert fmt_points(x) == text


def test_training_record_is_bounded_plain_data():
    rec = training_record(
        [{"name": "x" * 500, "value": float("nan"), "pass_mark": 0.5}] * 10,
        [{"name": "reward", "y": list(range(10_000))}, {"name": "bad", "y": "not a list"}] * 3)
    assert len(rec["metrics"]) == 4 and len(rec["metrics"][0]["name"]) == 80
    assert rec["metrics"][0]["value"] is None and rec["metrics"][0]["pass_if"] == "above"
    curves = rec["curves"]
    assert all(len(c["y"]) <= MAX_POINTS for c in curves)
    assert curves[0]["y"][0] == 0 and curves[0]["y"][-1] == 9999     # thinned, ends kept
    import json

    assert json.loads(json.dumps(rec, allow_nan=False)) == rec
