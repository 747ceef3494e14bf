"""``docs/adding-an-assignment.md`` works as written: its walkthrough's code blocks, run in order
in a temporary course, build a third assignment (one function, two hidden tests, one mutant),
release it, grade one submission and grade the cohort, with no edit to the kit.

The blocks are taken from the document itself (a ``python file=PATH`` block is written to PATH,
a ``bash`` block is run, both in the course directory), so the document cannot drift from what
works. The checks below are the test's own.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import REPO_ROOT

DOC = REPO_ROOT / "docs" / "adding-an-assignment.md"
BLOCK = re.compile(r"^```([^\n]*)\n(.*?)^```\s*$", re.M | re.S)


def walkthrough_blocks() -> list[tuple[str, str]]:
    """(info string, body) of every fenced block of the walkthrough section, in order."""
    text = DOC.read_text()
    start = text.index("## Walkthrough")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else len(text)]
    return [(m.group(1).strip(), m.group(2)) for m in BLOCK.finditer(section)]


def test_the_walkthrough_has_files_and_commands():
    kinds = [info.split()[0] for info, _ in walkthrough_blocks() if info]
    assert kinds.count("bash") >= 4 and kinds.count("python") >= 4
    files = [info.split("file=", 1)[1] for info, _ in walkthrough_blocks() if "file=" in info]
    assert any(f.startswith("assignments/returns/test_") for f in files)
    assert "assignments/returns/mutants.py" in files


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Run the walkthrough in an empty course directory; returns (course, outputs of bash)."""
    course = tmp_path_factory.mktemp("third") / "course"
    course.mkdir()
    bindir = str(Path(sys.executable).parent)
    env = dict(os.environ, KIT=str(REPO_ROOT),
               PATH=os.pathsep.join([bindir, os.environ.get("PATH", "")]))
    env["PYTHONPATH"] = str(REPO_ROOT)     # this checkout of the kit, whatever is installed
    outputs = []
    for info, body in walkthrough_blocks():
        if "file=" in info:
            path = course / info.split("file=", 1)[1].split()[0]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
        elif info == "bash":
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=course, env=env,
                                  capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, f"{body}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            outputs.append(done.stdout)
    return course, outputs


@pytest.mark.slow      # nbgrader, grade and grade-course end to end: about 30 s
def test_the_kit_was_not_edited(built):
    """The assignment lives in the temporary course only: the kit knows nothing of it."""
    assert not (REPO_ROOT / "assignments" / "returns").exists()
    assert not (REPO_ROOT / "source" / "returns").exists()


@pytest.mark.slow      # nbgrader, grade and grade-course end to end: about 30 s
def test_the_release_has_no_solution_and_no_grader_code(built):
    course, outputs = built
    release = course / "release" / "returns"
    assert sorted(p.name for p in release.iterdir()) == ["returns.ipynb"]
    text = (release / "returns.ipynb").read_text()
    assert "gamma ** t * r" not in text and "NotImplementedError" in text
    assert any(line.strip() == "returns" for out in outputs for line in out.splitlines())


@pytest.mark.slow      # nbgrader, grade and grade-course end to end: about 30 s
def test_one_submission_loses_its_points_with_the_mutants_hint(built):
    course, _ = built
    result = json.loads((course / "bob.json").read_text())
    assert result["extra_data"]["max_score"] == 2
    assert result["score"] == 0
    assert not [f for f in result["extra_data"]["flags"] if f["code"] == "grader_error"]
    text = " ".join(t["output"] for t in result["tests"])
    assert "without discounting" in text


@pytest.mark.slow      # nbgrader, grade and grade-course end to end: about 30 s
def test_the_cohort_is_graded(built):
    course, _ = built
    scores = {}
    for student in ("alice", "bob"):
        path = course / "autograded" / student / "returns" / "results.json"
        scores[student] = json.loads(path.read_text())["score"]
        assert (course / "feedback" / student / "returns").is_dir()
    assert scores == {"alice": 2, "bob": 0}
    assert (course / "gradebook.db").is_file()
