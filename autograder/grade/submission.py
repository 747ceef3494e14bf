"""Grade one submission: read it, start the workers, run the hidden suite, build the result.

``grade_submission`` never raises for a bad submission, and not for a bug in the kit either:
an unreadable notebook and a grader error each become a recorded result with a clear message.
"""
from __future__ import annotations

import re
import time
import traceback
from pathlib import Path
from autograder.assignments import Assignment, load_assignment
from autograder.config import Settings
from autograder.grade.plugin import SuiteContext
from autograder.grade.runner import run_suite, score_outcomes
from autograder.load.notebook import Submission, cell_label, read_submission
from autograder.points import fmt_points
from autograder.load.untrusted import submission_base
from autograder.outcomes import Flag
from autograder.results import (GradingResult, ResultDetails, TestResult, grade_cell_totals,
                                new_details)
from autograder.sandbox.devices import worker_device
from autograder.seeding import code_digest


def reference_cells(assignment: Assignment) -> list[dict]:
    """The answer key as the reference worker executes it: every code cell but the grade cells,
    by the same rule as a submission's (``autograder.load.notebook.reference_cells``)."""
    from autograder.load import notebook

    return notebook.reference_cells(assignment)


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
            self.student_worker = Worker(settings.limits, backend=backend, device=device)
            self.reference_worker = Worker(settings.limits, backend="trusted", device=device,
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
    from autograder.sandbox.backends import exposure_flags, resolve_backend

    started = time.monotonic()
    asg = load_assignment(assignment, settings.course_dir)
    points = {g.id: g.points for g in asg.grade_cells}
    submission = read_submission(Path(path), asg,
                                 base=submission_base(Path(path), settings.course_dir))
    extra = new_details(student=student, assignment=assignment, max_score=asg.max_score,
                        submission_sha256=submission.sha256, flags=submission.flags)
    if not submission.readable:
        extra.add_flag("unreadable_notebook", submission.problem)
        return _result(every_cell_fails(points, submission.problem), extra, started,
                       f"Your notebook could not be read: {submission.problem}")
    try:
        backend = resolve_backend(backend or settings.sandbox)
        extra.sandbox = backend
        extra.flags.extend(Flag.from_json(f) for f in exposure_flags(backend, settings.course_dir))
        wdev = worker_device(device, settings.device)
        from autograder.hints import Hints

        with Session(asg, submission, settings, device=wdev, backend=backend,
                     hints_factory=Hints.for_assignment, pool=pool) as session:
            ctx = SuiteContext(assignment=asg, student_proxy=session.student,
                               reference_proxy=session.reference, hints=session.hints,
                               cohort_seed=settings.cohort_seed, student_id=student,
                               device=session.actual_device,
                               code_digest=code_digest(submission.cells))
            extra.device = session.actual_device
            if wdev != session.actual_device:
                extra.add_flag("device_fallback", f"{wdev} was requested but is not available; "
                                                  f"graded on {session.actual_device}")
            outcomes = run_suite(ctx)
            extra.flags.extend(Flag.from_json(f) for f in session.student_worker.flags())
            load_notes = loading_notes(submission, session.student_reply, asg)
        for o in outcomes:
            o.message = explain_missing_names(o.message, submission.given_only)
        kit_errors = [o for o in outcomes if o.kit_error]
        if kit_errors:
            extra.add_flag("grader_error", "; ".join(
                f"{o.nodeid}: {o.kit_error}" for o in kit_errors)[:2000])
        tests = score_outcomes(outcomes, points)
        return _result(tests, extra, started, summary(tests, submission, asg, load_notes))
    except Exception as exc:  # a bug in the kit: still record a result for this submission
        extra.add_flag("grader_error",
                       f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}")
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


def summary(tests: list[TestResult], submission: Submission, asg: Assignment | None = None,
            load_notes: list[str] | tuple[str, ...] = ()) -> str:
    lines = []
    for cell, t in grade_cell_totals(tests).items():
        lines.append(f"{cell}: {fmt_points(t['score'])} / {fmt_points(t['max_score'])}")
    for cell_id, problem in submission.cell_problems.items():
        where = (cell_label(cell_id, asg) if asg is not None
                 else f"your extra cell #{cell_id[5:]}" if cell_id.startswith("cell-")
                 else f"cell {cell_id}")
        lines.append(f"{where}: {problem}")
    lines.extend(load_notes)
    return "\n".join(lines)


MAX_LOAD_NOTES = 20
_NOT_DEFINED = re.compile(r"name '([A-Za-z_]\w*)' is not defined")


def loading_notes(submission: Submission, reply: dict, asg: Assignment) -> list[str]:
    """What went wrong while the notebook was run for grading, cell by cell, in the student's
    words: each error with its cell and line (the rest of that cell did not run; later cells
    did). ``reply`` is the student worker's load reply (a claim: it only feeds this text)."""
    errors = [e for e in (reply.get("cell_errors") or []) if isinstance(e, dict)]
    if not errors:
        return []
    notes = [("While your notebook was run for grading (a statement that raises stops the rest "
              "of its cell; later cells still run):")]
    for err in errors[:MAX_LOAD_NOTES]:
        where = cell_label(str(err.get("cell") or "")[:100], asg)
        line = err.get("line")
        at = f", line {line}" if isinstance(line, int) and not isinstance(line, bool) else ""
        text = f"{str(err.get('type') or 'Error')[:80]}: {str(err.get('message') or '')[:1000]}"
        notes.append(f"- {where}{at}: {explain_missing_names(text, submission.given_only)}")
    if len(errors) > MAX_LOAD_NOTES:
        notes.append(f"- and {len(errors) - MAX_LOAD_NOTES} more")
    return notes


def explain_missing_names(message: str, given_only: dict[str, str]) -> str:
    """``message`` with a sentence after it for each NameError it reports of a name that only a
    given cell which does not run at grading binds (a training loop, a plot, a demo)."""
    if not message or not given_only:
        return message
    names = [n for n in dict.fromkeys(_NOT_DEFINED.findall(message)) if n in given_only]
    for name in names[:5]:
        message += (f"\n'{name}' is made only by the given cell '{given_only[name]}', whose "
                    "top-level code is not run at grading (given cells contribute their functions "
                    "and classes; only the set-up cells and your own cells run in full). Define "
                    f"'{name}' in your own cell, or pass it in as an argument.")
    return message


def _result(tests: list[TestResult], extra: ResultDetails, started: float,
            output: str) -> GradingResult:
    return GradingResult.build(tests, extra, output=output,
                               execution_time=time.monotonic() - started)
