"""Nothing left behind: a cohort run, finished or killed (SIGKILL of grade-course), leaves no
scratch folders and no processes; a killed run's folders are reaped by the next run.

Each run gets a private TMPDIR, so the check sees this run's folders only (other runs on the
machine use /tmp too). Processes are identified by pid and start time, sampled from the
coordinator's process tree while it runs, so a reused pid is never mistaken for a leftover.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from autograder import REPO_ROOT
from autograder.course.demo import copy_course, solutions, submission, write_cohort
from autograder.sandbox.cleanup import _start_time
from autograder.sandbox.process_tree import descendants
from timing import allowance

ASSIGNMENT = "ppo"


@pytest.fixture()
def tmpdir_for_run():
    path = Path(tempfile.mkdtemp(prefix="leftovers-"))
    path.chmod(0o755)                 # as /tmp: the fallback's scratch must be reachable
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start(course: Path, tmp: Path) -> subprocess.Popen:
    env = dict(os.environ, TMPDIR=str(tmp))
    return subprocess.Popen([sys.executable, "-m", "autograder", "grade-course", ASSIGNMENT,
                             "--course-dir", str(course), "--jobs", "2"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


WORKERS: set[int] = set()    # pids seen running autograder.sandbox.worker


def sample(proc: subprocess.Popen, seen: dict[int, int]) -> None:
    for pid in descendants(proc.pid):
        started = _start_time(pid)
        if started is not None and pid not in seen:
            seen[pid] = started
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"autograder.sandbox.worker" in f.read():
                    WORKERS.add(pid)
        except OSError:
            continue


def sandboxed(seen: dict[int, int]) -> bool:
    return bool(WORKERS & set(seen))


def alive(seen: dict[int, int]) -> list[int]:
    return [pid for pid, started in seen.items() if _start_time(pid) == started
            and not _zombie(pid)]


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return data[data.rfind(b")") + 2:].split()[0] in (b"Z", b"X")
    except OSError:
        return True


def wait_gone(seen: dict[int, int]) -> list[int]:
    """The processes of ``seen`` still alive after a wait of 16 cold starts measured now (about
    20 s on a quiet machine, longer on a busy one): a leftover never goes."""
    deadline = time.monotonic() + allowance(16)
    while alive(seen) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive(seen)


def scratch_left(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith(("ag-zygote-", "ag-worker-")))


def cohort(paths, names) -> None:
    right = submission(paths, solutions(paths))
    write_cohort(paths, {n: {f"{ASSIGNMENT}.ipynb": right} for n in names})


@pytest.mark.slow          # three cohort runs end to end, one killed: about 30 s
def test_finished_and_killed_runs_leave_nothing(tmp_path, tmpdir_for_run):
    paths = copy_course(tmp_path / "course")
    cohort(paths, ["ann", "bob"])

    # 1. a normal run
    seen: dict[int, int] = {}
    proc = start(paths.root, tmpdir_for_run)
    while proc.poll() is None:
        sample(proc, seen)
        time.sleep(0.05)
    assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
    assert sandboxed(seen), "the run started no sandboxed worker"
    assert wait_gone(seen) == []
    assert scratch_left(tmpdir_for_run) == []

    # 2. a run killed while it grades
    cohort(paths, ["ann", "bob", "cy", "dan", "eve", "fay"])
    seen = {}
    proc = start(paths.root, tmpdir_for_run)
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        sample(proc, seen)
        if sandboxed(seen) and scratch_left(tmpdir_for_run):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "kill the run while it grades"
    sample(proc, seen)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert wait_gone(seen) == [], "processes outlived the killed run"
    killed_left = scratch_left(tmpdir_for_run)
    assert killed_left, "a killed run cannot clean up after itself; the next run must"

    # 3. the next run reaps them, and leaves nothing of its own
    proc = start(paths.root, tmpdir_for_run)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert scratch_left(tmpdir_for_run) == []
