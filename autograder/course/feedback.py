"""Per-student feedback: ``feedback/<student>/<assignment>/<notebook>.html`` from a result.

The page is self-contained (inline CSS, inline SVG, no JavaScript, no network). It shows each
question's score, every check's message and hint (failed checks with the same message shown once,
a question left as the release's stub once as "not attempted"), a plot of the student's own
training run beside its pass mark (from ``tests[i].extra_data["training"]``), and the integrity
notes. It shows only what the result already shows a student (test names and outputs), never
hidden test source; a grader error's internal details are replaced by a plain sentence.
"""
from __future__ import annotations

import re
from pathlib import Path

from autograder.course.kinds import attempted, cell_of
from autograder.course.training_plot import training_svg
from autograder.outcomes import OUTCOMES, Flag
from autograder.points import fmt_percent, fmt_points
from autograder.results import GradingResult, write_atomic

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.globals["fmt"] = fmt_points
    env.globals["pct"] = fmt_percent
    return env


def student_flags(flags: list[Flag]) -> list[dict]:
    """The flags as a student reads them (no kit internals)."""
    return [{"code": f.code, "title": OUTCOMES.title(f.code),
             "message": OUTCOMES.student_text(f.code, f.message)} for f in flags]


STUB_RAISED = re.compile(r"`?(\w+)`? raised NotImplementedError")


def not_attempted_text(tests: list[dict]) -> str:
    """The one message of a question left as the stub, naming the function when a message
    does (a training question names the function its loop needed)."""
    named = next((m.group(1) for t in tests if (m := STUB_RAISED.search(t["output"]))), "")
    subject = f"{named} is" if named else "the function is"
    return (f"Not attempted: {subject} still the release's stub (it raises "
            "NotImplementedError). Write it, then run the question's check cell.")


def questions(result: GradingResult) -> list[dict]:
    """The tests grouped by grade cell, in order of first appearance, each question's checks as
    ``rows``: a passed check on its own; failed checks with the same message as one row (the
    message once, the checks' titles listed, their points summed); a question whose every check
    failed on the stub (``kinds.attempted``) as one "not attempted" row."""
    by_cell: dict[str, dict] = {}
    for t in result.tests:
        cell = cell_of(t) or "other"
        q = by_cell.setdefault(cell, {"cell": cell, "score": 0.0, "max_score": 0.0, "tests": [],
                                      "training": []})
        q["score"] += t.score
        q["max_score"] += t.max_score
        title = t.name
        if title.startswith(cell + ": "):
            title = title[len(cell) + 2:]
        q["tests"].append({"title": title, "status": t.status, "score": t.score,
                           "max_score": t.max_score,
                           "output": "" if t.visibility == "hidden" else t.output})
        training = t.extra_data.get("training")
        if isinstance(training, dict):
            q["training"].append(training)
    for cell, q in by_cell.items():
        q["full"] = q["score"] >= q["max_score"] - 1e-9
        q["attempted"] = attempted([t for t in result.tests if (cell_of(t) or "other") == cell])
        q["rows"] = collapse(q["tests"]) if q["attempted"] else [
            {"status": "failed", "titles": [f"{len(q['tests'])} check"
                                            f"{'s' if len(q['tests']) > 1 else ''}"],
             "output": not_attempted_text(q["tests"]), "score": q["score"],
             "max_score": q["max_score"], "not_attempted": True}]
    return list(by_cell.values())


def collapse(tests: list[dict]) -> list[dict]:
    """One row per passed check; one row per distinct failure message, at its first check."""
    rows: list[dict] = []
    by_message: dict[str, dict] = {}
    for t in tests:
        if t["status"] == "failed" and t["output"] in by_message:
            row = by_message[t["output"]]
            row["titles"].append(t["title"])
            row["score"] += t["score"]
            row["max_score"] += t["max_score"]
            continue
        row = {"status": t["status"], "titles": [t["title"]], "output": t["output"],
               "score": t["score"], "max_score": t["max_score"], "not_attempted": False}
        if t["status"] == "failed" and t["output"]:
            by_message[t["output"]] = row
        rows.append(row)
    return rows


def render_feedback(result: GradingResult) -> str:
    """The feedback page for one result."""
    details = result.details
    max_score, score = result.max_score, result.score
    flags = student_flags(details.flags)
    output = "" if "grader_error" in details.flag_codes() else result.output
    return environment().get_template("feedback.html.j2").render(
        assignment=details.assignment, student=details.student,
        score=score, max_score=max_score,
        percent=round(100 * score / max_score, 1) if max_score else 0,
        output=output, flags=flags, serious=any(OUTCOMES.serious(f["code"]) for f in flags),
        questions=questions(result), plot=training_svg, sandbox=details.sandbox,
        device=details.device)


def write_feedback(result: GradingResult, path: Path) -> None:
    write_atomic(path, render_feedback(result))
