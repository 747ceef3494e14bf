"""``nbgrader generate_feedback`` renders the kit's feedback page, not nbgrader's own.

``nbgrader_config.py`` sets ``c.GenerateFeedback.exporter_class`` to ``KitFeedbackExporter``. So a
student gets one page, ``feedback/<student>/<assignment>/<notebook>.html``, whichever command
wrote it: ``grade-course`` (the hidden tests' result) or ``generate_feedback`` after a review in
formgrader (the same page, with the gradebook's last word: manual points, comments, late
penalty). ``release_feedback`` and ``fetch_feedback`` carry it to the student unchanged.

Invariant: the page is rendered from the ``results.json`` beside the autograded notebook and the
grades nbgrader's ``GetGrades`` read from the gradebook; the notebook's own cells (the student's
code) are never rendered into it.
"""
from __future__ import annotations

import copy
from pathlib import Path

from nbconvert.exporters import Exporter
from traitlets import default

from autograder.results import GradingResult, TestResult

STAFF = "course staff"


def reviewed(result: GradingResult, nb, grades: dict) -> GradingResult:
    """A copy of ``result`` with the gradebook's final word added as entries of the
    feedback: a manual score that differs from the autograder's, a grader's comment, the late
    penalty; ``score`` becomes the gradebook's (late penalty taken off)."""
    result = copy.deepcopy(result)
    tests = result.tests
    auto: dict[str, float] = {}
    for t in tests:
        auto[t.grade_cell] = auto.get(t.grade_cell, 0.0) + t.score
    pending: list[str] = []            # comments on answer cells, shown with the next question
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        gid = meta.get("grade_id")
        if not gid:
            continue
        comment = str(meta.get("comment") or "").strip()
        if comment:
            pending.append(comment)
        if not meta.get("grade"):
            continue
        score = meta.get("score")
        if score is not None and abs(float(score) - auto.get(gid, 0.0)) > 1e-9:
            tests.append(TestResult(
                name=f"{gid}: reviewed by {STAFF}", tags=[gid],
                score=float(score) - auto.get(gid, 0.0), max_score=0.0, status="passed",
                output=f"Your {STAFF} set this question's score to {float(score):g} "
                       f"of {float(meta.get('points') or 0):g}."))
        for text in pending:
            tests.append(TestResult(name=f"{gid}: comment from {STAFF}", tags=[gid], score=0.0,
                                    max_score=0.0, status="passed", output=text))
        pending = []
    penalty = float(grades.get("late_penalty") or 0)
    if penalty:
        tests.append(TestResult(
            name="late submission: penalty", tags=["late submission"], score=-penalty,
            max_score=0.0, status="failed",
            output=f"Submitted after the due date: {penalty:g} points taken off."))
    if grades.get("score") is not None:
        result.score = float(grades["score"])
    return result


class KitFeedbackExporter(Exporter):
    """An nbconvert exporter: the autograded notebook (after nbgrader's ``GetGrades``) and the
    ``results.json`` beside it -> the kit's feedback page."""

    output_mimetype = "text/html"

    @default("file_extension")
    def _file_extension_default(self):
        return ".html"

    def from_notebook_node(self, nb, resources=None, **kw):
        from autograder.course.feedback import render_feedback

        nb, resources = super().from_notebook_node(nb, resources, **kw)
        folder = Path(resources.get("metadata", {}).get("path") or ".")
        result = GradingResult.read(folder / "results.json")
        grades = resources.get("nbgrader", {})
        result.details.student = grades.get("student") or result.details.student
        return render_feedback(reviewed(result, nb, grades)), resources
