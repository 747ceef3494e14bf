"""The Gradescope bundle: built, unzipped into a simulated /autograder, run on a submission."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest

from autograder import REPO_ROOT
from autograder.course.demo import copy_course, solutions, submission
from gradescope_schema import RESULTS_SCHEMA

ASSIGNMENT = "ppo"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "autograder.zip"
    done = subprocess.run([sys.executable, "-m", "autograder", "gradescope-bundle", ASSIGNMENT,
                           "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return out


def install(bundle: Path, root: Path) -> dict:
    """Unzip as Gradescope does into root/source and run setup.sh (no installs)."""
    src = root / "source"
    with zipfile.ZipFile(bundle) as zf:
        for info in zf.infolist():
            zf.extract(info, src)
            mode = info.external_attr >> 16 & 0o777
            if mode:
                os.chmod(src / info.filename, mode)
    env = dict(os.environ, AUTOGRADER_ROOT=str(root), AUTOGRADER_SKIP_INSTALL="1",
               AUTOGRADER_PYTHON=sys.executable)
    done = subprocess.run(["bash", str(src / "setup.sh")], cwd=src, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (root / "submission").mkdir()
    return env


def run_autograder(root: Path, env: dict) -> dict:
    done = subprocess.run([str(root / "source" / "run_autograder")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((root / "results" / "results.json").read_text())
    jsonschema.validate(data, RESULTS_SCHEMA)
    return data


def test_bundle_layout(bundle):
    with zipfile.ZipFile(bundle) as zf:
        infos = {i.filename: i for i in zf.infolist()}
    for name in ("setup.sh", "run_autograder", "requirements.txt", "nbgrader_config.py",
                 f"source/{ASSIGNMENT}/{ASSIGNMENT}.ipynb", "autograder/__main__.py",
                 "autograder/sandbox/worker.py", f"assignments/{ASSIGNMENT}/mutants.py",
                 f"assignments/{ASSIGNMENT}/trainers/bandit.py"):
        assert name in infos, name
    assert infos["run_autograder"].external_attr >> 16 & 0o111
    assert infos["setup.sh"].external_attr >> 16 & 0o111
    assert not [n for n in infos if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in infos
                if n.startswith(("release/", "submitted/", "tests/", "solutions/"))]
    # the runtime pins only: requirements.txt above its "# --- development only" line
    shipped = zipfile.ZipFile(bundle).read("requirements.txt").decode()
    full = (REPO_ROOT / "requirements.txt").read_text()
    dev = full[full.index("# --- development only"):]
    assert full.startswith(shipped) and shipped + dev == full
    pins = {line.split("==")[0] for line in shipped.splitlines() if "==" in line}
    assert {"torch", "numpy", "nbgrader"} <= pins
    assert not pins & {line.split("==")[0] for line in dev.splitlines() if "==" in line}


@pytest.mark.slow   # end to end: make test-all
def test_run_autograder_grades_a_submission(bundle, tmp_path):
    root = tmp_path / "autograder"
    env = install(bundle, root)
    # instructor files are root-only; the worker's uid could read none of them
    from autograder.sandbox.backends import fallback_exposures

    assert fallback_exposures(root / "source", kit_root=root / "source") == []
    for rel in ("source", "assignments", "autograder/suites", "nbgrader_config.py"):
        assert not stat.S_IMODE((root / "source" / rel).stat().st_mode) & 0o077, rel
    assert not stat.S_IMODE((root / "results").stat().st_mode) & 0o077

    paths = copy_course(tmp_path / "course")
    (root / "submission" / f"{ASSIGNMENT}.ipynb").write_bytes(submission(paths, solutions(paths)))
    (root / "submission_metadata.json").write_text(json.dumps(
        {"id": 123, "users": [{"email": "ada@example.edu", "id": 4242, "name": "Ada"}]}))
    data = run_autograder(root, env)
    extra = data["extra_data"]
    assert data["score"] == pytest.approx(extra["max_score"]) and extra["max_score"] > 0
    assert extra["student"] == "4242" and extra["assignment"] == ASSIGNMENT
    assert extra["sandbox"] in ("bwrap", "fallback")
    assert {t["tags"][0] for t in data["tests"]} == set(extra["grade_cells"])
    assert all(t["status"] == "passed" for t in data["tests"])


def test_missing_notebook_still_writes_results(bundle, tmp_path):
    root = tmp_path / "autograder"
    env = install(bundle, root)
    (root / "submission" / "notes.txt").write_text("I forgot the notebook")
    data = run_autograder(root, env)
    assert data["score"] == 0
    assert "no notebook was submitted" in data["output"] and "ppo.ipynb" in data["output"]
    assert data["tests"] and all(t["status"] == "failed" for t in data["tests"])


def test_a_grader_that_cannot_start_still_writes_results(bundle, tmp_path):
    root = tmp_path / "autograder"
    env = install(bundle, root)
    (root / "source" / "autograder" / "gradescope.py").write_text("raise SystemExit(7)\n")
    data = run_autograder(root, env)
    assert data["score"] == 0 and "failed to start (exit status 7)" in data["output"]
