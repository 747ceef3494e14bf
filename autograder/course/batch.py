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
import itertools
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path

from autograder import REPO_ROOT, bounds
from autograder.course.paths import CoursePaths, course_paths, grade_cell_points
from autograder.course.kinds import is_flagged, kind
from autograder.course.slot import DEFAULT_GRADER
from autograder.load import untrusted
from autograder.outcomes import GRADER_ERROR_TEXT, Flag
from autograder.results import GradingResult, TestResult, new_details


@dataclass
class Job:
    """One student's submission folder and the notebook chosen from it."""
    student: str
    folder: Path
    notebook: Path | None
    sha256: str
    flags: list[dict] = field(default_factory=list)
    problem: str = ""   # set when nothing can be graded (no notebook, or several and none named)


def refused(student: str, folder: Path, reason: str, code: str = untrusted.CODE) -> Job:
    """A job that records a zero result with ``reason`` (its sha256 is the reason's, so a rerun
    keeps the result until the folder changes)."""
    return Job(student, folder, None, hashlib.sha256(reason.encode(errors="replace")).hexdigest(),
               [{"code": code, "message": reason}], reason)


def choose_notebook(folder: Path, assignment: str, student: str | None = None, *,
                    base: Path | None = None) -> Job:
    """Pick the notebook to grade: ``<assignment>.ipynb`` if present, else the only one.

    ``student`` defaults to the folder's parent's name (nbgrader's ``submitted/<student>/<a>``).
    ``base`` is the trusted folder ``folder`` is reached from without following links (default:
    ``folder`` itself); the chosen notebook must be a regular file, else the job is refused."""
    student = student or folder.parent.name
    base = folder if base is None else base
    below = Path(os.path.abspath(folder)).relative_to(os.path.abspath(base)).parts
    expected = f"{assignment}.ipynb"
    try:
        dir_fd = untrusted.open_dir(base, below)
    except untrusted.Refused as exc:
        return refused(student, folder, f"the submission folder is not a plain folder: {exc}")
    except OSError as exc:
        return refused(student, folder, f"no notebook was submitted (expected {expected}; the "
                       f"folder could not be opened: {exc.strerror})", code="no_notebook")
    try:
        with os.scandir(dir_fd) as it:
            listed = list(itertools.islice(it, bounds.FOLDER_MAX_ENTRIES + 1))
        if len(listed) > bounds.FOLDER_MAX_ENTRIES:
            return refused(student, folder, f"the submission folder holds more than "
                           f"{bounds.FOLDER_MAX_ENTRIES:,} entries; submit the notebook alone",
                           code="ambiguous_submission")
        entries = {e.name: e for e in listed if e.name.endswith(".ipynb")}
        regular = {n: e.is_file(follow_symlinks=False) for n, e in entries.items()}
        notebooks = sorted(entries)
        shown = {n: untrusted.printable(n) for n in notebooks}
        chosen = expected if expected in entries else (notebooks[0] if len(notebooks) == 1
                                                       else None)
        if chosen is not None and not regular[chosen]:
            kind_of = untrusted.describe(entries[chosen].stat(follow_symlinks=False).st_mode)
            return refused(student, folder, f"{shown[chosen]!r} is {kind_of}, not a regular "
                           "file; only a notebook file itself is graded")
        if chosen is not None:
            try:
                fd = os.open(chosen, untrusted.FILE_FLAGS, dir_fd=dir_fd)
            except OSError as exc:       # replaced since it was listed (ELOOP: now a link)
                return refused(student, folder, f"{shown[chosen]!r} could not be opened without "
                               f"following links ({exc.strerror})")
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    return refused(student, folder, f"{shown[chosen]!r} changed while it was "
                                   "opened")
                digest = untrusted.sha256_fd(fd, bounds.NOTEBOOK_MAX_BYTES)
            finally:
                os.close(fd)
        else:       # nothing graded: a digest of the names and kinds is enough to notice changes
            listing = [f"{n}:{regular[n]}:{entries[n].stat(follow_symlinks=False).st_size}"
                       for n in notebooks]
            digest = hashlib.sha256("\0".join(listing).encode(errors="replace")).hexdigest()
    finally:
        os.close(dir_fd)
    if chosen == expected:
        others = [shown[n] for n in notebooks if n != expected]
        flags = [{"code": "extra_notebooks", "message": f"also submitted {some(others)}; "
                  f"graded {expected}"}] if others else []
        return Job(student, folder, folder / expected, digest, flags)
    if chosen is not None:
        return Job(student, folder, folder / chosen, digest, [{"code": "renamed_notebook",
                   "message": f"submitted as {shown[chosen]}, expected {expected}; graded "
                              f"{shown[chosen]}"}])
    if not notebooks:
        problem, code = f"no notebook was submitted (expected {expected})", "no_notebook"
    else:
        problem = (f"{len(notebooks)} notebooks were submitted and none is named {expected}: "
                   f"{some(list(shown.values()))}")
        code = "ambiguous_submission"
    return Job(student, folder, None, digest, [{"code": code, "message": problem}], problem)


def some(names: list[str]) -> str:
    """At most ``bounds.NAMES_SHOWN`` names, then how many more."""
    head = ", ".join(names[:bounds.NAMES_SHOWN])
    rest = len(names) - bounds.NAMES_SHOWN
    return f"{head} and {rest} more" if rest > 0 else head


def student_id(folder_name: str) -> str:
    """The student id of a ``submitted/`` folder: its name, or for a name that is not valid
    UTF-8 (nbgrader's gradebook cannot hold it) ``undecodable-<16 hex of sha256(name bytes)>``."""
    try:
        folder_name.encode("utf-8")
        return folder_name
    except UnicodeEncodeError:
        return "undecodable-" + hashlib.sha256(os.fsencode(folder_name)).hexdigest()[:16]


def discover(paths: CoursePaths, assignment: str) -> list[Job]:
    """Every ``submitted/<student>/<assignment>/`` folder, sorted by student id. Nothing is
    followed: a linked student or assignment folder is a refused job; a failure tied to one
    folder is that student's job (a zero result with the reason), never the cohort's."""
    if not paths.submitted.is_dir():
        return []
    jobs = []
    with os.scandir(paths.submitted) as it:
        entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    for entry in entries:
        student = student_id(entry.name)
        folder = paths.submitted / entry.name / assignment
        try:
            if entry.is_symlink():
                jobs.append(refused(student, folder, f"the student folder "
                                    f"{untrusted.printable(entry.name)!r} is a symbolic link; "
                                    "links are never followed"))
                continue
            if not entry.is_dir(follow_symlinks=False):
                continue
            try:
                st = os.lstat(folder)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                jobs.append(refused(student, folder, f"{untrusted.printable(entry.name)!r}/"
                                    f"{assignment} is "
                                    f"{untrusted.describe(st.st_mode)}, not a folder"))
                continue
            job = choose_notebook(folder, assignment, student, base=paths.submitted)
        except Exception as exc:
            job = refused(student, folder, f"the submission could not be read: "
                          f"{type(exc).__name__}: {exc}"[:500], code="unreadable_notebook")
        if student != entry.name:
            job.flags.insert(0, {"code": "undecodable_folder_name", "message":
                              f"the folder name {untrusted.printable(entry.name)!r} is not "
                              "UTF-8; recorded as "
                              f"{student}"})
        jobs.append(job)
    return sorted(jobs, key=lambda j: j.student)


def read_result(path: Path) -> GradingResult | None:
    """A results.json's result, or None when missing, unreadable or damaged (not a result)."""
    try:
        return GradingResult.read(path)
    except (OSError, ValueError):
        return None


def is_up_to_date(job: Job, results_path: Path) -> bool:
    """Graded before from the same bytes, and not a grader error (those are retried)."""
    result = read_result(results_path)
    if result is None or "grader_error" in result.details.flag_codes():
        return False
    return result.details.submission_sha256 == job.sha256


def zero_result(job: Job, assignment: str, points: dict[str, float], *, code: str,
                message: str, student_message: str) -> GradingResult:
    """A recorded result with no points, for a submission that could not be graded."""
    tests = [TestResult(name=f"{cell}: could not be graded", score=0.0, max_score=p,
                        status="failed", output=student_message, tags=[cell])
             for cell, p in points.items()]
    details = new_details(student=job.student, assignment=assignment,
                          max_score=sum(points.values()), submission_sha256=job.sha256,
                          flags=[f for f in job.flags if f["code"] != code])
    details.add_flag(code, message)
    return GradingResult.build(tests, details, output=student_message)


def finish(result: GradingResult, job: Job) -> GradingResult:
    """Add what the coordinator knows (choice-of-notebook flags, the sha256) to a result."""
    details = result.details
    known = set(details.flags)
    details.flags = [f for f in map(Flag.from_json, job.flags) if f not in known] + details.flags
    details.submission_sha256 = job.sha256
    details.student = details.student or job.student
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
                    assert s.job is not None      # only busy slots are polled
                    job, s.job = s.job, None
                    try:
                        result = GradingResult.from_json(reply["result"]) \
                            if "result" in reply else None
                    except ValueError as exc:   # this job's grader error, not the batch's
                        on_result(job, None, f"the slot's result could not be read: {exc}")
                        continue
                    on_result(job, result, "" if result is not None
                              else reply.get("error", "unknown error"))
                elif now > s.deadline:
                    fail(s, f"grading took longer than {timeout:.0f} s and was stopped")
    finally:
        for s in slots:
            s.kill()
        from autograder.sandbox.cleanup import reap_stale
        reap_stale()    # the killed slots' scratch folders: their owners are dead now




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
    graded: dict[str, GradingResult]    # student -> their result, as stored after the run
    paths: CoursePaths
    gradebook_written: int = 0
    report: Path | None = None
    folders: dict[str, str] = field(default_factory=dict)    # student -> folder in submitted/
    failed: dict[str, str] = field(default_factory=dict)     # student -> what failed for them

    @property
    def results(self) -> dict[str, dict]:
        """student -> results JSON (the wire format, as each ``results.json`` holds it)."""
        return {s: r.to_json() for s, r in self.graded.items()}


def grade_course(course_dir: str | Path, assignment: str, *, jobs: int | None = None,
                 force: bool = False, grader: str = DEFAULT_GRADER, device: str = "auto",
                 backend: str | None = None, console=None, outputs: bool = True,
                 scheduler: str | None = None, insecure_scheduler: bool = False) -> CourseRun:
    """Grade every submission of ``assignment`` that needs it, then (``outputs``) write the
    gradebook, the feedback pages and the cohort report from all results.

    ``scheduler``: a Dask scheduler address; each submission is then one task on the cluster
    (``autograder/course/cluster.py``) instead of a local slot. Everything else is the same."""
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
                        paths, folders={j.student: j.folder.parent.name for j in found})

        def record(job: Job, result: GradingResult) -> None:
            try:
                result.write(paths.results(job.student, assignment))
            except (OSError, ValueError) as exc:      # this student's only: the rest go on
                run.failed[job.student] = f"results.json not written: {exc}"[:500]
                return
            run.graded_now.append(job.student)

        for job in (j for j in todo if j.problem):
            record(job, zero_result(job, assignment, points, code=problem_code(job),
                                    message=job.problem,
                                    student_message=f"Nothing was graded: {job.problem}."))
        to_slots = [j for j in todo if not j.problem]
        if to_slots and scheduler:
            with progress_bar(console, len(to_slots)) as bar:
                def on_task(job: Job, result: GradingResult | None, error: str) -> None:
                    code, told = "grader_error", GRADER_ERROR_TEXT
                    if result is None and error.startswith("worker_lost:"):
                        code = "worker_lost"
                    elif result is None and error.startswith("unread:"):
                        code, error = "unreadable_notebook", error[len("unread: "):]
                        told = f"Your notebook could not be read: {error}"
                    if result is None:
                        result = zero_result(job, assignment, points, code=code,
                                             message=error, student_message=told)
                    record(job, finish(result, job))
                    bar.record(kind(result))

                grade_on_cluster(to_slots, scheduler=scheduler, insecure=insecure_scheduler,
                                 settings=settings, course_dir=paths.root, assignment=assignment,
                                 grader=grader, device=device, on_result=on_task)
        elif to_slots:
            if backend is None and grader == DEFAULT_GRADER:
                backend = sandbox_backend(settings.sandbox)
            with progress_bar(console, len(to_slots)) as bar:
                def on_result(job: Job, result: GradingResult | None, error: str) -> None:
                    if result is None:
                        result = zero_result(job, assignment, points, code="grader_error",
                                             message=error, student_message=GRADER_ERROR_TEXT)
                    record(job, finish(result, job))
                    bar.record(kind(result))

                run_slots(to_slots, course_dir=paths.root, assignment=assignment,
                          n=max(1, jobs or settings.jobs), grader=grader,
                          request_extra={"device": device, "backend": backend},
                          timeout=2 * settings.limits.wall_seconds + 60, on_result=on_result)
        for job in found:
            stored = read_result(paths.results(job.student, assignment))
            if stored is not None:
                run.graded[job.student] = stored
        if outputs:
            write_outputs(run, settings.db_url)
    run.seconds = time.monotonic() - started
    return run


def grade_on_cluster(jobs: list[Job], *, scheduler: str, insecure: bool, settings,
                     course_dir: Path, assignment: str, grader: str, device: str,
                     on_result) -> None:
    """Connect, check every worker (same kit, a real sandbox, GPUs for cuda), then grade."""
    from autograder.course.cluster import (ClusterRefused, check_cluster, connect,
                                           run_on_cluster)

    try:
        client = connect(scheduler, insecure=insecure)
    except ClusterRefused as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from None
    with client:
        try:
            check_cluster(client, course_dir, assignment, device)
        except ClusterRefused as exc:
            raise UsageError(f"the cluster at {scheduler} was refused: {exc}") from None
        reader = notebook_reader(course_paths(course_dir).submitted)
        run_on_cluster(jobs, client=client, settings=settings, assignment=assignment,
                       grader=grader, device=device, read_notebook=reader, on_result=on_result)


def notebook_reader(submitted: Path):
    """``read(job) -> bytes``: the chosen notebook's bytes for a task that runs on another
    machine, read as every student file is (a regular file reached from ``submitted`` without
    links, at most ``bounds.NOTEBOOK_MAX_BYTES``; ``untrusted.Refused`` otherwise)."""
    def read(job: Job) -> bytes:
        assert job.notebook is not None
        return untrusted.read_regular(job.notebook, submitted, bounds.NOTEBOOK_MAX_BYTES)
    return read


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


def problem_code(job: Job) -> str:
    """The flag that says why nothing of ``job`` can be graded (its last non-naming flag)."""
    return next(f["code"] for f in reversed(job.flags) if f["code"] != "undecodable_folder_name")


def write_outputs(run: CourseRun, db_url: str) -> None:
    """Gradebook, then each student's nbgrader files and feedback page, then the report: all
    from the results on disk. A failure tied to one student (their gradebook row, their files or
    page) is recorded as a flag in their result and in ``run.failed``; every other student still
    gets theirs."""
    from autograder.assignments import load_assignment
    from autograder.course.release import student_version
    from autograder.course.gradebook import sync_gradebook
    from autograder.course.report import write_report

    paths, assignment = run.paths, run.assignment
    summary = sync_gradebook(db_url, paths, assignment, sorted(run.graded), folders=run.folders)
    run.gradebook_written = summary.written
    for student in run.graded:
        set_flag(run, student, "gradebook_error", summary.failed.get(student))
    asg, released = load_assignment(assignment, paths.root), student_version(paths, assignment)
    for student, result in run.graded.items():
        try:
            write_student_files(paths, asg, released, student, result,
                                run.folders.get(student, student))
            error = None
        except Exception as exc:
            error = f"the feedback page was not written: {type(exc).__name__}: {exc}"[:500]
        set_flag(run, student, "feedback_error", error)
    out = paths.report_dir(assignment)
    try:
        run.report = write_report(paths.autograded, out, assignment, feedback_link=lambda s: os
                                  .path.relpath(paths.feedback_html(s, assignment), out))
    except Exception as exc:
        run.failed["(cohort report)"] = f"{type(exc).__name__}: {exc}"[:500]


def set_flag(run: CourseRun, student: str, code: str, message: str | None) -> None:
    """Add (``message``) or clear (None) one output flag in a student's stored result."""
    details = run.graded[student].details
    kept = [f for f in details.flags if f.code != code]
    if message is None and len(kept) == len(details.flags):
        return
    details.flags = kept
    if message is not None:
        run.failed[student] = message
        details.add_flag(code, message)
    try:
        run.graded[student].write(run.paths.results(student, run.assignment))
    except OSError:
        pass


def write_student_files(paths: CoursePaths, asg, released, student: str,
                        result: GradingResult, folder_name: str) -> None:
    """What nbgrader's own commands need of one graded submission: the autograded notebook
    (formgrader, ``generate_feedback``), and beside the feedback page ``timestamp.txt`` and
    ``submission_secret.txt`` (``release_feedback``). ``folder_name``: the student's folder in
    ``submitted/`` (it differs from ``student`` for a name that is not UTF-8); it is read
    without following links."""
    from autograder.course.autograded_notebook import write_autograded
    from autograder.course.feedback import write_feedback
    from autograder.course.gradebook import read_timestamp
    from autograder.results import write_atomic

    assignment = asg.name
    folder = paths.submitted / folder_name / assignment
    job = choose_notebook(folder, assignment, student, base=paths.submitted) \
        if folder.is_dir() and not folder.is_symlink() else None
    if job is not None and job.notebook is None:
        job = None
    target = paths.autograded_notebook(student, assignment)
    sha = result.details.submission_sha256
    try:
        write_autograded(target, released, asg, result, job.notebook if job else None, sha,
                         base=paths.submitted)
    except Exception:     # one student's file never stops the cohort: the release, outcomes in
        write_autograded(target, released, asg, result, None, sha)
    page = paths.feedback_html(student, assignment)
    write_feedback(result, page)
    legacy = page.with_name("feedback.html")     # the page's name before it followed nbgrader's
    if legacy != page and legacy.is_file():
        legacy.unlink()
    # nbgrader copies autograded/ into feedback/ (generate_feedback), and releasing needs both
    # files there: the submission's time as collected, else (an LMS download) the first grading's
    autograded = paths.autograded_notebook(student, assignment).parent
    stamp = read_timestamp(folder, paths.submitted)
    for dest in (autograded, page.parent):
        if stamp is not None or not (dest / "timestamp.txt").exists():
            write_atomic(dest / "timestamp.txt", nbgrader_timestamp(stamp))
    secret = submission_secret(folder, autograded / "submission_secret.txt", paths.submitted)
    for dest in (autograded, page.parent):
        write_atomic(dest / "submission_secret.txt", secret)


def submission_secret(submitted: Path, previous: Path, base: Path) -> str:
    """The key ``nbgrader submit`` left (feedback is released under a hash of it), else the one
    made before, else a new one: feedback of a submission that did not come through nbgrader's
    exchange is released under a key no student holds (it reaches them another way). Both files
    are untrusted bytes: regular files reached from ``base`` / their folder without links,
    at most ``bounds.SMALL_FILE_MAX_BYTES``."""
    import secrets

    for path, root in ((submitted / "submission_secret.txt", base),
                       (previous, previous.parent)):
        try:
            raw = untrusted.read_regular(path, root, bounds.SMALL_FILE_MAX_BYTES)
            value = raw.decode("ascii").strip()
        except (OSError, ValueError, untrusted.Refused):
            continue
        if value and value.isalnum():
            return value
    return secrets.token_hex(64)


def nbgrader_timestamp(when=None) -> str:
    """A time as nbgrader writes ``timestamp.txt`` (UTC); now when ``when`` is None."""
    from datetime import datetime, timezone

    when = (when or datetime.now(timezone.utc))
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M:%S.%f") + " UTC"


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
        self.counts: Counter[str] = Counter()

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

    kinds = Counter(kind(r) for r in run.graded.values())
    flagged = [s for s, r in run.graded.items() if is_flagged(r)]
    scores = [r.score for r in run.graded.values()]
    max_score = max((r.details.max_score for r in run.graded.values()), default=0.0)
    table = Table(title=f"grade-course {run.assignment}: {len(run.graded)} submissions "
                        f"({len(run.graded_now)} graded now, {len(run.skipped)} up to date)")
    for col in ("graded", "failed to read", "flagged", "grader errors", "mean score"):
        table.add_column(col, justify="right")
    from autograder.points import fmt_points

    mean = f"{fmt_points(sum(scores) / len(scores))} / {fmt_points(max_score)}" if scores else "-"
    table.add_row(str(kinds["graded"]), str(kinds["failed to read"]), str(len(flagged)),
                  str(kinds["grader error"]), mean)
    return table


def cmd_grade_course(args) -> int:
    """``python -m autograder grade-course ASSIGNMENT [--course-dir DIR] [--jobs N] [--force]``."""
    from rich.console import Console

    out = Console()
    try:
        run = grade_course(args.course_dir, args.assignment, jobs=args.jobs, force=args.force,
                           device=getattr(args, "device", "auto"),
                           scheduler=getattr(args, "scheduler", None),
                           insecure_scheduler=getattr(args, "insecure_scheduler", False))
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
    problems = {s: r for s, r in run.graded.items() if kind(r) != "graded" or is_flagged(r)}
    for student, result in sorted(problems.items()):
        codes = ", ".join(f.code for f in result.details.flags)
        out.print(f"  {student}: {kind(result)}; {codes}", markup=False)
    for student, error in sorted(run.failed.items()):
        out.print(f"  {student}: {error}", markup=False)
    p = run.paths
    out.print(f"results:   {p.autograded}/*/{run.assignment}/results.json\n"
              f"feedback:  {p.feedback}/*/{run.assignment}/"
              f"{p.source_notebook(run.assignment).stem}.html\n"
              f"report:    {run.report}\n"
              f"gradebook: {run.gradebook_written} submission(s) updated; "
              f"`nbgrader export` writes the CSV")
    return 0
