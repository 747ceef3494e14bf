"""Shareable outputs: every file the kit writes gets ``0o666 & ~umask`` (0644 under the default
umask), like any tool's output, and is still written atomically."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from autograder import results as results_module
from autograder.course.feedback import write_feedback
from autograder.course.report import write_report
from autograder.results import GradingResult, ResultDetails, grade_cell_totals, write_atomic
from autograder.results import TestResult as Check


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def a_result(student: str) -> GradingResult:
    tests = [Check("compute_gae: seed example", 2.5, 5.0, "failed", "runs forward",
                        ["compute_gae"]),
             Check("reinforce_loss: sign", 3.0, 3.0, "passed", "", ["reinforce_loss"])]
    extra = {"max_score": 8.0, "student": student, "assignment": "ppo", "sandbox": "bwrap",
             "device": "cpu", "flags": [], "grade_cells": grade_cell_totals(tests),
             "submission_sha256": "0" * 64}
    return GradingResult(5.5, 1.0, "", tests, ResultDetails.from_json(extra))


@pytest.fixture()
def umask():
    """Set the process umask for one test, and put the old one back."""
    old = os.umask(0o022)
    try:
        yield lambda m: os.umask(m)
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077, 0o002])
def test_every_output_follows_the_umask(tmp_path, umask, mask):
    umask(mask)
    expected = 0o666 & ~mask
    autograded = tmp_path / "autograded"
    written = []
    for student in ("ana", "bo"):
        path = autograded / student / "ppo" / "results.json"
        a_result(student).write(path)
        written.append(path)
        page = tmp_path / "feedback" / student / "ppo" / "ppo.html"
        write_feedback(a_result(student), page)
        written.append(page)
    written.append(write_report(autograded, tmp_path / "reports" / "ppo", "ppo"))
    plain = tmp_path / "plain.txt"
    write_atomic(plain, "x")
    written.append(plain)
    for path in written:
        assert mode(path) == expected, (path, oct(mode(path)), oct(expected))
    # the same as an ordinary open() of a new file under that umask
    with open(tmp_path / "reference", "w"):
        pass
    assert mode(tmp_path / "reference") == expected


def test_the_umask_is_read_without_changing_it(umask):
    umask(0o037)
    assert results_module.current_umask() == 0o037
    assert os.umask(0o037) == 0o037        # still set to what it was


def test_an_overwrite_keeps_the_old_file_until_the_new_one_is_complete(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    a_result("ana").write(path)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(results_module.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        a_result("bo").write(path)
    assert path.read_bytes() == before
    assert json.loads(before)["extra_data"]["student"] == "ana"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]   # no temp file left

    monkeypatch.undo()
    a_result("bo").write(path)
    assert json.loads(path.read_text())["extra_data"]["student"] == "bo"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
