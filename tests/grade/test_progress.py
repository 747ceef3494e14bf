"""A single ``grade`` shows progress on stderr only: a spinner on a terminal, else two short
lines; stdout (the table) and the results JSON stay clean."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import time

from autograder import REPO_ROOT
from autograder.report_table import Progress


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_two_short_lines():
    stream = io.StringIO()
    with Progress("grading x.ipynb", stream=stream):
        pass
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[0] == "grading x.ipynb ..."
    assert lines[1].startswith("grading x.ipynb: done in ") and "\r" not in stream.getvalue()


def test_a_terminal_gets_a_spinner_that_is_erased():
    stream = FakeTty()
    with Progress("grading x.ipynb", stream=stream, interval=0.01):
        time.sleep(0.2)
    text = stream.getvalue()
    frames = [f for f in text.split("\r") if f.strip() and not f.startswith("\x1b")]
    assert len(frames) >= 3 and all("grading x.ipynb" in f for f in frames)
    assert len({f[0] for f in frames}) >= 2                     # it turns
    assert text.endswith("\r\x1b[2K") and "\n" not in text      # and leaves no line behind


def test_grade_keeps_stdout_and_the_json_clean(tmp_path):
    out = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "autograder", "grade",
                           str(REPO_ROOT / "release" / "ppo" / "ppo.ipynb"), "--assignment", "ppo",
                           "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "grading ppo.ipynb (ppo, student anonymous) ..." in done.stderr
    assert "done in" in done.stderr
    assert "grading ppo.ipynb" not in done.stdout and "0 / 16" in done.stdout
    assert json.loads(out.read_text())["score"] == 0
