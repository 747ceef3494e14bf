"""Grade one submission: read it, start the workers, run the hidden suite, build the result.

``grade_submission`` never raises for a bad submission, and not for a bug in the kit either:
an unreadable notebook and a grader error each become a recorded result with a clear message.
"""
from __future__ import annotations

import glob
import time
import traceback
from pathlib import Path

from autograder.assignments import Assignment, load_assignment
from autograder.config import Settings
from autograder.grade.plugin import SuiteContext
from autograder.grade.runner import run_suite, score_outcomes
from autograder.load.notebook import Submission, read_submission
from autograder.results import GradingResult, TestResult, grade_cell_totals


def worker_device(requested: str) -> str:
    """The device a worker is started for. 'auto' means CUDA only where GPU devices exist; the
    worker itself falls back to the CPU when torch cannot use them (and says so)."""
    if requested == "auto":
        return "cuda" if glob.glob("/dev/nvidia[0-9]*") else "cpu"
    return requested


def reference_cells(assignment: Assignment) -> list[dict]:
    """The answer key as the reference worker executes it: every code cell but the grade cells."""
    from autograder.load.extract import extract_cells

    kept = [cell for cell in assignment.cells if cell.kind != "grade"]
    extracted = extract_cells(cell.source for cell in kept)
    return [{"id": cell.id, "source": e.code} for cell, e in zip(kept, extracted)]


def check_reference(reply: dict) -> dict:
    """The reference's load reply; RuntimeError (a grader error) when any cell of the answer key
    failed to load: every check would otherwise compare the student with a broken key."""
    errors = reply.get("cell_errors") or []
    if errors:
        raise RuntimeError("the answer key did not load in the reference worker: " + "; ".join(
            f"{e.get('cell')}: {e.get('type')}: {e.get('message')}" for e in errors)[:2000])
    return reply


class Session:
    """The two workers one submission needs: the student's (sandboxed) and the reference."""

    def __init__(self, assignment: Assignment, submission: Submission, settings: Settings,
                 *, device: str, backend: str, hints_factory, pool=None):
        from autograder.sandbox.client import Worker

        self.assignment, self.submission, self.settings = assignment, submission, settings
        self.pool = pool
        self.device = device
        if pool is not None:   # a shared, loaded reference; a student worker from a zygote
            self.reference_worker = pool.reference(assignment, device=device)
            self.student_worker = pool.student_worker(backend=backend, device=device,
                                                      settings=settings)
        else:
            self.student_worker = Worker(settings, backend=backend, device=device)
            self.reference_worker = Worker(settings, backend="trusted", device=device,
                                           trusted=True)
        self.hints_factory = hints_factory
        self.student_reply: dict = {}

    def __enter__(self) -> "Session":
        try:
            return self._open()
        except BaseException:
            self.__exit__(None, None, None)     # no worker outlives a failed start
            raise

    def _open(self) -> "Session":
        from autograder.proxy import StudentProxy

        if self.pool is None:       # both import torch at once (two processes, two cores)
            self.student_worker.spawn()
            self.reference_worker.spawn()
            self.reference_worker.start()
        self.student_worker.start()
        self.student_reply = self.student_worker.load(self.submission.cells)
        if self.pool is None:
            check_reference(self.reference_worker.load(
                reference_cells(self.assignment) + self.extra_reference_cells()))
        problems = {fn: cell_problem_reason(gid, problem)
                    for gid, fn in self.assignment.solution_functions.items()
                    if (problem := self.submission.cell_problems.get(gid))}
        self.student = StudentProxy(self.student_worker, problems=problems)
        self.reference = StudentProxy(self.reference_worker)
        self.hints = self.hints_factory(self.reference, self.assignment)
        self.hints.student = self.student     # hints confirm a mistake on probes
        return self

    def extra_reference_cells(self) -> list[dict]:
        from autograder.hints import mutant_cells

        return mutant_cells(self.assignment)

    def __exit__(self, *exc) -> None:
        self.student_worker.close()
        if self.pool is None:
            self.reference_worker.close()

    @property
    def actual_device(self) -> str:
        return self.student_reply.get("device", self.device)


def grade_submission(path: Path, assignment: str, *, student: str, settings: Settings,
                     device: str = "auto", backend: str | None = None, pool=None) -> GradingResult:
    """Grade one notebook. Exit paths: graded, unreadable, or grader error; each is a result."""
    from autograder.sandbox.backends import resolve_backend

    started = time.monotonic()
    asg = load_assignment(assignment, settings.course_dir)
    points = {g.id: g.points for g in asg.grade_cells}
    extra = {"max_score": asg.max_score, "student": student, "assignment": assignment,
             "sandbox": "", "device": "", "flags": [], "grade_cells": {},
             "submission_sha256": ""}
    submission = read_submission(Path(path), asg)
    extra["submission_sha256"] = submission.sha256
    extra["flags"] = list(submission.flags)
    if not submission.readable:
        extra["flags"].append({"code": "unreadable_notebook", "message": submission.problem})
        return _result(every_cell_fails(points, submission.problem), extra, started,
                       f"Your notebook could not be read: {submission.problem}")
    try:
        backend = resolve_backend(backend or settings.sandbox)
        extra["sandbox"] = backend
        wdev = worker_device(settings.device if device == "auto" else device)
        from autograder.hints import Hints

        with Session(asg, submission, settings, device=wdev, backend=backend,
                     hints_factory=Hints.for_assignment, pool=pool) as session:
            ctx = SuiteContext(assignment=asg, student_proxy=session.student,
                               reference_proxy=session.reference, hints=session.hints,
                               cohort_seed=settings.cohort_seed, student_id=student,
                               device=session.actual_device)
            extra["device"] = session.actual_device
            if wdev != session.actual_device:
                extra["flags"].append({"code": "device_fallback", "message":
                                       f"{wdev} was requested but is not available; graded on "
                                       f"{session.actual_device}"})
            outcomes = run_suite(ctx)
            extra["flags"].extend(session.student_worker.flags())
        kit_errors = [o for o in outcomes if o.kit_error]
        if kit_errors:
            extra["flags"].append({"code": "grader_error", "message": "; ".join(
                f"{o.nodeid}: {o.kit_error}" for o in kit_errors)[:2000]})
        tests = score_outcomes(outcomes, points)
        return _result(tests, extra, started, summary(tests, submission))
    except Exception as exc:  # a bug in the kit: still record a result for this submission
        extra["flags"].append({"code": "grader_error", "message":
                               f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}"})
        return _result(every_cell_fails(points, "This question could not be graded because of an "
                                        "error in the grader; your course staff will regrade it."),
                       extra, started, "Grader error: your course staff have been notified.")


def cell_problem_reason(gid: str, problem: str) -> str:
    """Why a function is missing, from the reading problem of its answer cell."""
    problem = problem.rstrip(".")
    if problem[:1].isupper() and not problem.startswith("SyntaxError"):
        return problem[0].lower() + problem[1:]
    return f"your answer cell {gid} could not be read: {problem}"


def every_cell_fails(points: dict[str, float], message: str) -> list[TestResult]:
    return [TestResult(name=f"{cell}: could not be graded", score=0.0, max_score=p,
                       status="failed", output=message, tags=[cell]) for cell, p in points.items()]


def summary(tests: list[TestResult], submission: Submission) -> str:
    lines = []
    for cell, t in grade_cell_totals(tests).items():
        lines.append(f"{cell}: {t['score']:g} / {t['max_score']:g}")
    for cell_id, problem in submission.cell_problems.items():
        where = f"your extra cell #{cell_id[5:]}" if cell_id.startswith("cell-") else f"cell {cell_id}"
        lines.append(f"{where}: {problem}")
    return "\n".join(lines)


def _result(tests: list[TestResult], extra: dict, started: float, output: str) -> GradingResult:
    extra["grade_cells"] = grade_cell_totals(tests)
    return GradingResult(score=sum(t.score for t in tests), execution_time=time.monotonic() - started,
                         output=output, tests=tests, extra_data=extra)
