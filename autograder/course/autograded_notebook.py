"""The autograded notebook, ``autograded/<student>/<assignment>/<notebook>.ipynb``: the submission
as the kit graded it, for nbgrader's formgrader (manual review) and ``generate_feedback``.

Invariants:
- It is rebuilt from the kit's own bounded parse (``autograder/load/notebook.py``: size and cell
  caps, outputs and attachments dropped while parsing), never copied from the student's file.
- Nothing the student wrote can run in a staff member's browser: no student outputs, no
  attachments, no student cell or notebook metadata (widget state, raw mimetypes), and every
  Markdown or raw cell the student controls goes through an HTML allowlist (``sanitise``).
  Code is shown as text. The hidden-test outcomes are plain-text stream outputs.
- nbgrader's metadata is intact and trustworthy: the given cells (locked, grade) are the release's
  own versions, each solution cell is the cell the grader read for it (``match_solutions``) with
  the release's nbgrader metadata, and every grade_id of the release appears exactly once (a
  deleted cell is put back where the release has it). Copies and unknown grade_ids from the
  student lose their nbgrader metadata, so formgrader and ``GetGrades`` never meet a cell the
  gradebook does not know.
- Each grade cell's output is the outcome of the hidden tests counted toward it.
"""
from __future__ import annotations

import copy
from pathlib import Path

from autograder.assignments import Assignment
from autograder.load import integrity
from autograder.load.notebook import (Submission, Unreadable, _Extractions, match_solutions,
                                      parse_notebook, read_bytes, student_cells)
from autograder.results import GradingResult

# What student Markdown may keep: formatting, lists, tables, links and images over http(s).
SAFE_TAGS = frozenset({
    "a", "abbr", "b", "blockquote", "br", "code", "del", "details", "div", "em", "h1", "h2", "h3",
    "h4", "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "s", "span", "strong",
    "sub", "summary", "sup", "table", "tbody", "td", "th", "thead", "tr", "u", "ul"})
SAFE_ATTRIBUTES = {"a": ["href", "title"], "img": ["src", "alt", "title"],
                   "td": ["align"], "th": ["align"]}
SAFE_PROTOCOLS = frozenset({"http", "https", "mailto"})
MAX_OUTCOME_CHARS = 4000      # per test message in a grade cell's output


def sanitise(text: str) -> str:
    """Student Markdown or raw text, made inert for both renderers a staff tool applies:
    HTML: every tag, attribute and URL scheme outside the allowlist escaped (shown as text);
    Markdown: every ``[`` and ``]`` escaped, so no Markdown link, image or reference definition
    exists (``[x](javascript:...)`` is text). A link survives only as an allowlisted
    ``<a href="http(s)://...">``."""
    import bleach

    html_safe = bleach.clean(text, tags=SAFE_TAGS, attributes=SAFE_ATTRIBUTES,
                             protocols=SAFE_PROTOCOLS, strip=False, strip_comments=True)
    return html_safe.replace("[", "\\[").replace("]", "\\]")


def student_cell_list(path: Path | None, sha256: str, assignment: Assignment,
                      base: Path | None = None):
    """The student's cells from the bounded parse, and ``{grade_id: StudentCell}`` of the cells
    the grader read as solutions. Empty when the file is gone, unreadable, or no longer the
    bytes that were graded (``sha256``)."""
    if path is None:
        return [], {}
    sub = Submission(path=Path(path))
    try:
        raw = read_bytes(sub, base)
        if sha256 and sub.sha256 != sha256:
            return [], {}
        cells = student_cells(parse_notebook(raw)[0])
    except Unreadable:
        return [], {}
    solution_ids = [c.id for c in assignment.cells if c.kind == "solution"]
    chosen, _, _ = match_solutions(sub, cells, assignment, solution_ids, _Extractions())
    return cells, chosen


def outcome_text(cell: str, result: GradingResult) -> str:
    """The hidden tests counted toward grade cell ``cell``, one line each, and their total."""
    tests = [t for t in result.tests if t.grade_cell == cell]
    score = sum(t.score for t in tests)
    total = sum(t.max_score for t in tests)
    lines = [f"Hidden tests for {cell}: {score:g} / {total:g} points"]
    for t in tests:
        mark = "PASSED" if t.passed else "FAILED"
        name = t.name
        if name.startswith(cell + ": "):
            name = name[len(cell) + 2:]
        lines.append(f"{mark} {name} ({t.score:g} / {t.max_score:g})")
        message = t.output.strip()
        if message and t.visibility != "hidden":
            if len(message) > MAX_OUTCOME_CHARS:
                message = message[:MAX_OUTCOME_CHARS] + " [...]"
            lines.extend("    " + line for line in message.splitlines())
    if not tests:
        lines.append("(no hidden test was recorded for this cell)")
    return "\n".join(lines) + "\n"


def build_autograded(released, assignment: Assignment, result: GradingResult,
                     submission: Path | None, sha256: str = "", folder: Path | None = None):
    """The autograded notebook (an nbformat NotebookNode) of one graded submission.

    ``released``: the student version of the notebook (``release/``, trusted);
    ``submission``: the student's file that was graded (None when there is none), read from the
    trusted ``folder`` (``submitted/``) without following links."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    kinds = {c.grade_id: c for c in assignment.nbgrader_cells}
    base = {gid: cell for cell in released.cells
            if (gid := integrity.grade_id_of(cell)) and gid in kinds}
    cells, chosen = student_cell_list(submission, sha256, assignment, folder)
    as_solution = {c.number: gid for gid, c in chosen.items()}

    out: list = []
    placed: dict[str, int] = {}

    def given(gid: str):
        cell = copy.deepcopy(base[gid])
        cell.pop("attachments", None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            if kinds[gid].grade:
                cell.outputs = [new_output("stream", name="stdout",
                                           text=outcome_text(gid, result))]
        return cell

    def plain(c) -> object:
        if c.cell_type == "code":
            return new_code_cell(c.source)
        return new_markdown_cell(sanitise(c.source))    # raw and Markdown alike

    for c in cells:
        gid = as_solution.get(c.number)
        if gid is not None and gid in base:
            cell = new_code_cell(c.source) if base[gid].cell_type == "code" \
                else new_markdown_cell(sanitise(c.source))
            cell.metadata["nbgrader"] = copy.deepcopy(dict(base[gid].metadata["nbgrader"]))
        elif c.grade_id in base and c.grade_id not in placed \
                and not kinds[c.grade_id].solution:
            gid, cell = c.grade_id, given(c.grade_id)
        else:
            gid, cell = None, plain(c)
        if gid is not None:
            placed[gid] = len(out)
        out.append(cell)

    if not cells:                        # nothing read: the release as handed out, outcomes in
        for cell in released.cells:
            gid = integrity.grade_id_of(cell)
            if gid not in base:
                cell = copy.deepcopy(cell)
                cell.pop("attachments", None)
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = [], None
                out.append(cell)
            else:
                placed[gid] = len(out)
                out.append(given(gid))
    previous = -1                        # put back what the student deleted, in release order
    for cell in released.cells:
        gid = integrity.grade_id_of(cell)
        if gid not in base:
            continue
        if gid not in placed:
            out.insert(previous + 1, given(gid))
            placed = {k: (v + 1 if v > previous else v) for k, v in placed.items()}
            placed[gid] = previous + 1
        previous = placed[gid]

    for n, cell in enumerate(out, start=1):
        cell["id"] = f"cell-{n}"
    nb = new_notebook(cells=out, metadata=copy.deepcopy(dict(released.metadata)))
    nbformat.validate(nb)
    return nb


def write_autograded(path: Path, released, assignment: Assignment, result: GradingResult,
                     submission: Path | None, sha256: str = "",
                     base: Path | None = None) -> None:
    """Build and write the autograded notebook atomically (mode from the umask)."""
    import nbformat

    from autograder.results import write_atomic

    nb = build_autograded(released, assignment, result, submission, sha256, base)
    write_atomic(path, nbformat.writes(nb) + "\n")
