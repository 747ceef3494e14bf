"""nbgrader's loop closed: the autograded notebook, late penalties, and the whole round trip
release -> fetch -> submit -> collect -> grade-course -> review -> generate/release feedback ->
fetch_feedback, through a local exchange directory."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest

from autograder import REPO_ROOT
from autograder.assignments import load_assignment
from autograder.course.autograded_notebook import build_autograded, sanitise
from autograder.course.demo import (applicable_mutants, copy_course, mutated, nbgrader,
                                    nbgrader_env, solutions, student_version, submission,
                                    write_cohort)
from autograder.course.gradebook import open_gradebook, sync_gradebook
from autograder.course.paths import grade_cell_points
from autograder.load.integrity import grade_id_of
from autograder.results import GradingResult, ResultDetails, grade_cell_totals
from autograder.results import TestResult as Check

ASSIGNMENT = "ppo"
PLANTED = ('My notes <script>document.title = "pwned-by-student"</script> '
           '<img src="x" onerror="document.title = \'pwned-by-img\'"> '
           '<a href="javascript:alert(1)">link</a> <iframe src="https://example.org"></iframe> '
           '**bold** and $r < 1$')


def fake_result(student: str, points: dict[str, float], fractions: dict[str, float] | None = None
                ) -> dict:
    """Two checks per grade cell; ``fractions[cell]`` of the second one's points."""
    tests = []
    for cell, p in points.items():
        f = (fractions or {}).get(cell, 1.0)
        tests.append(Check(f"{cell}: worked example", p / 2, p / 2, "passed", "", [cell]))
        tests.append(Check(f"{cell}: hidden inputs", round(f * p / 2, 6), p / 2,
                           "passed" if f == 1 else "failed",
                           "" if f == 1 else f"{cell}: <b>wrong</b> on hidden input 3", [cell]))
    extra = {"max_score": sum(points.values()), "student": student, "assignment": ASSIGNMENT,
             "sandbox": "bwrap", "device": "cpu", "flags": [],
             "grade_cells": grade_cell_totals(tests), "submission_sha256": ""}
    return GradingResult(sum(t.score for t in tests), 1.0, "", tests,
                         ResultDetails.from_json(extra))


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    paths = copy_course(tmp_path_factory.mktemp("course") / "course")
    return paths, load_assignment(ASSIGNMENT, paths.root), student_version(paths, ASSIGNMENT)


def hostile_submission(paths, tmp_path: Path) -> Path:
    """A correct submission that also plants script in Markdown, raw and outputs, edits a locked
    cell, deletes a grade cell, adds a fake grade cell and copies a solution's metadata."""
    nb = nbformat.reads(submission(paths, solutions(paths)).decode(), as_version=4)
    for cell in nb.cells:
        gid = grade_id_of(cell)
        if gid == "helpers":
            cell.source += "\nprint('edited')"
        if cell.cell_type == "code" and gid == "compute_gae_answer":
            cell.outputs = [nbformat.v4.new_output(
                "display_data", data={"text/html": "<script>alert('output')</script>"})]
    nb.cells = [c for c in nb.cells if grade_id_of(c) != "ppo_training"]
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(PLANTED))
    nb.cells.insert(2, nbformat.v4.new_raw_cell("<script>alert('raw')</script>",
                                                metadata={"raw_mimetype": "text/html"}))
    fake = nbformat.v4.new_code_cell("x = 1")
    fake.metadata["nbgrader"] = {"grade": True, "grade_id": "bonus", "points": 100,
                                 "solution": False, "locked": False, "schema_version": 3}
    nb.cells.append(fake)
    copy_of_answer = nbformat.v4.new_code_cell("y = 2")
    copy_of_answer.metadata["nbgrader"] = {"grade": False, "grade_id": "compute_gae_answer",
                                           "solution": True, "locked": False, "schema_version": 3}
    nb.cells.insert(3, copy_of_answer)
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    path = tmp_path / "ppo.ipynb"
    nbformat.write(nb, path)
    return path


def test_sanitise_escapes_every_scripting_form():
    out = sanitise(PLANTED)
    for bad in ("<script", "onerror", "javascript:", "<iframe"):
        assert bad not in out, (bad, out)
    assert "**bold**" in out and "&lt;script&gt;" in out and "<img" in out   # kept as text / safe
    assert sanitise("<svg onload=alert(1)><style>*{}</style>") .count("<") == 0


def test_the_autograded_notebook_is_the_graded_submission_made_inert(course, tmp_path):
    paths, asg, released = course
    path = hostile_submission(paths, tmp_path)
    points = grade_cell_points(paths.source_notebook(ASSIGNMENT))
    result = fake_result("ana", points, {"compute_gae": 0.5})
    nb = build_autograded(released, asg, result, path)
    nbformat.validate(nb)
    text = nbformat.writes(nb)
    # nothing that scripts a browser: no student output, Markdown/raw escaped, no widget state
    for bad in ("<script", "onerror", "javascript:", "text/html", "widget-state", "raw_mimetype"):
        assert bad not in text, bad
    assert "&lt;script&gt;" in text

    by_gid: dict[str, list] = {}
    for cell in nb.cells:
        if grade_id_of(cell):
            by_gid.setdefault(grade_id_of(cell), []).append(cell)
    release = {grade_id_of(c): c for c in released.cells if grade_id_of(c)}
    assert set(by_gid) == set(release)                       # every grade_id, once; no "bonus"
    assert all(len(v) == 1 for v in by_gid.values())
    for gid, (cell,) in by_gid.items():
        assert cell.metadata["nbgrader"] == release[gid].metadata["nbgrader"], gid
        if release[gid].metadata["nbgrader"].get("solution"):
            assert cell.source == solutions(paths)[gid].strip("\n") or \
                cell.source.strip() == solutions(paths)[gid].strip(), gid      # the student's
        else:
            assert cell.source == release[gid].source, gid      # restored, and put back
    order = [grade_id_of(c) for c in nb.cells if grade_id_of(c)]
    assert order == [grade_id_of(c) for c in released.cells if grade_id_of(c)]

    # each grade cell's output: its hidden tests and their outcome, as plain text
    for cell, p in points.items():
        (graded,) = by_gid[cell]
        (output,) = graded.outputs
        assert output.output_type == "stream"
        assert f"Hidden tests for {cell}:" in output.text
        assert "PASSED worked example" in output.text
    gae = by_gid["compute_gae"][0].outputs[0].text
    assert f"{points['compute_gae'] * 0.75:g} / {points['compute_gae']:g} points" in gae
    assert "FAILED hidden inputs" in gae and "<b>wrong</b> on hidden input 3" in gae


def test_an_unreadable_or_changed_submission_gives_the_release_with_outcomes(course, tmp_path):
    paths, asg, released = course
    points = grade_cell_points(paths.source_notebook(ASSIGNMENT))
    broken = tmp_path / "broken.ipynb"
    broken.write_bytes(b'{"cells": [ not json')
    good = hostile_submission(paths, tmp_path)
    for path, sha in ((broken, ""), (None, ""), (good, "0" * 64)):
        nb = build_autograded(released, asg, fake_result("bo", points, {}), path, sha)
        nbformat.validate(nb)
        assert [c.source for c in nb.cells] == [c.source for c in released.cells]
        outputs = [c.outputs[0].text for c in nb.cells if c.get("outputs")]
        assert len(outputs) == len(points) and all("Hidden tests for" in o for o in outputs)


def late_cohort(paths, points):
    """ana on time, bo late, cy with no timestamp; all graded 100%."""
    due = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    stamps = {"ana": due - timedelta(hours=1), "bo": due + timedelta(hours=5)}
    for student in ("ana", "bo", "cy"):
        fake_result(student, points).write(paths.results(student, ASSIGNMENT))
        folder = paths.submitted / student / ASSIGNMENT
        folder.mkdir(parents=True, exist_ok=True)
        if student in stamps:
            (folder / "timestamp.txt").write_text(
                stamps[student].strftime("%Y-%m-%d %H:%M:%S.%f UTC"))
    return due


def export_rows(paths) -> dict[str, dict]:
    done = nbgrader("export", f"--to={paths.root / 'grades.csv'}", cwd=paths.root)
    assert done.returncode == 0, done.stderr
    with open(paths.root / "grades.csv") as f:
        return {row["student_id"]: row for row in csv.DictReader(f)}


@pytest.mark.slow   # end to end: make test-all
@pytest.mark.parametrize("method", ["zero", "none"])
def test_nbgrader_export_applies_the_late_penalty_to_kit_graded_submissions(tmp_path, method):
    paths = copy_course(tmp_path / "course")
    with open(paths.root / "nbgrader_config.py", "a") as f:
        f.write(f'\nc.LateSubmissionPlugin.penalty_method = "{method}"\n')
    points = grade_cell_points(paths.source_notebook(ASSIGNMENT))
    due = late_cohort(paths, points)
    done = nbgrader("db", "assignment", "add", ASSIGNMENT,
                    f"--duedate={due.strftime('%Y-%m-%d %H:%M:%S')} UTC", cwd=paths.root)
    assert done.returncode == 0, done.stderr
    db_url = f"sqlite:///{paths.root}/gradebook.db"
    sync_gradebook(db_url, paths, ASSIGNMENT, ["ana", "bo", "cy"])
    rows = export_rows(paths)
    full = sum(points.values())
    assert float(rows["bo"]["raw_score"]) == pytest.approx(full)
    assert rows["bo"]["timestamp"].startswith("2026-03-01 17:00:00")
    assert float(rows["bo"]["late_submission_penalty"]) == pytest.approx(
        full if method == "zero" else 0.0)
    assert float(rows["bo"]["score"]) == pytest.approx(0.0 if method == "zero" else full)
    for on_time in ("ana", "cy"):
        assert float(rows[on_time]["late_submission_penalty"]) == 0.0
        assert float(rows[on_time]["score"]) == pytest.approx(full)

    # a regrade is idempotent; moving the due date past the submission lifts the penalty
    assert sync_gradebook(db_url, paths, ASSIGNMENT, ["ana", "bo", "cy"]).written == 0
    later = due + timedelta(days=1)
    nbgrader("db", "assignment", "add", ASSIGNMENT,
             f"--duedate={later.strftime('%Y-%m-%d %H:%M:%S')} UTC", cwd=paths.root)
    sync_gradebook(db_url, paths, ASSIGNMENT, ["ana", "bo", "cy"])
    assert float(export_rows(paths)["bo"]["score"]) == pytest.approx(full)


# --- the whole loop ------------------------------------------------------------------------------
def loop_env(student_home: Path) -> dict[str, str]:
    env = nbgrader_env()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in env.get(
        "PYTHONPATH", "").split(os.pathsep) if p])
    env["HOME"] = str(student_home)
    return env


def run_nbgrader(args: list[str], cwd: Path, exchange: Path, env) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("nbgrader")
    done = subprocess.run([str(exe), *args, f"--Exchange.root={exchange / 'root'}",
                           f"--Exchange.cache={exchange / 'cache'}"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
    return done


@pytest.mark.slow
def test_release_submit_collect_grade_review_feedback_fetch(tmp_path):
    from nbgrader.utils import get_username

    paths = copy_course(tmp_path / "course")
    with open(paths.root / "nbgrader_config.py", "a") as f:
        f.write('\nc.LateSubmissionPlugin.penalty_method = "zero"\n')
    exchange, home = tmp_path / "exchange", tmp_path / "student"
    for d in (exchange / "root", exchange / "cache", home):
        d.mkdir(parents=True)
    env = loop_env(home)
    course = ["--course=" + paths.course_id]
    student = get_username()

    def instructor(*args):
        return run_nbgrader(list(args), paths.root, exchange, env)

    def learner(*args):
        return run_nbgrader(list(args) + course, home, exchange, env)

    instructor("db", "assignment", "add", ASSIGNMENT, "--duedate=2099-01-01 00:00:00 UTC")
    instructor("generate_assignment", ASSIGNMENT, "--force")
    instructor("release_assignment", ASSIGNMENT)
    learner("fetch_assignment", ASSIGNMENT)

    # the student fills in the notebook: compute_gae with a known mistake, a planted script
    mine = home / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    mutant = next(m for m in applicable_mutants(paths) if m.name == "gae_forward")
    answers = mutated(paths, mutant)
    nb = nbformat.read(mine, as_version=4)
    for cell in nb.cells:
        if grade_id_of(cell) in answers:
            cell.source = answers[grade_id_of(cell)]
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(PLANTED))
    nbformat.write(nb, mine)
    learner("submit", ASSIGNMENT)
    instructor("collect", ASSIGNMENT)
    submitted = paths.submitted / student / ASSIGNMENT
    assert {"timestamp.txt", "submission_secret.txt"} <= {p.name for p in submitted.iterdir()}
    # a submission that came another way (an LMS download): no timestamp, no secret
    write_cohort(paths, {"lms_student": {f"{ASSIGNMENT}.ipynb": submission(paths, {})}})

    done = subprocess.run([sys.executable, "-m", "autograder", "grade-course", ASSIGNMENT,
                           "--course-dir", str(paths.root)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(paths.results(student, ASSIGNMENT).read_text())
    cells = result["extra_data"]["grade_cells"]
    assert cells["compute_gae"]["score"] < cells["compute_gae"]["max_score"]
    autograded = nbformat.read(paths.autograded_notebook(student, ASSIGNMENT), as_version=4)
    gae_cell = next(c for c in autograded.cells if grade_id_of(c) == "compute_gae")
    assert "FAILED" in gae_cell.outputs[0].text and "<script" not in nbformat.writes(autograded)
    page = paths.feedback_html(student, ASSIGNMENT)
    assert page.name == f"{ASSIGNMENT}.html" and not page.with_name("feedback.html").exists()

    # a TA reviews in formgrader: a manual score and a comment, as formgrader stores them
    with open_gradebook(f"sqlite:///{paths.root}/gradebook.db", paths.course_id) as gb:
        grade = gb.find_grade("compute_gae", ASSIGNMENT, ASSIGNMENT, student)
        grade.manual_score = 4.0
        comment = gb.find_comment("compute_gae_answer", ASSIGNMENT, ASSIGNMENT, student)
        comment.manual_comment = "Run the recursion from the last step backwards."
        gb.db.commit()
    rows = export_rows(paths)
    expected = sum(v["score"] for k, v in cells.items() if k != "compute_gae") + 4.0
    assert float(rows[student]["score"]) == pytest.approx(expected)
    assert float(rows[student]["late_submission_penalty"]) == 0.0

    instructor("generate_feedback", ASSIGNMENT, "--force")
    released = instructor("release_feedback", ASSIGNMENT)        # the LMS one does not stop it
    assert "lms_student" in released.stdout + released.stderr
    learner("fetch_feedback", ASSIGNMENT)
    fetched = list((home / ASSIGNMENT / "feedback").glob(f"*/{ASSIGNMENT}.html"))
    assert len(fetched) == 1
    html = fetched[0].read_text()
    assert html == page.read_text()                # the kit's page, as released
    assert "Run the recursion from the last step backwards." in html
    assert "reviewed by course staff" in html and f"{expected:g}" in html
    assert "<script" not in html.replace("&lt;script", "")
    for t in result["tests"]:                      # every hidden-test outcome is on the page
        title = t["name"].split(": ", 1)[-1]
        assert title.replace("'", "&#39;").replace('"', "&#34;") in html or title in html, title


def test_generate_feedback_page_adds_the_gradebooks_last_word(course):
    """What ``KitFeedbackExporter`` adds to a result: a manual score, a comment on the answer
    cell above a question, the late penalty; the total becomes the gradebook's."""
    from autograder.course.feedback import render_feedback
    from autograder.course.nbgrader_feedback import reviewed

    paths, asg, released = course
    points = grade_cell_points(paths.source_notebook(ASSIGNMENT))
    data = fake_result("ana", points, {"compute_gae": 0.0})
    nb = build_autograded(released, asg, data, None)
    for cell in nb.cells:                       # as nbgrader's GetGrades leaves them
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade"):
            meta["score"] = data.details.grade_cells[meta["grade_id"]]["score"]
        if meta.get("grade_id") == "compute_gae":
            meta["score"] = 4.5
        if meta.get("grade_id") == "compute_gae_answer":
            meta["comment"] = "Run the recursion <b>backwards</b>."
    total = data.score - data.details.grade_cells["compute_gae"]["score"] + 4.5
    out = reviewed(data, nb, {"score": total - 1.5, "late_penalty": 1.5})
    assert out.score == pytest.approx(total - 1.5)
    added = {t.name: t for t in out.tests[len(data.tests):]}
    assert added["compute_gae: reviewed by course staff"].score == pytest.approx(
        4.5 - data.details.grade_cells["compute_gae"]["score"])
    assert added["compute_gae: comment from course staff"].output == \
        "Run the recursion <b>backwards</b>."
    assert added["late submission: penalty"].score == -1.5
    n_tests = len(data.tests)
    assert len(added) == 3 and len(reviewed(data, nb, {}).tests) == n_tests + 2
    assert len(data.tests) == n_tests                          # the input is left alone
    html = render_feedback(out)
    assert "Run the recursion &lt;b&gt;backwards&lt;/b&gt;." in html
    assert "reviewed by course staff" in html and "late submission" in html
