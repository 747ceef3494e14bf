"""The gradebook bridge: results JSON -> nbgrader's gradebook; ``nbgrader export`` agrees."""
from __future__ import annotations

import csv
import json

import pytest

from autograder.course.demo import copy_course, nbgrader, nbgrader_export
from autograder.course.gradebook import open_gradebook, sync_gradebook
from autograder.course.paths import grade_cell_points
from autograder.results import GradingResult, ResultDetails, grade_cell_totals
from autograder.results import TestResult as Check

ASSIGNMENT = "ppo"


def fake_result(student: str, fractions: dict[str, float], points: dict[str, float],
                flags: list[dict] | None = None) -> GradingResult:
    """A result giving ``fractions[cell]`` (default 1) of each grade cell's points."""
    tests = []
    for cell, p in points.items():
        f = fractions.get(cell, 1.0)
        tests.append(Check(f"{cell}: check", round(f * p, 6), p,
                                "passed" if f == 1 else "failed", "" if f == 1 else "wrong",
                                [cell]))
    extra = {"max_score": sum(points.values()), "student": student, "assignment": ASSIGNMENT,
             "sandbox": "bwrap", "device": "cpu", "flags": flags or [],
             "grade_cells": grade_cell_totals(tests), "submission_sha256": "0" * 64}
    return GradingResult(sum(t.score for t in tests), 1.0, "", tests,
                         ResultDetails.from_json(extra))


@pytest.fixture()
def course(tmp_path):
    paths = copy_course(tmp_path / "course")
    return paths, grade_cell_points(paths.source_notebook(ASSIGNMENT))


def write_results(paths, results: dict[str, GradingResult]) -> None:
    for student, r in results.items():
        r.write(paths.results(student, ASSIGNMENT))


def db_url(paths) -> str:
    return f"sqlite:///{paths.root}/gradebook.db"


def export_csv(paths) -> dict[str, dict]:
    done = nbgrader_export(paths, paths.root / "grades.csv")
    assert done.returncode == 0, done.stderr
    with open(paths.root / "grades.csv") as f:
        return {row["student_id"]: row for row in csv.DictReader(f)}


def cohort(points) -> dict[str, GradingResult]:
    cells = list(points)
    return {
        "ana": fake_result("ana", {}, points),
        "bo": fake_result("bo", {c: 0.0 for c in cells}, points),
        "cy": fake_result("cy", {cells[1]: 0.0, cells[2]: 0.75}, points,
                          [{"code": "locked_cell_modified", "message": "restored"}]),
        "di": fake_result("di", {cells[0]: 0.6}, points,
                          [{"code": "grader_error", "message": "Traceback ..."}]),
    }


def test_export_matches_results_json(course):
    paths, points = course
    results = cohort(points)
    write_results(paths, results)
    summary = sync_gradebook(db_url(paths), paths, ASSIGNMENT, sorted(results))
    assert summary.written == 4

    rows = export_csv(paths)
    assert set(rows) == set(results)
    for student, r in results.items():
        data = json.loads(paths.results(student, ASSIGNMENT).read_text())
        assert float(rows[student]["raw_score"]) == pytest.approx(data["score"], abs=1e-6)
        assert float(rows[student]["score"]) == pytest.approx(data["score"], abs=1e-6)
        assert float(rows[student]["max_score"]) == pytest.approx(sum(points.values()))
    assert 0 < float(rows["cy"]["score"]) < sum(points.values())

    # per grade cell, as auto scores; flags and grader errors are visible to formgrader
    with open_gradebook(db_url(paths), paths.course_id) as gb:
        for student, r in results.items():
            for cell, total in r.details.grade_cells.items():
                grade = gb.find_grade(cell, ASSIGNMENT, ASSIGNMENT, student)
                assert grade.auto_score == pytest.approx(total["score"])
                assert grade.max_score == pytest.approx(points[cell])
                assert grade.needs_manual_grade == (student == "di")
        flagged = {s: gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, s).flagged
                   for s in results}
    assert flagged == {"ana": False, "bo": False, "cy": True, "di": True}


def test_sync_is_idempotent_keeps_manual_scores_and_adds_students(course):
    from nbgrader.api import Grade, SubmittedAssignment

    paths, points = course
    results = cohort(points)
    write_results(paths, results)
    sync_gradebook(db_url(paths), paths, ASSIGNMENT, sorted(results))
    again = sync_gradebook(db_url(paths), paths, ASSIGNMENT, sorted(results))
    assert (again.written, again.unchanged) == (0, 4)

    first = next(iter(points))
    with open_gradebook(db_url(paths), paths.course_id) as gb:   # a TA overrides one grade
        grade = gb.find_grade(first, ASSIGNMENT, ASSIGNMENT, "bo")
        grade.manual_score = 1.0
        gb.db.commit()

    results["bo"] = fake_result("bo", {c: 0.5 for c in points}, points)   # regraded
    results["eli"] = fake_result("eli", {}, points)                        # a new student
    write_results(paths, results)
    summary = sync_gradebook(db_url(paths), paths, ASSIGNMENT, sorted(results))
    assert summary.written == 2

    with open_gradebook(db_url(paths), paths.course_id) as gb:
        assert gb.db.query(SubmittedAssignment).count() == 5
        assert gb.db.query(Grade).count() == 5 * len(points)
        grade = gb.find_grade(first, ASSIGNMENT, ASSIGNMENT, "bo")
        assert grade.manual_score == 1.0 and grade.needs_manual_grade
        expected = results["bo"].details.grade_cells[first]["score"]
        assert grade.auto_score == pytest.approx(expected)
        assert gb.find_student("eli").id == "eli"
    rows = export_csv(paths)
    bo = results["bo"].details.grade_cells
    expected_bo = sum(v["score"] for k, v in bo.items() if k != first) + 1.0
    assert float(rows["bo"]["score"]) == pytest.approx(expected_bo)
    assert float(rows["eli"]["score"]) == pytest.approx(sum(points.values()))


@pytest.mark.slow   # end to end: make test-all
def test_cells_match_nbgrader_generate_assignment(course, tmp_path):
    """The assignment the bridge creates has the cells ``nbgrader generate_assignment`` records."""
    paths, points = course
    write_results(paths, {"ana": fake_result("ana", {}, points)})
    sync_gradebook(db_url(paths), paths, ASSIGNMENT, ["ana"])

    other = copy_course(tmp_path / "nbgrader-made")
    done = nbgrader("generate_assignment", ASSIGNMENT, "--force", cwd=other.root)
    assert done.returncode == 0, done.stderr

    def cells(url: str, course_id: str) -> dict:
        with open_gradebook(url, course_id) as gb:
            nb = gb.find_notebook(ASSIGNMENT, ASSIGNMENT)
            return {
                "grade": {c.name: (c.max_score, c.cell_type) for c in nb.grade_cells},
                "solution": sorted(c.name for c in nb.solution_cells),
                "source": {c.name: (c.checksum, c.locked, c.cell_type) for c in nb.source_cells},
            }

    mine = cells(db_url(paths), paths.course_id)
    assert mine == cells(db_url(other), other.course_id)
    assert {k: v[0] for k, v in mine["grade"].items()} == points
