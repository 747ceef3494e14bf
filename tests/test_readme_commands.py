"""The README's nbgrader commands work as written in a fresh shell: no venv on PATH, run from a
course directory whose `.venv` is this environment."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import REPO_ROOT
from autograder.course.demo import copy_course

# nbgrader subcommands a block may run here: they need neither submissions nor an exchange
RUNNABLE = {"db", "export"}


def readme_blocks() -> list[str]:
    """Every fenced code block of README.md, dedented."""
    text = (REPO_ROOT / "README.md").read_text()
    blocks = []
    for m in re.finditer(r"^( *)```[^\n]*\n(.*?)^\1```", text, re.S | re.M):
        indent = len(m.group(1))
        blocks.append("\n".join(line[indent:] for line in m.group(2).splitlines()))
    return blocks


def nbgrader_blocks() -> list[str]:
    """The blocks that run nbgrader, and only subcommands in ``RUNNABLE``."""
    found = []
    for block in readme_blocks():
        subcommands = re.findall(r"^\s*(?:\S*/)?nbgrader\s+(\w+)", block, re.M)
        if subcommands and set(subcommands) <= RUNNABLE:
            found.append(block)
    return found


def fresh_shell(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """``bash -c script`` with a minimal environment: the system PATH, no virtualenv."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(cwd), "LANG": "C.UTF-8"}
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def course_with_venv(tmp_path: Path):
    paths = copy_course(tmp_path / "course")
    (paths.root / ".venv").symlink_to(Path(sys.prefix))     # the repo's .venv, as make setup
    return paths


@pytest.mark.slow   # end to end: make test-all
def test_the_readme_nbgrader_commands_run_in_a_fresh_shell(tmp_path):
    blocks = nbgrader_blocks()
    joined = "\n".join(blocks)
    assert "nbgrader db assignment add ppo --duedate=" in joined     # due dates are documented
    assert "nbgrader export" in joined
    paths = course_with_venv(tmp_path)
    for block in blocks:
        script = "set -e\n" + re.sub(r"\[[^\]]*\]", "", block)       # drop [optional] args
        done = fresh_shell(script, paths.root)
        assert done.returncode == 0, (block, done.stdout[-1500:], done.stderr[-3000:])
    assert (paths.root / "gradebook.db").is_file() and (paths.root / "grades.csv").is_file()
    from autograder.course.gradebook import open_gradebook

    with open_gradebook(f"sqlite:///{paths.root}/gradebook.db", paths.course_id) as gb:
        assert gb.find_assignment("ppo").duedate is not None


def test_control_the_venv_binary_alone_fails_where_nbgrader_makes_a_gradebook(tmp_path):
    """Without the activation the README asks for, nbgrader cannot create a gradebook: the
    fresh shell really is fresh, and the test above would catch a README that drops it."""
    paths = course_with_venv(tmp_path)
    done = fresh_shell(".venv/bin/nbgrader db student add ana", paths.root)
    assert done.returncode != 0 and "alembic" in done.stderr, done.stderr[-2000:]
