"""Run one assignment's hidden suite with pytest, in this (trusted) process, and score it.

Points come only from the source notebook's grade cells: a cell's points are split over the
tests tagged with it, in proportion to their ``weight`` markers, in readable shares (quarters
where possible; ``autograder.points.split_points``) that sum to the cell's points.

The suite is every ``test_*.py`` of the assignment's folder (``Assignment.folder``), imported as
modules of the folder's package (``autograder.plugins``), so a test module imports its neighbours
relatively (``from .hidden_inputs import ...``).
"""
from __future__ import annotations

import contextlib
import io

import pytest

from autograder.grade.plugin import KitPlugin, Outcome, SuiteContext
from autograder.points import split_points
from autograder.results import TestResult


class SuiteError(Exception):
    """The suite itself is broken (a kit bug): it did not collect, or a cell has no tests."""


def run_suite(ctx: SuiteContext) -> list[Outcome]:
    """Run every test of ``ctx.assignment.folder``; one Outcome per collected test."""
    folder = str(ctx.assignment.folder)
    args = [folder, "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
            "--import-mode=importlib", "--rootdir", folder, "-o", "addopts=",
            "-o", "python_files=test_*.py", "--no-header", "-W", "ignore::DeprecationWarning"]
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        code = pytest.main(args, plugins=[KitPlugin(ctx)])
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED) or not ctx.outcomes:
        raise SuiteError(f"the suite for {ctx.assignment.name} did not run "
                         f"(pytest exit {int(code)}):\n{sink.getvalue()[-2000:]}")
    return list(ctx.outcomes.values())


def score_outcomes(outcomes: list[Outcome], grade_cells: dict[str, float]) -> list[TestResult]:
    """Turn outcomes into scored TestResults; every grade cell's max scores sum to its points."""
    by_cell: dict[str, list[Outcome]] = {}
    for o in outcomes:
        if o.grade_cell not in grade_cells:
            raise SuiteError(f"test {o.nodeid} names grade cell {o.grade_cell!r}, which the "
                             "source notebook does not have")
        by_cell.setdefault(o.grade_cell, []).append(o)
    missing = set(grade_cells) - set(by_cell)
    if missing:
        raise SuiteError(f"grade cells with no hidden tests: {sorted(missing)}")
    results: list[TestResult] = []
    for cell, points in grade_cells.items():
        tests = by_cell[cell]
        for t, max_score in zip(tests, split_points(points, [t.weight for t in tests])):
            results.append(TestResult(
                name=f"{cell}: {t.title}",
                score=max_score if t.passed else 0.0,
                max_score=max_score,
                status="passed" if t.passed else "failed",
                output=t.message if not t.passed else "",
                tags=[cell],
                extra_data=dict(t.extra),
            ))
    return results
