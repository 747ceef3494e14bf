"""The Gradescope bundle on Gradescope's image: setup.sh's choice of Python (against stand-in
interpreters and a stand-in apt-get), the runtime pins it installs, and the visibility settings
and the staff log of a full run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import REPO_ROOT
from autograder.sandbox.backends import runtime_paths
from autograder.gradescope import (apply_visibility, runtime_requirements, setup_script,
                                   staff_log, visibility_options)
from autograder.results import GradingResult
from autograder.results import TestResult as Check
from test_gradescope import ASSIGNMENT, bundle, install, run_autograder  # noqa: F401

FAKE_PYTHON = """#!/bin/bash
# A stand-in interpreter: reports its version, makes a venv whose pip records its arguments.
echo "$(basename "$0") $*" >> "$FAKE_LOG"
case "$1" in
  --version) echo "Python {version}" ;;
  -m) [ "$2" = venv ] || exit 1
      mkdir -p "$3/bin"
      printf '#!/bin/bash\\necho "pip $*" >> "$FAKE_LOG"\\n' > "$3/bin/pip"
      chmod +x "$3/bin/pip" ;;
  *) exit 1 ;;
esac
"""
# apt-get: logs; "installs" python3.11 when the archive has it ($ARCHIVE_PY311=1) or once the
# deadsnakes PPA was added ($PPA_PY311=1 and add-apt-repository ran).
FAKE_APT = """#!/bin/bash
echo "apt-get $*" >> "$FAKE_LOG"
if [[ " $* " == *" python3.11 "* ]]; then
  if [ "$ARCHIVE_PY311" = 1 ] || { [ "$PPA_PY311" = 1 ] && [ -e "$FAKE_BIN/.ppa" ]; }; then
    cp "$FAKE_BIN/.python3.11" "$FAKE_BIN/python3.11"; chmod +x "$FAKE_BIN/python3.11"
  else
    echo "E: Unable to locate package python3.11" >&2; exit 100
  fi
fi
exit 0
"""
FAKE_PPA = """#!/bin/bash
echo "add-apt-repository $*" >> "$FAKE_LOG"
touch "$FAKE_BIN/.ppa"
"""
LEFT_OUT = ("python", "pip", "apt", "add-apt-repository")


def stand_in(tmp_path: Path, python3: str, **env) -> tuple[Path, dict]:
    """A course root with the bundle's requirements and setup.sh, and a PATH whose python3 is a
    stand-in reporting ``python3``; every real interpreter and apt tool is off the PATH."""
    root = tmp_path / "autograder"
    src = root / "source"
    src.mkdir(parents=True)
    (src / "requirements.txt").write_text(
        runtime_requirements((REPO_ROOT / "requirements.txt").read_text()))
    (src / "setup.sh").write_text(setup_script())
    for p in runtime_paths():               # the folders the lock-down opens for the runtime
        (src / p).parent.mkdir(parents=True, exist_ok=True)
    fake = tmp_path / "bin"
    fake.mkdir()
    for d in ("/usr/local/bin", "/usr/bin", "/bin"):
        for tool in Path(d).iterdir() if Path(d).is_dir() else []:
            if not tool.name.startswith(LEFT_OUT) and not (fake / tool.name).exists() \
                    and os.access(tool, os.X_OK) and tool.is_file():
                (fake / tool.name).symlink_to(tool)
    (fake / "python3").write_text(FAKE_PYTHON.format(version=python3))
    (fake / ".python3.11").write_text(FAKE_PYTHON.format(version="3.11.9"))
    (fake / "apt-get").write_text(FAKE_APT)
    (fake / "add-apt-repository").write_text(FAKE_PPA)
    for name in ("python3", "apt-get", "add-apt-repository"):
        (fake / name).chmod(0o755)
    log = tmp_path / "calls.log"
    log.touch()
    return root, {"PATH": str(fake), "HOME": str(tmp_path), "AUTOGRADER_ROOT": str(root),
                  "FAKE_LOG": str(log), "FAKE_BIN": str(fake), **env}


def setup(root: Path, env: dict) -> tuple[subprocess.CompletedProcess, list[str]]:
    done = subprocess.run(["/bin/bash", str(root / "source" / "setup.sh")], cwd=root / "source",
                          env=env, capture_output=True, text=True, timeout=60)
    return done, Path(env["FAKE_LOG"]).read_text().splitlines()


def check_installs(root: Path, calls: list[str]) -> None:
    """CPU torch from PyTorch's index, then the runtime pins without torch or dev tools."""
    pips = [c for c in calls if c.startswith("pip ")]
    assert len(pips) == 2, calls
    assert "--index-url https://download.pytorch.org/whl/cpu torch==" in pips[0]
    assert pips[1].endswith("-r " + str(root / "requirements-no-torch.txt"))
    rest = (root / "requirements-no-torch.txt").read_text()
    assert "numpy==" in rest and "nbgrader==" in rest
    assert "torch" not in rest and "pytest" not in rest and "playwright" not in rest


def test_image_python_310_gets_python_311_from_the_archive(tmp_path):
    root, env = stand_in(tmp_path, "3.10.12", ARCHIVE_PY311="1")
    done, calls = setup(root, env)
    assert done.returncode == 0, done.stderr
    assert any(c.startswith("apt-get install") and "python3.11-venv" in c for c in calls)
    assert not any(c.startswith("add-apt-repository") for c in calls)
    assert f"python3.11 -m venv {root}/venv" in calls           # not the image's 3.10
    assert not any(c.startswith("python3 -m venv") for c in calls)
    check_installs(root, calls)


def test_image_python_310_falls_back_to_the_deadsnakes_ppa(tmp_path):
    root, env = stand_in(tmp_path, "3.10.12", PPA_PY311="1")
    done, calls = setup(root, env)
    assert done.returncode == 0, done.stderr
    assert "add-apt-repository -y ppa:deadsnakes/ppa" in calls
    assert f"python3.11 -m venv {root}/venv" in calls
    check_installs(root, calls)


def test_no_python_311_anywhere_stops_with_a_clear_message(tmp_path):
    root, env = stand_in(tmp_path, "3.10.12")
    done, calls = setup(root, env)
    assert done.returncode != 0
    assert "no Python >= 3.11 could be installed" in done.stderr, done.stderr
    assert "python3 is Python 3.10.12" in done.stdout
    assert not any(" -m venv" in c for c in calls) and not any(c.startswith("pip") for c in calls)


@pytest.mark.parametrize("version", ["3.11.4", "3.12.3", "3.13.0"])
def test_a_new_enough_image_python_is_used_as_it_is(tmp_path, version):
    root, env = stand_in(tmp_path, version)
    done, calls = setup(root, env)
    assert done.returncode == 0, done.stderr
    assert not any("python3.11" in c for c in calls if c.startswith("apt-get"))
    assert f"python3 -m venv {root}/venv" in calls
    check_installs(root, calls)


def test_runtime_requirements_need_the_marker():
    text = "torch==1\nnumpy==2\n# --- development only: tests\npytest==9\n"
    assert runtime_requirements(text) == "torch==1\nnumpy==2\n"
    with pytest.raises(ValueError, match="development only"):
        runtime_requirements("torch==1\npytest==9\n")


def config_with(tmp_path: Path, lines: str) -> Path:
    course = tmp_path / "course"
    course.mkdir()
    (course / "nbgrader_config.py").write_text(
        (REPO_ROOT / "nbgrader_config.py").read_text() + "\n" + lines)
    return course


def test_visibility_from_the_config(tmp_path):
    course = config_with(tmp_path, 'c.PPOKit.gradescope_visibility = "after_published"\n'
                         'c.PPOKit.gradescope_test_visibility = {"ppo_training": "hidden", '
                         '"compute_gae: exact": "after_due_date"}\n')
    options = visibility_options(course)
    result = GradingResult(0.0, 0.0, "", [
        Check(name, 0.0, 1.0, "failed", "", [name.split(":")[0]])
        for name in ("compute_gae: exact", "compute_gae: other", "ppo_training: learns")])
    out = apply_visibility(result, options).to_json()
    assert out["visibility"] == "after_published" and out["stdout_visibility"] == "hidden"
    assert [t["visibility"] for t in out["tests"]] == ["after_due_date", "after_published",
                                                       "hidden"]
    assert visibility_options(REPO_ROOT)["visibility"] == "visible"     # the default


def test_a_wrong_visibility_stops_the_bundle(tmp_path):
    course = config_with(tmp_path, 'c.PPOKit.gradescope_stdout_visibility = "staff"\n')
    shutil.copytree(REPO_ROOT / "source" / ASSIGNMENT, course / "source" / ASSIGNMENT)
    done = subprocess.run([sys.executable, "-m", "autograder", "gradescope-bundle", ASSIGNMENT,
                           "--out", str(tmp_path / "b.zip"), "--course-dir", str(course)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "gradescope_stdout_visibility" in done.stderr
    assert not (tmp_path / "b.zip").exists()


def test_staff_log_is_short_and_says_what_happened():
    data = {"score": 10.958333, "execution_time": 7.25, "extra_data": {
        "student": "4242", "assignment": "ppo", "sandbox": "bwrap", "device": "cpu",
        "max_score": 16, "grade_cells": {"compute_gae": {"score": 3.75, "max_score": 5}},
        "flags": [{"code": "limit_cpu", "message": "cpu\n" * 500}]}}
    log = staff_log(GradingResult.from_json(data), "ppo.ipynb")
    assert "student 4242" in log and "notebook ppo.ipynb" in log and "sandbox bwrap" in log
    assert "score 10.96 / 16" in log and "compute_gae: 3.75 / 5" in log
    assert "flag limit_cpu" in log and len(log) < 1000


def test_full_run_sets_visibility_and_writes_the_staff_log(bundle, tmp_path):  # noqa: F811
    root = tmp_path / "autograder"
    env = install(bundle, root)
    config = root / "source" / "nbgrader_config.py"
    config.write_text(config.read_text() + '\nc.PPOKit.gradescope_test_visibility = '
                      '{"ppo_training": "after_due_date"}\n')
    blank = (REPO_ROOT / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_bytes()
    (root / "submission" / f"{ASSIGNMENT}.ipynb").write_bytes(blank)
    data = run_autograder(root, env)
    assert data["visibility"] == "visible" and data["stdout_visibility"] == "hidden"
    seen = {t["tags"][0]: t["visibility"] for t in data["tests"]}
    assert seen.pop("ppo_training") == "after_due_date" and set(seen.values()) == {"visible"}
    log = (root / "results" / "stdout").read_text()
    assert f"notebook {ASSIGNMENT}.ipynb" in log and f"assignment {ASSIGNMENT}" in log
    assert f"score 0 / {data['extra_data']['max_score']:g}" in log
    assert json.loads((root / "results" / "results.json").read_text()) == data
