"""Hint precision: a catalogued hint is never shown for a mistake that is not catalogued.

``autograder/suites/hint_precision.py`` perturbs the answer key's solution cells at random
(constants, operators, minus signs, indices and slice bounds, one or two changes; a fixed
seed), drops the
perturbations that change nothing or behave exactly like a catalogued mistake, grades the rest
with the unit suites, and counts the failed tests whose message names a catalogued mistake.
Slow (a few minutes): it runs in ``make test-all``.
"""
from __future__ import annotations

import ast
import random
import re

import pytest

from autograder import REPO_ROOT
from autograder.assignments import load_assignment
from autograder.hints import solution_cell
from autograder.suites import hint_precision


def test_perturbations_change_one_or_two_things_and_compile():
    assignment = load_assignment("ppo", REPO_ROOT)
    source = solution_cell(assignment, "compute_gae").source
    found = hint_precision.perturbations(source, "compute_gae", random.Random(0), 50)
    assert len(found) == 50
    original = ast.dump(ast.parse(source))
    dumps, kinds = set(), set()
    for label, changed in found:
        dumps.add(ast.dump(ast.parse(changed)))
        compile(changed, "<perturbed>", "exec")
        changes = re.findall(r"line \d+: (\w+)", label)
        assert 1 <= len(changes) <= 2, label
        kinds.update(changes)
    assert original not in dumps and len(dumps) == len(found)   # all differ, none is the key
    assert {"constant", "operator", "index"} <= kinds, kinds


@pytest.mark.slow
def test_no_catalogued_hint_for_a_mistake_that_is_not_catalogued():
    report = hint_precision.measure(per_function=60)
    print("\n" + report.text())
    assert report.graded >= 250, report.text()
    assert report.failing >= 0.8 * report.graded, report.text()   # real mistakes, mostly
    assert report.hints == [], report.text()
