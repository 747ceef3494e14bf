"""Feedback pages and the cohort report, rendered by headless Chromium."""
from __future__ import annotations

import hashlib
import html as html_lib
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from autograder import REPO_ROOT
from autograder.course.feedback import render_feedback, write_feedback
from autograder.course.report import Cohort, write_report
from autograder.results import GradingResult, ResultDetails, grade_cell_totals
from autograder.results import TestResult as Check

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
POINTS = {"reinforce_loss": 3.0, "reinforce_training": 1.0, "compute_gae": 5.0,
          "ppo_combined_loss": 5.0, "ppo_training": 2.0}
SECRET = "assert_hidden_reference_value_0xC0FFEE"


def result(student: str, failing: dict[str, str], flags=None, output="", sha="") -> dict:
    """Two checks per grade cell; ``failing[cell]`` is the message of its failed first check."""
    tests = []
    for cell, p in POINTS.items():
        msg = failing.get(cell)
        tests.append(Check(f"{cell}: matches the worked example", 0.0 if msg else p / 2, p / 2,
                           "failed" if msg else "passed", msg or "", [cell]))
        stub = bool(msg) and "NotImplementedError" in msg      # a stub fails every check
        tests.append(Check(f"{cell}: keeps gradients", 0.0 if stub else p / 2, p / 2,
                           "failed" if stub else "passed", msg if stub else "", [cell]))
    extra = {"max_score": sum(POINTS.values()), "student": student, "assignment": "ppo",
             "sandbox": "bwrap", "device": "cpu", "flags": flags or [],
             "grade_cells": grade_cell_totals(tests),
             "submission_sha256": sha or hashlib.sha256(student.encode()).hexdigest()}
    return GradingResult(sum(t.score for t in tests), 2.0, output, tests,
                         ResultDetails.from_json(extra))


GAE_MSG = ("compute_gae at position {i}: got {g}, expected 2.538. Hint: your recursion runs "
           "forward in time; GAE accumulates from the last step backwards.")
COHORT = {
    "ana": result("ana", {}),
    "bo": result("bo", {"compute_gae": GAE_MSG.format(i=1, g=1.25)}, sha="b" * 64),
    "cy": result("cy", {"compute_gae": GAE_MSG.format(i=3, g=-0.5),
                        "reinforce_loss": "The sign is flipped. <script>alert(1)</script>"},
                 flags=[{"code": "locked_cell_modified",
                         "message": "the check cell compute_gae was changed; it was restored"}]),
    "di": result("di", {"compute_gae": "compute_gae returned a list, not a tensor",
                        "ppo_combined_loss": "value_loss is half the MSE"}, sha="b" * 64),
    "fay": result("fay", {"compute_gae": "compute_gae raised NotImplementedError:\n  File ..."}),
    "eli": result("eli", {"ppo_training": "PPO did not learn"},
                  flags=[{"code": "grader_error", "message": f"Traceback: {SECRET}"}]),
}


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120)


def screenshot(tmp: Path, page: Path, png: Path) -> np.ndarray:
    done = chromium(tmp, f"--screenshot={png}", "--window-size=1200,1600", page.as_uri())
    assert png.exists(), done.stderr[-2000:]
    import matplotlib.image

    return matplotlib.image.imread(str(png))


def dump_dom(tmp: Path, page: Path) -> str:
    done = chromium(tmp, "--dump-dom", page.as_uri())
    assert "<body" in done.stdout, done.stderr[-2000:]
    return done.stdout


def assert_nontrivial(pixels: np.ndarray) -> None:
    """A real page: not blank, several colours, a fair share of ink."""
    rgb = (pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    colours = np.unique(rgb, axis=0)
    ink = (rgb.astype(int).sum(axis=1) < 600).mean()
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    assert len(colours) > 50, len(colours)
    assert 0.005 < ink < 0.8, ink


def text_of(dom: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", dom).split())


def test_feedback_page(tmp_path):
    page = tmp_path / "feedback" / "cy" / "ppo" / "feedback.html"
    write_feedback(COHORT["cy"], page)
    html = page.read_text()
    # self-contained: no scripts, no external resources, no network
    assert "<script" not in html.replace("&lt;script", "")
    assert not re.search(r"https?://|<link\b|\bsrc=|@import|url\(", html)
    assert "<style>" in html

    pixels = screenshot(tmp_path, page, tmp_path / "feedback.png")
    assert_nontrivial(pixels)
    dom = dump_dom(tmp_path, page)
    assert "<script" not in dom.replace("&lt;script", "")   # the student's text stays text
    text = text_of(dom)
    assert "Feedback: ppo" in text and "Student: cy" in text
    total = sum(t.score for t in COHORT["cy"].tests)
    assert re.search(rf'id="total">{total:g} / 16<', dom)
    for cell, v in COHORT["cy"].details.grade_cells.items():
        heading = re.search(rf'<h2 id="q-{cell}">(.*?)</h2>', dom, re.S)
        assert heading, cell
        assert f"{v['score']:g} / {v['max_score']:g}" in text_of(heading.group(1))
    assert "GAE accumulates from the last step backwards" in text    # the hint
    assert "A read-only cell was changed" in text                      # the integrity flag
    assert "The sign is flipped. <script>alert(1)</script>" in html_lib.unescape(text)


def test_feedback_never_shows_grader_internals():
    html = render_feedback(COHORT["eli"])
    assert SECRET not in html and "Traceback" not in html
    assert "error in the grader" in html
    # the hidden suites' source never reaches a page
    suites = REPO_ROOT / "autograder" / "suites"
    for path in suites.rglob("test_*.py"):
        for line in path.read_text().splitlines():
            line = line.strip()
            if len(line) > 40 and not line.startswith(("#", '"', "'")):
                assert line not in html


def test_report(tmp_path):
    autograded = tmp_path / "autograded"
    for student, data in COHORT.items():
        (autograded / student / "ppo").mkdir(parents=True)
        data.write(autograded / student / "ppo" / "results.json")
    out = tmp_path / "reports" / "ppo"
    index = write_report(autograded, out, "ppo", feedback_link=lambda s: f"../../feedback/{s}")

    cohort = Cohort.load(autograded, "ppo")
    assert cohort.counted == ["ana", "bo", "cy", "di", "fay"]   # the grader error is left out
    weakest = cohort.weakest()                  # fay left compute_gae as the stub: not counted
    assert weakest["cell"] == "compute_gae" and weakest["full"] == 1 and weakest["n"] == 4
    assert weakest["skipped"] == 1 and weakest["mean"] == pytest.approx(0.625)
    top = cohort.mistakes()[0]
    assert top["cell"] == "compute_gae"
    assert top["tests"] == ["compute_gae: matches the worked example"]
    assert top["students"] == ["bo", "cy"]                # the same hint, whatever the numbers
    assert top["hint"].startswith("your recursion runs forward in time")
    assert not [m for m in cohort.mistakes() if "fay" in m["students"]]
    assert cohort.identical() == [["bo", "di"]]

    # one self-contained file: the histogram is inlined as a PNG data URI, nothing beside it
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]
    import base64
    import io

    import matplotlib.image

    uri = re.search(r'<img id="histogram" src="data:image/png;base64,([^"]+)"', index.read_text())
    img = matplotlib.image.imread(io.BytesIO(base64.b64decode(uri.group(1))), format="png")
    assert img.shape[0] > 200 and np.unique(img.reshape(-1, img.shape[-1]), axis=0).shape[0] > 10

    pixels = screenshot(tmp_path, index, tmp_path / "report.png")
    assert_nontrivial(pixels)
    text = text_of(dump_dom(tmp_path, index))
    assert text.startswith("Cohort report: ppo") or "Cohort report: ppo" in text
    headline = re.search(r'id="headline">(.*?)</p>', index.read_text(), re.S).group(1)
    assert "struggled most with compute_gae" in headline
    assert "the 4 submissions that attempted it" in headline
    assert "1 of 4 got it fully right" in headline
    assert "(2×): your recursion runs forward in time" in headline
    for heading in ("Scores", "Questions, weakest first", "Tests", "Most common mistakes",
                    "Flagged submissions", "Identical submissions"):
        assert heading in text
    assert "locked_cell_modified" in text and "grader_error" in text
    assert os.path.getsize(out / "index.html") > 2000
