"""formgrader opens a kit-graded submission for manual review: a real Jupyter server with
nbgrader's formgrader on 127.0.0.1, the manual-grading page loaded in headless Chromium.

The page must show the student's code and each hidden-test outcome, and a script planted in the
student's Markdown must not run. A control proves the probe: the same Markdown written into an
autograded notebook unsanitised does run in the same page."""
from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest

from autograder import REPO_ROOT
from autograder.course.demo import (applicable_mutants, copy_course, mutated, nbgrader_env,
                                    submission, write_cohort)
from autograder.course.gradebook import open_gradebook
from autograder.load.integrity import grade_id_of

ASSIGNMENT = "ppo"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
PLANTED = ('Notes <script>document.title = "pwned-script"; window.__pwned = 1;</script>'
           '<img src="nonexistent.png" onerror="document.title = \'pwned-img\'; '
           'window.__pwned = 2;">')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def formgrader(tmp_path_factory):
    """A course graded by grade-course (ana: a known GAE mistake and a planted script; ctl: the
    control), served by Jupyter with formgrader. Yields (paths, base URL, token)."""
    tmp = tmp_path_factory.mktemp("formgrader")
    paths = copy_course(tmp / "course")
    mutant = next(m for m in applicable_mutants(paths) if m.name == "gae_forward")
    nb = nbformat.reads(submission(paths, mutated(paths, mutant)).decode(), as_version=4)
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(PLANTED))
    raw = nbformat.writes(nb).encode()
    write_cohort(paths, {"ana": {f"{ASSIGNMENT}.ipynb": raw}, "ctl": {f"{ASSIGNMENT}.ipynb": raw},
                         "gus": {f"{ASSIGNMENT}.ipynb": b'{"cells": [ not a notebook'}})
    env = nbgrader_env()
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run([sys.executable, "-m", "autograder", "grade-course", ASSIGNMENT,
                           "--course-dir", str(paths.root)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    # the control: ctl's autograded notebook with the planted Markdown put back unsanitised
    control = paths.autograded_notebook("ctl", ASSIGNMENT)
    cnb = nbformat.read(control, as_version=4)
    cnb.cells.insert(0, nbformat.v4.new_markdown_cell(PLANTED))
    nbformat.write(cnb, control)

    port, token = free_port(), secrets.token_hex(16)
    home = tmp / "home"
    home.mkdir()
    env.update(HOME=str(home), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTER_CONFIG_DIR=str(home / "config"))
    log = open(tmp / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False",
         f"--ServerApp.root_dir={paths.root}", "--allow-root"],
        cwd=paths.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((tmp / "server.log").read_text()[-3000:])
                time.sleep(0.5)
        yield paths, base, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def submission_id(paths, student: str) -> str:
    with open_gradebook(f"sqlite:///{paths.root}/gradebook.db", paths.course_id) as gb:
        return gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, student).id


def new_page(browser, token: str):
    """A page whose every request (the formgrader API's too) carries the server's token."""
    return browser.new_context(extra_http_headers={"Authorization": f"token {token}"}).new_page()


def load_page(url: str, token: str) -> dict:
    """The manual-grading page in headless Chromium: its text, code, outputs and probes."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = new_page(browser, token)
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(url, wait_until="domcontentloaded", timeout=120_000)
            page.wait_for_selector(".input_area", timeout=60_000)
            page.wait_for_timeout(1500)         # let onerror handlers and page scripts run
            return {
                "title": page.title(),
                "pwned": page.evaluate("() => window.__pwned === undefined ? null : "
                                       "window.__pwned"),
                "code": page.eval_on_selector_all(".input_area", "els => els.map(e => "
                                                  "e.innerText)"),
                "outputs": page.eval_on_selector_all(".output_area, .output_subarea, pre",
                                                     "els => els.map(e => e.innerText)"),
                "text": page.inner_text("body"),
                "scores": page.eval_on_selector_all("input.score", "els => els.map(e => e.id)"),
                "dialogs": dialogs,
            }
        finally:
            browser.close()


@pytest.mark.slow
def test_formgrader_shows_code_and_outcomes_and_no_student_script_runs(formgrader):
    paths, base, token = formgrader
    url = f"{base}/formgrader/submissions/{submission_id(paths, 'ana')}/?token={token}"
    seen = load_page(url, token)
    result = json.loads(paths.results("ana", ASSIGNMENT).read_text())

    code = "\n".join(seen["code"])
    autograded = nbformat.read(paths.autograded_notebook("ana", ASSIGNMENT), as_version=4)
    answer = next(c for c in autograded.cells if grade_id_of(c) == "compute_gae_answer").source
    assert "def compute_gae(" in code
    for line in (ln.strip() for ln in answer.splitlines() if ln.strip()):
        assert line in code, line                     # the student's code, as graded
    outputs = "\n".join(seen["outputs"])
    for cell, total in result["extra_data"]["grade_cells"].items():
        assert f"Hidden tests for {cell}: {total['score']:g} / {total['max_score']:g} points" \
            in outputs, cell
    for t in result["tests"]:                         # each hidden test's outcome
        mark = "PASSED" if t["status"] == "passed" else "FAILED"
        assert f"{mark} {t['name'].split(': ', 1)[-1]}" in outputs, t["name"]
    assert set(seen["scores"]) >= set(result["extra_data"]["grade_cells"])   # manual points

    assert "Notes" in seen["text"] and "<script>" in seen["text"]   # shown as text, inert
    assert seen["pwned"] is None and "pwned" not in seen["title"], seen["title"]
    assert seen["dialogs"] == []


@pytest.mark.slow
def test_control_an_unsanitised_notebook_would_run_the_script(formgrader):
    paths, base, token = formgrader
    url = f"{base}/formgrader/submissions/{submission_id(paths, 'ctl')}/?token={token}"
    seen = load_page(url, token)
    assert seen["pwned"] in (1, 2) or "pwned" in seen["title"], seen["title"]


@pytest.mark.slow
def test_formgrader_opens_every_submission(formgrader):
    """Each submission in the gradebook, the unreadable one too, has a manual-grading page with
    a score box per grade cell and the hidden tests' outcome under it."""
    paths, base, token = formgrader
    with open_gradebook(f"sqlite:///{paths.root}/gradebook.db", paths.course_id) as gb:
        ids = {s.student.id: s.id for s in gb.notebook_submissions(ASSIGNMENT, ASSIGNMENT)}
        cells = [c.name for c in gb.find_notebook(ASSIGNMENT, ASSIGNMENT).grade_cells]
    assert sorted(ids) == ["ana", "ctl", "gus"]
    for student, sid in ids.items():
        url = f"{base}/formgrader/submissions/{sid}/?token={token}"
        with urllib.request.urlopen(url, timeout=60) as reply:
            assert reply.status == 200, student
            page = reply.read().decode()
        for cell in cells:
            assert f'id="{cell}"' in page and f"Hidden tests for {cell}:" in page, (student, cell)


@pytest.mark.slow
def test_a_review_in_formgrader_reaches_the_export(formgrader):
    """A TA types a score and a comment into the page; formgrader saves them, and
    ``nbgrader export`` counts the manual score instead of the autograder's."""
    import csv

    from playwright.sync_api import sync_playwright

    from autograder.course.demo import nbgrader

    paths, base, token = formgrader
    sid = submission_id(paths, "ana")
    result = json.loads(paths.results("ana", ASSIGNMENT).read_text())
    cells = result["extra_data"]["grade_cells"]
    manual = cells["compute_gae"]["max_score"] - 0.5
    assert manual != cells["compute_gae"]["score"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = new_page(browser, token)
            page.goto(f"{base}/formgrader/submissions/{sid}/?token={token}",
                      wait_until="domcontentloaded", timeout=120_000)
            page.wait_for_selector("input.score#compute_gae", timeout=60_000)
            with page.expect_response(lambda r: "/formgrader/api/grade/" in r.url
                                      and r.request.method == "PUT", timeout=60_000):
                page.fill("input.score#compute_gae", f"{manual:g}")
                page.locator("input.score#compute_gae").dispatch_event("change")
            with page.expect_response(lambda r: "/formgrader/api/comment/" in r.url
                                      and r.request.method == "PUT", timeout=60_000):
                page.fill("textarea#compute_gae_answer-comment", "Run it backwards.")
                page.locator("textarea#compute_gae_answer-comment").dispatch_event("change")
        finally:
            browser.close()

    with open_gradebook(f"sqlite:///{paths.root}/gradebook.db", paths.course_id) as gb:
        assert gb.find_grade("compute_gae", ASSIGNMENT, ASSIGNMENT, "ana").manual_score == manual
        assert gb.find_comment("compute_gae_answer", ASSIGNMENT, ASSIGNMENT,
                               "ana").manual_comment == "Run it backwards."
    done = nbgrader("export", f"--to={paths.root / 'grades.csv'}", cwd=paths.root)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(paths.root / "grades.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["student_id"] == "ana")
    expected = sum(v["score"] for k, v in cells.items() if k != "compute_gae") + manual
    assert float(row["score"]) == pytest.approx(expected)
