"""One rule for the course directory in every command: ``--course-dir DIR``, else the current
directory, which must hold ``nbgrader_config.py``."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from autograder import REPO_ROOT
from autograder.course.demo import copy_course

COMMANDS = {
    "grade": ["grade", "{course}/release/ppo/ppo.ipynb", "--assignment", "ppo"],
    "grade-course": ["grade-course", "ppo"],
    "gradescope-bundle": ["gradescope-bundle", "ppo", "--out", "{tmp}/b.zip"],
}


def cli(args: list[str], cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "autograder", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_outside_a_course_every_command_says_so(tmp_path, command):
    course = copy_course(tmp_path / "course").root
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = [a.format(course=course, tmp=tmp_path) for a in COMMANDS[command]]
    done = cli(args, cwd=elsewhere)
    assert done.returncode == 2, done.stderr
    assert f"no nbgrader_config.py in {elsewhere}" in done.stderr
    assert "--course-dir" in done.stderr


def test_the_current_directory_and_course_dir_name_the_same_course(tmp_path):
    course = copy_course(tmp_path / "course").root
    config = course / "nbgrader_config.py"
    config.write_text(config.read_text().replace("c.PPOKit.cohort_seed = ",
                                                 "c.PPOKit.cohort_seed = 7 + "))
    here = cli(["gradescope-bundle", "ppo", "--out", str(tmp_path / "here.zip")], cwd=course)
    named = cli(["gradescope-bundle", "ppo", "--out", str(tmp_path / "named.zip"),
                 "--course-dir", str(course)], cwd=tmp_path)
    assert here.returncode == 0 and named.returncode == 0, here.stderr + named.stderr
    for name in ("here.zip", "named.zip"):
        shipped = zipfile.ZipFile(tmp_path / name).read("nbgrader_config.py").decode()
        assert "cohort_seed = 7 + " in shipped                # this course's, not the kit's
