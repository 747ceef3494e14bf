"""``grade-course``: a small cohort graded for real, skipping, regrading, crashes and SIGKILL."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autograder import REPO_ROOT
from autograder.course.batch import choose_notebook, coordinator_lock, grade_course, run_slots
from autograder.course.demo import (applicable_mutants, copy_course, mutated, nbgrader_export,
                                    solutions, submission, write_cohort)
from autograder.course.gradebook import open_gradebook
from autograder.results import GradingResult, ResultDetails, grade_cell_totals
from autograder.results import TestResult as Check
from timing import allowance

ASSIGNMENT = "ppo"
# The slots import this module (grader="test_course:stub_grade") and what it imports from
# tests/ (timing): both folders on their PYTHONPATH.
STUB_PATH = os.pathsep.join([str(Path(__file__).resolve().parent), str(REPO_ROOT / "tests")])
MUTANT = "gae_forward"     # loses points on compute_gae only


def cli(course: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autograder", "grade-course", ASSIGNMENT,
                           "--course-dir", str(course), *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def small_cohort(paths) -> dict[str, dict[str, bytes]]:
    nb = f"{ASSIGNMENT}.ipynb"
    right = submission(paths, solutions(paths))
    mutant = next(m for m in applicable_mutants(paths) if m.name == MUTANT)
    return {
        "ada": {nb: right},
        "ben": {nb: submission(paths, {})},
        "cal": {nb: submission(paths, mutated(paths, mutant))},
        "dee": {"ppo_v2.ipynb": right},
        "gus": {nb: b'{"cells": [ this is not JSON'},
    }


def results(paths) -> dict[str, dict]:
    return {p.parent.parent.name: json.loads(p.read_text())
            for p in sorted(paths.autograded.glob(f"*/{ASSIGNMENT}/results.json"))}


def codes(data: dict) -> set[str]:
    return {f["code"] for f in data["extra_data"]["flags"]}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The small cohort, graded once by the CLI with the real grader and sandbox."""
    paths = copy_course(tmp_path_factory.mktemp("course") / "course")
    write_cohort(paths, small_cohort(paths))
    done = cli(paths.root, "--jobs", "2")
    return paths, done


def test_small_cohort_results_and_summary(graded):
    paths, done = graded
    assert done.returncode == 0, done.stderr[-3000:]
    res = results(paths)
    assert set(res) == {"ada", "ben", "cal", "dee", "gus"}
    max_score = res["ada"]["extra_data"]["max_score"]
    assert res["ada"]["score"] == pytest.approx(max_score)
    assert res["ben"]["score"] == 0
    cal = res["cal"]["extra_data"]["grade_cells"]
    assert cal["compute_gae"]["score"] < cal["compute_gae"]["max_score"]
    assert cal["reinforce_loss"]["score"] == cal["reinforce_loss"]["max_score"]
    assert res["dee"]["score"] == pytest.approx(max_score)
    assert "renamed_notebook" in codes(res["dee"])
    assert "unreadable_notebook" in codes(res["gus"]) and res["gus"]["score"] == 0
    for student, data in res.items():
        assert data["extra_data"]["student"] == student
        assert data["extra_data"]["sandbox"] in ("bwrap", "fallback") or student == "gus"
        assert "grader_error" not in codes(data), data["extra_data"]["flags"]
        assert len(data["extra_data"]["submission_sha256"]) == 64
        assert (paths.feedback / student / ASSIGNMENT / f"{ASSIGNMENT}.html").exists()
    assert (paths.reports / ASSIGNMENT / "index.html").exists()

    # the progress bar: count, failures so far, ETA
    assert re.search(r"5/5 +0 grader errors +1 failed to read .*ETA", done.stderr), done.stderr
    out = done.stdout
    assert "5 graded now, 0 up to date" in out
    header = ["graded", "failed to read", "flagged", "grader errors", "mean score"]
    assert all(h in out for h in header)
    mean = sum(d["score"] for d in res.values()) / 5
    row = re.search(r"│\s*(\d+)\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*([\d.]+) /", out)
    assert row and row.groups()[:4] == ("4", "1", "1", "0"), out
    assert float(row.group(5)) == pytest.approx(mean, abs=0.01)


def test_gradebook_export_after_grade_course(graded):
    paths, _ = graded
    done = nbgrader_export(paths, paths.root / "grades.csv")
    assert done.returncode == 0, done.stderr
    with open(paths.root / "grades.csv") as f:
        rows = {r["student_id"]: float(r["score"]) for r in csv.DictReader(f)}
    assert rows == pytest.approx({s: d["score"] for s, d in results(paths).items()})


def test_rerun_skips_what_is_graded(graded):
    paths, _ = graded
    before = {s: paths.results(s, ASSIGNMENT).stat().st_mtime_ns for s in results(paths)}
    again = cli(paths.root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 graded now, 5 up to date" in again.stdout
    assert {s: paths.results(s, ASSIGNMENT).stat().st_mtime_ns for s in before} == before


def test_force_and_changed_submission(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", STUB_PATH)
    paths = copy_course(tmp_path / "course")
    names = ["a1", "a2", "a3"]
    write_cohort(paths, {s: {f"{ASSIGNMENT}.ipynb": b'{"v": 1}'} for s in names})

    def grade(**kw):
        return grade_course(paths.root, ASSIGNMENT, jobs=2, grader="test_course:stub_grade",
                            outputs=False, **kw)

    def stamps():
        return {s: paths.results(s, ASSIGNMENT).stat().st_mtime_ns for s in names}

    assert sorted(grade().graded_now) == names
    first = stamps()
    assert grade().graded_now == [] and stamps() == first
    write_cohort(paths, {"a2": {f"{ASSIGNMENT}.ipynb": b'{"v": 2}'}})   # a2 hands in again
    run = grade()
    assert run.graded_now == ["a2"] and run.skipped == ["a1", "a3"]
    second = stamps()
    assert [s for s in names if second[s] != first[s]] == ["a2"]
    sha = json.loads(paths.results("a2", ASSIGNMENT).read_text())["extra_data"]["submission_sha256"]
    assert sha == hashlib.sha256(b'{"v": 2}').hexdigest()
    assert sorted(grade(force=True).graded_now) == names
    assert all(stamps()[s] != second[s] for s in names)


def test_choosing_the_notebook(tmp_path):
    folder = tmp_path / "submitted" / "zed" / ASSIGNMENT
    folder.mkdir(parents=True)
    assert choose_notebook(folder, ASSIGNMENT).flags[0]["code"] == "no_notebook"
    (folder / "draft.ipynb").write_text("{}")
    job = choose_notebook(folder, ASSIGNMENT)
    assert job.notebook.name == "draft.ipynb" and job.flags[0]["code"] == "renamed_notebook"
    (folder / "final.ipynb").write_text("{}")
    job = choose_notebook(folder, ASSIGNMENT)
    assert job.notebook is None and job.flags[0]["code"] == "ambiguous_submission"
    (folder / f"{ASSIGNMENT}.ipynb").write_text("{ }")
    job = choose_notebook(folder, ASSIGNMENT)
    assert job.notebook.name == f"{ASSIGNMENT}.ipynb" and job.student == "zed"
    assert job.flags[0]["code"] == "extra_notebooks" and "draft.ipynb" in job.flags[0]["message"]


def test_one_coordinator_at_a_time(tmp_path):
    paths = copy_course(tmp_path / "course")
    with coordinator_lock(paths, ASSIGNMENT):
        done = cli(paths.root)
    assert done.returncode == 2 and "another grade-course ppo is running" in done.stderr


# --- a grader that crashes or hangs, injected into the slots ------------------------------------

def stub_grade(path, assignment, *, student, settings, device="auto", backend=None, **_):
    """Grades instantly; 'crash' kills its own process; 'hang' never returns."""
    if student.startswith("crash"):
        os._exit(9)
    if student.startswith("hang"):
        time.sleep(600)
    if student.startswith("bug"):
        raise RuntimeError("a bug in the kit")
    tests = [Check("reinforce_loss: ok", 3.0, 3.0, "passed", "", ["reinforce_loss"])]
    extra = {"max_score": 3.0, "student": student, "assignment": assignment, "sandbox": "stub",
             "device": "cpu", "flags": [], "grade_cells": grade_cell_totals(tests)}
    return GradingResult(3.0, 0.01, "", tests, ResultDetails.from_json(extra))


@pytest.mark.slow   # end to end: make test-all
def test_slot_crash_hang_and_kit_bug_do_not_stop_the_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", STUB_PATH)
    paths = copy_course(tmp_path / "course")
    names = ["a1", "crash1", "a2", "bug1", "hang1", "a3", "a4"]
    write_cohort(paths, {s: {f"{ASSIGNMENT}.ipynb": b"{}"} for s in names})
    jobs = [choose_notebook(paths.submitted / s / ASSIGNMENT, ASSIGNMENT) for s in names]
    seen: dict[str, tuple] = {}
    started = time.monotonic()
    run_slots(jobs, course_dir=paths.root, assignment=ASSIGNMENT, n=2,
              grader="test_course:stub_grade", request_extra={}, timeout=8,
              on_result=lambda job, result, error: seen.setdefault(job.student, (result, error)))
    # the hang is stopped at its 8 s timeout: the other slot's six jobs and the two slot
    # restarts cost a few cold starts, however busy the machine
    assert time.monotonic() - started < 8 + allowance(10)
    assert sorted(seen) == sorted(names)
    for s in ("a1", "a2", "a3", "a4"):
        assert seen[s][0].score == 3.0 and not seen[s][1]
    assert seen["crash1"][0] is None and "died (exit" in seen["crash1"][1]
    assert seen["hang1"][0] is None and "longer than 8 s" in seen["hang1"][1]
    assert seen["bug1"][0] is None and "a bug in the kit" in seen["bug1"][1]


def test_grader_errors_are_recorded_and_retried(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", STUB_PATH)
    paths = copy_course(tmp_path / "course")
    write_cohort(paths, {s: {f"{ASSIGNMENT}.ipynb": b"{}"} for s in ("ok1", "crash1")})
    run = grade_course(paths.root, ASSIGNMENT, jobs=2, grader="test_course:stub_grade",
                       outputs=False)
    res = results(paths)
    assert res["ok1"]["score"] == 3.0 and "grader_error" in codes(res["crash1"])
    assert res["crash1"]["score"] == 0 and len(res["crash1"]["tests"]) == 5
    assert sorted(run.graded_now) == ["crash1", "ok1"]
    again = grade_course(paths.root, ASSIGNMENT, jobs=2, grader="test_course:stub_grade",
                         outputs=False)
    assert again.graded_now == ["crash1"] and again.skipped == ["ok1"]


# --- SIGKILL in the middle of a batch, with the real grader and sandbox ---------------------------

@pytest.mark.slow          # a cohort killed mid-batch, then graded again: about 20 s
def test_sigkill_mid_batch_then_rerun_completes(tmp_path):
    from nbgrader.api import Grade, Student, SubmittedAssignment

    paths = copy_course(tmp_path / "course")
    base = small_cohort(paths)
    cohort = {f"{s}1": files for s, files in base.items() if s != "gus"}
    write_cohort(paths, cohort)
    proc = subprocess.Popen([sys.executable, "-m", "autograder", "grade-course", ASSIGNMENT,
                             "--course-dir", str(paths.root), "--jobs", "2"], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not results(paths) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {s: paths.results(s, ASSIGNMENT).read_bytes() for s in results(paths)}
    assert 0 < len(done_before) < len(cohort), "kill the batch while it is grading"
    assert not (paths.root / "gradebook.db").exists()     # written only after the batch

    def slots() -> list[str]:
        return subprocess.run(["pgrep", "-f", f"autograder.course.slot .* {paths.root} "],
                              capture_output=True, text=True).stdout.split()
    gone_by = time.monotonic() + allowance(1)      # a cold start measured now: about 1 s quiet
    while slots() and time.monotonic() < gone_by:
        time.sleep(0.1)
    assert slots() == [], "slot processes outlived the killed coordinator"

    rerun = cli(paths.root, "--jobs", "2")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    n_before = len(done_before)
    assert f"{len(cohort) - n_before} graded now, {n_before} up to date" in rerun.stdout
    res = results(paths)
    assert set(res) == set(cohort)
    for s, raw in done_before.items():                 # nothing graded twice
        assert paths.results(s, ASSIGNMENT).read_bytes() == raw
    leftover_tmp = list(paths.autograded.rglob("*.tmp"))
    assert leftover_tmp == []
    with open_gradebook(f"sqlite:///{paths.root}/gradebook.db", paths.course_id) as gb:
        subs = gb.db.query(SubmittedAssignment).all()
        assert sorted(s.student.id for s in subs) == sorted(cohort)
        assert gb.db.query(Student).count() == len(cohort)
        n_cells = len(res["ada1"]["extra_data"]["grade_cells"])
        assert gb.db.query(Grade).count() == len(cohort) * n_cells
        for s, data in res.items():
            assert gb.find_submission(ASSIGNMENT, s).score == pytest.approx(data["score"])
