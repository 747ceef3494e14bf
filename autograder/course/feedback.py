"""Per-student feedback: ``feedback/<student>/<assignment>/<notebook>.html`` from a results JSON.

The page is self-contained (inline CSS, no JavaScript, no network). It shows each question's
score, every check's message and hint, and the integrity notes. It shows only what the results
JSON already shows a student (test names and outputs), never hidden test source; a grader error's
internal details are replaced by a plain sentence.
"""
from __future__ import annotations

from pathlib import Path

from autograder.results import write_atomic

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

FLAG_TITLES = {
    "locked_cell_modified": "A read-only cell was changed",
    "renamed_notebook": "Notebook renamed",
    "extra_notebooks": "More than one notebook",
    "ambiguous_submission": "Could not tell which notebook to grade",
    "no_notebook": "No notebook",
    "unreadable_notebook": "Notebook could not be read",
    "grader_error": "Grading problem",
    "worker_died": "Your code crashed the grading process",
    "limit_cpu": "CPU time limit reached",
    "limit_memory": "Memory limit reached",
    "limit_wall": "Time limit reached",
    "device_fallback": "Device",
}
GRADER_ERROR_TEXT = ("An error in the grader stopped part of the grading. Your course staff have "
                     "been told and will regrade this submission.")
SERIOUS = {"grader_error", "unreadable_notebook", "no_notebook", "ambiguous_submission",
           "locked_cell_modified", "worker_died"}


def environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.globals["fmt"] = fmt
    return env


def fmt(x: float) -> str:
    """Points for people: 2, 1.5, 0.333."""
    return f"{float(x):.3g}" if abs(float(x)) < 1000 else f"{float(x):.0f}"


def student_flags(flags: list[dict]) -> list[dict]:
    """The flags as a student reads them (no kit internals)."""
    shown = []
    for f in flags:
        code = f.get("code", "")
        message = GRADER_ERROR_TEXT if code == "grader_error" else str(f.get("message", ""))
        shown.append({"code": code, "title": FLAG_TITLES.get(code, code.replace("_", " ")),
                      "message": message[:1000]})
    return shown


def questions(data: dict) -> list[dict]:
    """The tests grouped by grade cell, in order of first appearance."""
    by_cell: dict[str, dict] = {}
    for t in data.get("tests", []):
        cell = (t.get("tags") or ["other"])[0]
        q = by_cell.setdefault(cell, {"cell": cell, "score": 0.0, "max_score": 0.0, "tests": []})
        q["score"] += float(t.get("score", 0))
        q["max_score"] += float(t.get("max_score", 0))
        hidden = t.get("visibility") == "hidden"
        title = t.get("name", "")
        if title.startswith(cell + ": "):
            title = title[len(cell) + 2:]
        q["tests"].append({"title": title, "status": t.get("status", "failed"),
                           "score": float(t.get("score", 0)),
                           "max_score": float(t.get("max_score", 0)),
                           "output": "" if hidden else t.get("output", "")})
    for q in by_cell.values():
        q["full"] = q["score"] >= q["max_score"] - 1e-9
    return list(by_cell.values())


def render_feedback(data: dict) -> str:
    """The feedback page for one results JSON."""
    extra = data.get("extra_data", {})
    max_score = float(extra.get("max_score") or sum(float(t.get("max_score", 0))
                                                    for t in data.get("tests", [])))
    score = float(data.get("score", 0))
    flags = student_flags(extra.get("flags", []))
    output = data.get("output", "")
    if any(f["code"] == "grader_error" for f in flags):
        output = ""
    return environment().get_template("feedback.html.j2").render(
        assignment=extra.get("assignment", ""), student=extra.get("student", ""),
        score=score, max_score=max_score,
        percent=round(100 * score / max_score, 1) if max_score else 0,
        output=output, flags=flags, serious=any(f["code"] in SERIOUS for f in flags),
        questions=questions(data), sandbox=extra.get("sandbox", ""), device=extra.get("device", ""))


def write_feedback(data: dict, path: Path) -> None:
    write_atomic(path, render_feedback(data))
