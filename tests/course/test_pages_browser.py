"""The feedback page and the cohort report, loaded in headless Chromium (playwright driving
Debian's /usr/bin/chromium), asserted on the rendered DOM: the question chart in the table's
order, one rounding rule, repeated messages collapsed, the student's own training run drawn."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from autograder.course.feedback import write_feedback
from autograder.course.report import write_report
from autograder.grade.plugin import Outcome
from autograder.grade.record import training_record
from autograder.grade.runner import score_outcomes
from autograder.points import PLACES
from autograder.results import GradingResult, ResultDetails, grade_cell_totals

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
POINTS = {"reinforce_loss": 3.0, "reinforce_training": 1.0, "compute_gae": 5.0,
          "ppo_combined_loss": 5.0, "ppo_training": 2.0}
# test counts and weights as in the ppo suite: odd shares of each cell's points
WEIGHTS = {"reinforce_loss": [1] * 5 + [1.5], "reinforce_training": [1],
           "compute_gae": [1] * 9 + [2] * 3, "ppo_combined_loss": [1] * 9 + [2] * 3,
           "ppo_training": [1]}
STUB = ("compute_gae raised NotImplementedError:\n  File \"<cell compute_gae_answer>\", line 20, "
        "in compute_gae\n    raise NotImplementedError()")
SAME = "ppo_combined_loss: value_loss is half the MSE (known mistake: the 0.5 factor)"


def result(student: str, failing: dict[str, dict[int, str]], training: float) -> dict:
    """A graded result through the kit's own scoring: ``failing[cell][i]`` is check i's message."""
    outcomes = []
    for cell, weights in WEIGHTS.items():
        for i, w in enumerate(weights):
            msg = failing.get(cell, {}).get(i, "")
            o = Outcome(f"{cell}::{i}", cell, cell, f"check {i} of {cell}", w, passed=not msg,
                        message=msg)
            if cell == "ppo_training":
                o.extra["training"] = training_record(
                    [{"name": "share of the gap closed", "value": training, "pass_mark": 0.65}],
                    [{"name": "mean reward during training",
                      "y": [0.1 + 0.8 * training * k / 49 for k in range(50)]}])
            outcomes.append(o)
    tests = score_outcomes(outcomes, POINTS)
    extra = {"max_score": 16.0, "student": student, "assignment": "ppo", "sandbox": "bwrap",
             "device": "cpu", "flags": [], "grade_cells": grade_cell_totals(tests),
             "submission_sha256": student}
    return GradingResult(sum(t.score for t in tests), 1.0, "", tests,
                         ResultDetails.from_json(extra))


def every(cell: str, message: str) -> dict[int, str]:
    return dict.fromkeys(range(len(WEIGHTS[cell])), message)


COHORT = {
    # compute_gae left as the stub; three checks of ppo_combined_loss fail with one message
    "ana": result("ana", {"compute_gae": every("compute_gae", STUB),
                          "ppo_combined_loss": {1: SAME, 4: SAME, 7: SAME, 9: "a different one"},
                          "reinforce_loss": {5: "sign flipped"}, "ppo_training": {0: "PPO no"}},
                  training=0.41),
    "bo": result("bo", {"reinforce_training": {0: "no best arm"}, "reinforce_loss": {0: "x"},
                        "ppo_combined_loss": {2: "y"}}, training=0.93),
    "cy": result("cy", {"reinforce_training": {0: "no best arm"}, "ppo_training": {0: "PPO no"},
                        "compute_gae": {0: "z", 1: "w"}}, training=0.2),
    "di": result("di", {"compute_gae": every("compute_gae", STUB)}, training=0.9),
}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def load(browser, path: Path):
    page = browser.new_page()
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    return page, requests


def score_texts(page) -> list[str]:
    """Every "a / b" score shown on the page."""
    body = page.inner_text("body")
    return [s for pair in re.findall(r"(-?\d[\d.]*) ?/ ?(\d[\d.]*)", body) for s in pair]


def assert_one_rounding_rule(texts: list[str]) -> None:
    assert texts
    for s in texts:
        assert re.fullmatch(rf"-?\d+(\.\d{{1,{PLACES}}})?", s), s
        assert not s.endswith("0") or "." not in s, s          # no trailing zeros


def test_feedback_page_in_chromium(browser, tmp_path):
    data = COHORT["ana"]
    page_file = tmp_path / "feedback.html"
    write_feedback(data, page_file)
    page, requests = load(browser, page_file)
    assert requests == [page_file.as_uri()]                  # self-contained: nothing fetched

    # the total, rounded once by the rule, equals the sum of the points shown per question
    total = page.inner_text("#total")
    shown, top = (float(x) for x in total.split(" / "))
    per_question = [float(page.inner_text(f"#q-{c} span:last-child").split(" / ")[0])
                    for c in POINTS]
    assert shown == pytest.approx(round(data.score, PLACES)) and top == 16
    assert sum(per_question) == pytest.approx(data.score, abs=0.01 * len(POINTS))
    assert_one_rounding_rule(score_texts(page))

    # the stub question: one "not attempted" row, the NotImplementedError message once
    gae = page.locator('section[data-cell="compute_gae"]')
    assert gae.locator("tr.check").count() == 1
    assert gae.locator("tr.check.not-attempted").count() == 1
    assert gae.inner_text().count("NotImplementedError") == 1
    assert "not attempted" in gae.locator("td.status").inner_text()
    # identical failure messages: one row naming its three checks; the other message its own
    loss = page.locator('section[data-cell="ppo_combined_loss"]')
    assert loss.inner_text().count(SAME) == 1
    same_row = loss.locator("tr.check", has_text=SAME)
    assert same_row.count() == 1 and "3 checks:" in same_row.inner_text()
    assert loss.locator("tr.check", has_text="a different one").count() == 1
    failed_rows = loss.locator("tr.check.failed").count()
    passed_rows = loss.locator("tr.check.passed").count()
    assert (failed_rows, passed_rows) == (2, len(WEIGHTS["ppo_combined_loss"]) - 4)

    # the student's own training run, beside the pass mark, in the training question
    svg = page.locator('section[data-cell="ppo_training"] svg.training-plot')
    assert svg.count() == 1 and svg.bounding_box()["height"] > 100
    assert svg.locator(".pass-mark").count() == 1 and svg.locator(".value-bar").count() == 1
    bar, mark = svg.locator(".value-bar").bounding_box(), svg.locator(".pass-mark").bounding_box()
    assert bar["x"] + bar["width"] < mark["x"]         # 0.41 falls short of the 0.65 pass mark
    assert svg.locator(".metric").get_attribute("data-passed") == "false"
    svg_text = svg.text_content()
    assert "0.41" in svg_text and "0.65" in svg_text
    points = svg.locator("polyline.curve").get_attribute("points").split()
    assert len(points) == 50
    assert page.locator("svg.training-plot").count() == 1      # only where a run was recorded
    page.close()


def test_a_passing_run_reaches_past_its_pass_mark(browser, tmp_path):
    page_file = tmp_path / "feedback.html"
    write_feedback(COHORT["bo"], page_file)
    page, _ = load(browser, page_file)
    svg = page.locator("svg.training-plot")
    bar, mark = svg.locator(".value-bar").bounding_box(), svg.locator(".pass-mark").bounding_box()
    assert bar["x"] + bar["width"] > mark["x"] + mark["width"]
    assert svg.locator(".metric").get_attribute("data-passed") == "true"
    page.close()


def test_report_page_in_chromium(browser, tmp_path):
    autograded = tmp_path / "autograded"
    for student, data in COHORT.items():
        (autograded / student / "ppo").mkdir(parents=True)
        data.write(autograded / student / "ppo" / "results.json")
    out = tmp_path / "reports" / "ppo"
    index = write_report(autograded, out, "ppo")
    assert [p.name for p in out.iterdir()] == ["index.html"]     # one file
    page, requests = load(browser, index)
    assert requests == [index.as_uri()]                          # the histogram is inline
    assert page.locator("#histogram").evaluate("img => img.naturalWidth") > 300

    # the chart's rows, top to bottom on screen, are the table's rows, weakest first
    chart_rows = page.locator("#question-chart .row")
    ys = [chart_rows.nth(i).bounding_box()["y"] for i in range(chart_rows.count())]
    chart = [chart_rows.nth(i).get_attribute("data-cell") for i in range(chart_rows.count())]
    assert ys == sorted(ys)
    table = page.locator("#question-table tr[data-cell]")
    table_cells = [table.nth(i).get_attribute("data-cell") for i in range(table.count())]
    assert chart == [c for c in table_cells if c in chart] == table_cells
    # weakest first, computed here from the results (stub submissions left out of compute_gae)
    means = {}
    for cell in POINTS:
        fractions = [d.details.grade_cells[cell]["score"] / POINTS[cell]
                     for s, d in COHORT.items()
                     if not (cell == "compute_gae" and s in ("ana", "di"))]
        means[cell] = sum(fractions) / len(fractions)
    assert chart == sorted(POINTS, key=lambda c: (means[c], c))

    # not attempted is left out of the per-test rates as in the question table: 2 of 4 tried
    gae_rows = page.locator("#test-table tr", has_text="compute_gae: check 0 ")
    assert "1 / 2" in gae_rows.inner_text()
    gae_row = page.locator("#question-table tr[data-cell='compute_gae']").inner_text()
    assert gae_row.split()[-1] == "2" and "1 / 2" in gae_row       # fully right 1 of 2; 2 skipped
    assert_one_rounding_rule(score_texts(page))
    page.close()
