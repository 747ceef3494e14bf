"""The Makefile's own rules: ``make setup`` checks the Python version first; ``make solutions``
leaves an unchanged notebook byte-identical."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

from autograder import REPO_ROOT

import solutions as solutions_tool  # noqa: E402

FAKE_PYTHON = """#!/bin/bash
[ "$1" = --version ] && {{ echo "Python {version}"; exit 0; }}
echo "venv made by the stand-in" > "$PWD/made-venv"; exit 0
"""


def make_setup(tmp_path: Path, version: str) -> subprocess.CompletedProcess:
    for name in ("Makefile", "requirements.txt", "pyproject.toml"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    fake = tmp_path / f"python{version}"
    fake.write_text(FAKE_PYTHON.format(version=version))
    fake.chmod(0o755)
    return subprocess.run(["make", "-s", "setup", f"PYTHON={fake}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("version", ["3.10.12", "3.9.18", "2.7.18"])
def test_setup_stops_on_an_old_python_with_a_clear_message(tmp_path, version):
    done = make_setup(tmp_path, version)
    assert done.returncode != 0
    assert "the kit needs Python >= 3.11" in done.stderr and f"Python {version}" in done.stderr
    assert "make setup PYTHON=python3.11" in done.stderr
    assert not (tmp_path / "made-venv").exists() and not (tmp_path / ".venv").exists()


@pytest.mark.parametrize("version", ["3.11.4", "3.12.1", "3.13.0", "3.20.0"])
def test_setup_goes_on_with_a_new_enough_python(tmp_path, version):
    done = make_setup(tmp_path, version)
    assert "the kit needs Python" not in done.stderr
    assert (tmp_path / "made-venv").exists()          # it went on to create the venv with it


def test_a_rerun_of_an_unchanged_notebook_is_byte_identical(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import math\nprint(round(math.pi, 4))"),
                nbformat.v4.new_markdown_cell("text"),
                nbformat.v4.new_code_cell("x = [i * i for i in range(5)]\nx"),
                # output in two flushed chunks, and a duration that differs from run to run
                nbformat.v4.new_code_cell(
                    "import sys, time\nstarted = time.perf_counter()\n"
                    "print('first', flush=True)\ntime.sleep(0.05)\nprint('second')\n"
                    "print(f'took {time.perf_counter() - started + time.time() % 1:.3f} s')")]
    source = tmp_path / "source" / "toy" / "toy.ipynb"
    source.parent.mkdir(parents=True)
    nbformat.write(nb, source)
    out = tmp_path / "solutions" / "toy" / "toy.ipynb"

    first = solutions_tool.execute(source)
    assert solutions_tool.write_if_changed(first, out)
    before = out.read_bytes()
    mtime = out.stat().st_mtime_ns
    assert b"iopub.execute_input" not in before and b"3.1416" in before
    assert before.count(b'"output_type": "stream"') == 2       # the two chunks are one output
    again = solutions_tool.execute(source)           # a fresh kernel, new timestamps
    assert not solutions_tool.write_if_changed(again, out)
    assert out.read_bytes() == before and out.stat().st_mtime_ns == mtime
    # a real change is written
    nb.cells[0].source = "print(2 + 2)"
    nbformat.write(nb, source)
    assert solutions_tool.write_if_changed(solutions_tool.execute(source), out)
    assert b"3.1416" not in out.read_bytes()


CHECK_BUSY = """#!/bin/sh
# stands in for `make test`: the busy loops run, one per core, while it does
[ "$(echo $BUSY_PIDS | wc -w)" = "$(nproc)" ] || exit 8
for p in $BUSY_PIDS; do kill -0 "$p" || exit 9; done
exit 3
"""


def test_test_busy_loads_every_core_and_stops_the_loops(tmp_path):
    """``make test-busy`` runs its tests with one busy loop per core, returns their exit status
    and stops the loops, also when the tests fail."""
    shutil.copy(REPO_ROOT / "Makefile", tmp_path / "Makefile")
    check = tmp_path / "check-busy"
    check.write_text(CHECK_BUSY)
    check.chmod(0o755)
    done = subprocess.run(["make", "-s", "test-busy", f"BUSY_TEST={check}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "test-busy: exit 3 after" in done.stdout, done
    pids = [int(p) for p in done.stdout.split("(pids", 1)[1].split(")", 1)[0].split()]
    assert len(pids) == len(os.sched_getaffinity(0))
    for pid in pids:               # killed at once; reaped by init shortly after
        for _ in range(100):
            if not running(pid):
                break
            time.sleep(0.05)
        assert not running(pid), pid


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
