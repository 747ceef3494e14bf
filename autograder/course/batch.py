"""``grade-course``: grade every submission of an assignment in an nbgrader course directory.

The coordinator (this process) finds the submissions, hands them to N slot processes
(``slot.py``), and is the only writer of results, the gradebook, feedback and the report. A
result is written atomically, and only once its grading finished, so a batch killed at any point
(even by SIGKILL) is completed by running it again: submissions whose ``results.json`` records the
same notebook sha256 are skipped, the rest are graded.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path

from autograder import REPO_ROOT
from autograder.course.paths import CoursePaths, course_paths, grade_cell_points
from autograder.course.kinds import is_flagged, kind
from autograder.course.slot import DEFAULT_GRADER
from autograder.results import GradingResult, TestResult, grade_cell_totals


@dataclass
class Job:
    """One student's submission folder and the notebook chosen from it."""
    student: str
    folder: Path
    notebook: Path | None
    sha256: str
    flags: list[dict] = field(default_factory=list)
    problem: str = ""   # set when nothing can be graded (no notebook, or several and none named)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def choose_notebook(folder: Path, assignment: str, student: str | None = None) -> Job:
    """Pick the notebook to grade: ``<assignment>.ipynb`` if present, else the only one.

    ``student`` defaults to the folder's parent's name (nbgrader's ``submitted/<student>/<a>``)."""
    student = student or folder.parent.name
    notebooks = sorted(p for p in folder.glob("*.ipynb") if p.is_file())
    expected = f"{assignment}.ipynb"
    named = folder / expected
    if named in notebooks:
        others = [p.name for p in notebooks if p != named]
        flags = [{"code": "extra_notebooks", "message": f"also submitted {', '.join(others)}; "
                  f"graded {expected}"}] if others else []
        return Job(student, folder, named, file_sha256(named), flags)
    if len(notebooks) == 1:
        nb = notebooks[0]
        return Job(student, folder, nb, file_sha256(nb), [{"code": "renamed_notebook", "message":
                   f"submitted as {nb.name}, expected {expected}; graded {nb.name}"}])
    digest = hashlib.sha256()
    for p in notebooks:
        digest.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    if not notebooks:
        problem, code = f"no notebook was submitted (expected {expected})", "no_notebook"
    else:
        problem = (f"{len(notebooks)} notebooks were submitted and none is named {expected}: "
                   f"{', '.join(p.name for p in notebooks)}")
        code = "ambiguous_submission"
    return Job(student, folder, None, digest.hexdigest(), [{"code": code, "message": problem}],
               problem)


def discover(paths: CoursePaths, assignment: str) -> list[Job]:
    """Every ``submitted/<student>/<assignment>/`` folder, sorted by student id."""
    if not paths.submitted.is_dir():
        return []
    folders = sorted(d / assignment for d in paths.submitted.iterdir()
                     if not d.name.startswith(".") and (d / assignment).is_dir())
    return [choose_notebook(f, assignment) for f in folders]


def read_result(path: Path) -> dict | None:
    """A results.json's data, or None when missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_up_to_date(job: Job, results_path: Path) -> bool:
    """Graded before from the same bytes, and not a grader error (those are retried)."""
    data = read_result(results_path)
    if not data:
        return False
    extra = data.get("extra_data", {})
    if any(f.get("code") == "grader_error" for f in extra.get("flags", [])):
        return False
    return extra.get("submission_sha256") == job.sha256


def zero_result(job: Job, assignment: str, points: dict[str, float], *, code: str,
                message: str, student_message: str) -> GradingResult:
    """A recorded result with no points, for a submission that could not be graded."""
    tests = [TestResult(name=f"{cell}: could not be graded", score=0.0, max_score=p,
                        status="failed", output=student_message, tags=[cell])
             for cell, p in points.items()]
    flags = [f for f in job.flags if f["code"] != code] + [{"code": code, "message": message}]
    extra = {"max_score": sum(points.values()), "student": job.student, "assignment": assignment,
             "sandbox": "", "device": "", "flags": flags, "grade_cells": grade_cell_totals(tests),
             "submission_sha256": job.sha256}
    return GradingResult(score=0.0, execution_time=0.0, output=student_message, tests=tests,
                         extra_data=extra)


def finish(result: GradingResult, job: Job) -> GradingResult:
    """Add what the coordinator knows (choice-of-notebook flags, the sha256) to a result."""
    extra = result.extra_data
    known = {(f.get("code"), f.get("message")) for f in extra.setdefault("flags", [])}
    extra["flags"] = [f for f in job.flags if (f["code"], f["message"]) not in known] + extra["flags"]
    extra["submission_sha256"] = job.sha256
    extra.setdefault("student", job.student)
    return result


class Slot:
    """The coordinator's handle on one slot process."""

    def __init__(self, course_dir: Path, grader: str):
        in_r, in_w = os.pipe()     # coordinator -> slot
        out_r, out_w = os.pipe()   # slot -> coordinator
        self.log = tempfile.TemporaryFile()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in
                                            env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "autograder.course.slot", str(in_r), str(out_w),
             str(course_dir), grader],
            pass_fds=(in_r, out_w), stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            cwd=str(course_dir), env=env, start_new_session=True)
        os.close(in_r)
        os.close(out_w)
        self.to_slot = Connection(in_w, readable=False)
        self.from_slot = Connection(out_r, writable=False)
        self.job: Job | None = None
        self.deadline = 0.0

    def send(self, job: Job, request: dict, timeout: float) -> None:
        self.job, self.deadline = job, time.monotonic() + timeout
        self.to_slot.send_bytes(json.dumps(dict(request, job=job.student)).encode())

    def log_tail(self, limit: int = 2000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-limit:]

    def kill(self) -> None:
        """Kill the slot and everything it started (its own session)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        for conn in (self.to_slot, self.from_slot):
            conn.close()
        self.log.close()


def run_slots(jobs: list[Job], *, course_dir: Path, assignment: str, n: int, grader: str,
              request_extra: dict, timeout: float, on_result) -> None:
    """Grade ``jobs`` on ``n`` slots; ``on_result(job, GradingResult | None, error)`` for each.

    A slot that dies or exceeds ``timeout`` is killed (a fresh one takes its place while jobs
    remain) and its job gets ``error``; the other slots carry on.
    """
    pending = deque(jobs)
    slots: list[Slot] = []

    def request(job: Job) -> dict:
        return dict(request_extra, path=str(job.notebook), student=job.student,
                    assignment=assignment)

    def fail(slot: Slot, error: str) -> None:
        job = slot.job
        slots.remove(slot)
        slot.kill()
        on_result(job, None, error)

    try:
        while pending or slots:
            while pending and len(slots) < n:
                slots.append(Slot(course_dir, grader))
            for s in [s for s in slots if s.job is None]:
                if not pending:
                    slots.remove(s)
                    s.kill()
                    continue
                job = pending.popleft()
                try:
                    s.send(job, request(job), timeout)
                except OSError:          # the idle slot had died: a fresh one takes the job
                    slots.remove(s)
                    s.kill()
                    pending.appendleft(job)
            ready = wait([s.from_slot for s in slots if s.job is not None], timeout=1.0)
            now = time.monotonic()
            for s in [s for s in slots if s.job is not None]:
                if s.from_slot in ready:
                    try:
                        reply = json.loads(s.from_slot.recv_bytes())
                    except (EOFError, OSError, ValueError):
                        code = s.proc.wait()
                        fail(s, f"the grading process died (exit {code}): {s.log_tail()}")
                        continue
                    job, s.job = s.job, None
                    if "result" in reply:
                        on_result(job, GradingResult.from_json(reply["result"]), "")
                    else:
                        on_result(job, None, reply.get("error", "unknown error"))
                elif now > s.deadline:
                    fail(s, f"grading took longer than {timeout:.0f} s and was stopped")
    finally:
        for s in slots:
            s.kill()
        from autograder.sandbox.cleanup import reap_stale
        reap_stale()    # the killed slots' scratch folders: their owners are dead now


GRADER_ERROR_TEXT = ("This submission could not be graded because of an error in the grader; "
                     "your course staff will regrade it.")


class UsageError(Exception):
    """A wrong command line (unknown assignment, no course directory): exit status 2."""


class NoSandbox(Exception):
    """No sandbox can run here (exit status 3, as for ``grade``); nothing was graded."""


def sandbox_backend(requested: str) -> str:
    """The concrete backend (probed once here, not in every slot)."""
    from autograder.sandbox.backends import BackendUnavailable, resolve_backend

    try:
        return resolve_backend(requested)
    except BackendUnavailable as exc:
        raise NoSandbox(str(exc)) from None


@dataclass
class CourseRun:
    """What one ``grade-course`` run did, and every result of the assignment after it."""
    assignment: str
    graded_now: list[str]
    skipped: list[str]
    seconds: float
    results: dict[str, dict]        # student -> results JSON
    paths: CoursePaths
    gradebook_written: int = 0
    report: Path | None = None


def grade_course(course_dir: str | Path, assignment: str, *, jobs: int | None = None,
                 force: bool = False, grader: str = DEFAULT_GRADER, device: str = "auto",
                 backend: str | None = None, console=None, outputs: bool = True) -> CourseRun:
    """Grade every submission of ``assignment`` that needs it, then (``outputs``) write the
    gradebook, the feedback pages and the cohort report from all results."""
    from autograder.config import ConfigError, load_settings

    started = time.monotonic()
    try:
        settings = load_settings(course_dir)
        paths = course_paths(course_dir)
        points = grade_cell_points(paths.source_notebook(assignment))
    except (ConfigError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    with coordinator_lock(paths, assignment):
        for stale in paths.autograded.glob(f"*/{assignment}/.results.json.*.tmp"):
            stale.unlink()                   # half-written by a run that was killed
        found = discover(paths, assignment)
        todo = [j for j in found
                if force or not is_up_to_date(j, paths.results(j.student, assignment))]
        run = CourseRun(assignment, [], [j.student for j in found if j not in todo], 0.0, {},
                        paths)

        def record(job: Job, result: GradingResult) -> None:
            result.write(paths.results(job.student, assignment))
            run.graded_now.append(job.student)

        for job in (j for j in todo if j.problem):
            record(job, zero_result(job, assignment, points, code=job.flags[-1]["code"],
                                    message=job.problem,
                                    student_message=f"Nothing was graded: {job.problem}."))
        to_slots = [j for j in todo if not j.problem]
        if to_slots:
            if backend is None and grader == DEFAULT_GRADER:
                backend = sandbox_backend(settings.sandbox)
            with progress_bar(console, len(to_slots)) as bar:
                def on_result(job: Job, result: GradingResult | None, error: str) -> None:
                    if result is None:
                        result = zero_result(job, assignment, points, code="grader_error",
                                             message=error, student_message=GRADER_ERROR_TEXT)
                    record(job, finish(result, job))
                    bar.record(kind(result.to_json()))

                run_slots(to_slots, course_dir=paths.root, assignment=assignment,
                          n=max(1, jobs or settings.jobs), grader=grader,
                          request_extra={"device": device, "backend": backend},
                          timeout=2 * settings.limits.wall_seconds + 60, on_result=on_result)
        for job in found:
            data = read_result(paths.results(job.student, assignment))
            if data is not None:
                run.results[job.student] = data
        if outputs:
            write_outputs(run, settings.db_url)
    run.seconds = time.monotonic() - started
    return run


@contextlib.contextmanager
def coordinator_lock(paths: CoursePaths, assignment: str):
    """An exclusive lock on this assignment's batch (the kernel drops it when the process dies,
    even by SIGKILL): two coordinators must never write the same results or the gradebook."""
    import fcntl

    paths.autograded.mkdir(parents=True, exist_ok=True)
    with open(paths.autograded / f".grade-course-{assignment}.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another grade-course {assignment} is running on "
                             f"{paths.root}") from None
        yield


def write_outputs(run: CourseRun, db_url: str) -> None:
    """Gradebook, then feedback pages, then the report: all from the results on disk."""
    from autograder.course.feedback import write_feedback
    from autograder.course.gradebook import sync_gradebook
    from autograder.course.report import write_report

    paths, assignment = run.paths, run.assignment
    run.gradebook_written = sync_gradebook(db_url, paths, assignment, sorted(run.results)).written
    for student, data in run.results.items():
        write_feedback(data, paths.feedback_html(student, assignment))
    out = paths.report_dir(assignment)
    run.report = write_report(paths.autograded, out, assignment, feedback_link=lambda s: os.path
                              .relpath(paths.feedback_html(s, assignment), out))


class progress_bar:
    """A rich progress bar: count, ETA, and the failures so far."""

    def __init__(self, console, total: int):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.progress = Progress(
            TextColumn("grading"), BarColumn(), MofNCompleteColumn(),
            TextColumn("[red]{task.fields[errors]} grader errors[/]  "
                       "[yellow]{task.fields[unread]} failed to read[/]"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console or Console(stderr=True))
        self.task = self.progress.add_task("grading", total=total, errors=0, unread=0)
        self.counts = Counter()

    def __enter__(self) -> "progress_bar":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def record(self, what: str) -> None:
        self.counts[what] += 1
        self.progress.update(self.task, advance=1, errors=self.counts["grader error"],
                             unread=self.counts["failed to read"])


def summary_table(run: CourseRun):
    """The end-of-run table: graded, failed to read, flagged, grader errors, mean score."""
    from rich.table import Table

    kinds = Counter(kind(d) for d in run.results.values())
    flagged = [s for s, d in run.results.items() if is_flagged(d)]
    scores = [float(d.get("score", 0)) for d in run.results.values()]
    max_score = max((float(d.get("extra_data", {}).get("max_score") or 0)
                     for d in run.results.values()), default=0.0)
    table = Table(title=f"grade-course {run.assignment}: {len(run.results)} submissions "
                        f"({len(run.graded_now)} graded now, {len(run.skipped)} up to date)")
    for col in ("graded", "failed to read", "flagged", "grader errors", "mean score"):
        table.add_column(col, justify="right")
    mean = f"{sum(scores) / len(scores):.2f} / {max_score:g}" if scores else "-"
    table.add_row(str(kinds["graded"]), str(kinds["failed to read"]), str(len(flagged)),
                  str(kinds["grader error"]), mean)
    return table


def cmd_grade_course(args) -> int:
    """``python -m autograder grade-course ASSIGNMENT [--course-dir DIR] [--jobs N] [--force]``."""
    from rich.console import Console

    out = Console()
    try:
        run = grade_course(args.course_dir, args.assignment, jobs=args.jobs, force=args.force)
    except UsageError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}")
        return 2
    except NoSandbox as exc:
        Console(stderr=True).print(f"[red]error:[/] no sandbox can run here ({exc}); student "
                                   "code is never run unconfined, so nothing was graded")
        return 3
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted: results so far are saved; run the same "
                                   "command again to grade the rest")
        return 130
    out.print(summary_table(run))
    problems = {s: d for s, d in run.results.items() if kind(d) != "graded" or is_flagged(d)}
    for student, data in sorted(problems.items()):
        codes = ", ".join(f["code"] for f in data.get("extra_data", {}).get("flags", []))
        out.print(f"  {student}: {kind(data)}; {codes}")
    p = run.paths
    out.print(f"results:   {p.autograded}/*/{run.assignment}/results.json\n"
              f"feedback:  {p.feedback}/*/{run.assignment}/feedback.html\n"
              f"report:    {run.report}\n"
              f"gradebook: {run.gradebook_written} submission(s) updated; "
              f"`nbgrader export` writes the CSV")
    return 0
