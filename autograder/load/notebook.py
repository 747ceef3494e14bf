"""Read a student's notebook into the cells a worker executes. Never raises for a bad notebook.

Invariants of ``read_submission(path, assignment) -> Submission``:
- Anything wrong with the file (unreadable, not JSON, truncated, not a notebook, nbformat 3,
  too big) gives ``readable=False`` and a ``problem`` a student can act on.
- Outputs and attachments are dropped while the JSON is parsed (one output at a time is ever in
  memory); the file size is checked before anything is read.
- The file is a regular file reached from ``base`` without following links (``untrusted.py``;
  else also flagged ``not_a_regular_file``), and its JSON values and decoded size are bounded
  (``autograder/bounds.py``) before it is parsed.
- ``cells`` follows the SOURCE notebook's code cells, in order:
  solution cell -> the student's cell with that grade_id (or, when the metadata is gone, the
  student's code cell that defines the solution's function), run as written
  (``run_as_written``: top-level statements included, shell/magic lines dropped);
  locked and unmarked given cells -> always the source's version (edits are flagged, never run):
  in full when the source marks the cell as set-up, else its definitions only
  (``extract_definitions`` with the names earlier cells bind);
  grade cells -> nothing (the hidden suites replace them).
  Every other student code cell (helpers, scratch cells, extra copies) runs as written too,
  placed just before the answer, given or grade cell (by grade_id) that follows it in the
  student's notebook (at the end when none follows), as Jupyter would have run them.
- ``magic_lines`` lists the student's lines not run (one ``magic_lines_dropped`` flag says
  which); ``given_only`` names what only non-set-up given cells bind (nothing does at grading).
- A cell that cannot be parsed costs only that cell: ``cell_problems[cell id]``.
- ``flags`` report integrity findings (``integrity.py``) and never change what runs except as
  described above.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autograder import bounds
from autograder.assignments import Assignment
from autograder.load import integrity, untrusted
from autograder.load.extract import ANY_NAME, Extracted, extract_definitions, run_as_written

MAX_FILE_BYTES = bounds.NOTEBOOK_MAX_BYTES    # checked before reading; outputs included
MAX_VALUES = bounds.NOTEBOOK_MAX_VALUES       # JSON values outside strings, before parsing
MAX_CELLS = 10_000
MAX_CODE_CHARS = 5_000_000            # all cell sources together, outputs excluded


@dataclass
class Submission:
    path: Path
    sha256: str = ""
    readable: bool = False
    problem: str = ""                 # student-facing, when not readable
    cells: list[dict] = field(default_factory=list)          # [{"id", "source"}] for the worker
    cell_problems: dict[str, str] = field(default_factory=dict)
    flags: list[dict] = field(default_factory=list)          # [{"code", "message"}]
    solutions_found: dict[str, str] = field(default_factory=dict)
    magic_lines: list[tuple[str, int, str]] = field(default_factory=list)  # (cell, line, text)
    given_only: dict[str, str] = field(default_factory=dict)  # name -> given cell that binds it


@dataclass
class StudentCell:
    number: int                       # 1-based position in the student's notebook
    cell_type: str
    source: str
    cell_id: str | None               # nbformat cell id as submitted (None if absent)
    meta: dict                        # metadata.nbgrader, {} when absent or not a dict
    grade_id: str | None
    node: Any                         # the cell as a NotebookNode, for nbgrader's checksum

    @property
    def key(self) -> str:
        return f"cell-{self.number}"


class Unreadable(Exception):
    """The notebook cannot be graded; the message is for the student."""


def read_submission(path: Path, assignment: Assignment, base: Path | None = None) -> Submission:
    """``base``: the trusted folder the path is walked from without following links
    (``untrusted.submission_base``; default: the file's own folder)."""
    sub = Submission(path=Path(path))
    try:
        raw = read_bytes(sub, base)
        cells, schema_problem = parse_notebook(raw)
        if schema_problem:
            sub.flags.append(integrity.flag("notebook_schema_invalid", schema_problem))
        build(sub, cells, assignment)
        sub.readable = True
    except Unreadable as exc:
        sub.problem, sub.cells, sub.cell_problems, sub.solutions_found = str(exc), [], {}, {}
    except Exception as exc:          # a bug in the kit: still a result, and staff are told
        sub.problem = ("The grader could not read this notebook because of an error in the "
                       "grader; your course staff will look at it.")
        sub.cells, sub.cell_problems, sub.solutions_found = [], {}, {}
        sub.flags.append(integrity.flag("grader_error", f"reading the notebook: "
                                        f"{type(exc).__name__}: {exc}"[:2000]))
    return sub


# --- the file --------------------------------------------------------------------------------
def read_bytes(sub: Submission, base: Path | None = None) -> bytes:
    """The file's bytes (sets ``sub.sha256``): a regular file reached without following links
    (``untrusted``), at most ``MAX_FILE_BYTES``; anything else is Unreadable, and a link, FIFO,
    device or folder is also flagged ``not_a_regular_file``."""
    base = Path(os.path.abspath(sub.path)).parent if base is None else base
    try:
        fd = untrusted.open_regular(sub.path, base)
    except untrusted.Refused as exc:
        shown = untrusted.printable(str(sub.path))
        sub.flags.append(integrity.flag(untrusted.CODE, f"refused {shown}: {exc}"))
        raise Unreadable(f"The submission is not a regular file ({exc}); only a notebook "
                         "file itself is graded, never a link or a special file.") from None
    except (OSError, ValueError) as exc:
        raise Unreadable("The submission could not be opened "
                         f"({getattr(exc, 'strerror', None) or exc}).") from None
    try:
        size = os.fstat(fd).st_size
        if size > MAX_FILE_BYTES:
            sub.sha256 = untrusted.sha256_fd(fd, MAX_FILE_BYTES)
            raise Unreadable(f"The notebook file is {size / 2**20:.0f} MB; notebooks over "
                             f"{MAX_FILE_BYTES // 2**20} MB are not graded. Clear all outputs "
                             "(Edit > Clear Outputs of All Cells), save, and submit again.")
        raw = untrusted.read_capped(fd, MAX_FILE_BYTES)
    except OSError as exc:
        raise Unreadable(f"The submission could not be read ({exc.strerror or exc}).") from None
    finally:
        os.close(fd)
    sub.sha256 = hashlib.sha256(raw).hexdigest()
    if len(raw) > MAX_FILE_BYTES:
        raise Unreadable(f"The notebook file is over {MAX_FILE_BYTES // 2**20} MB; clear all "
                         "outputs, save, and submit again.")
    if not raw.strip():
        raise Unreadable("The notebook file is empty.")
    return raw


class _TooManyCells(Exception):
    pass


class _StripOutputs:
    """``json`` object hook: drops outputs and attachments as soon as each is parsed, joins
    list-of-lines sources, and stops the parse when there are too many cells."""

    def __init__(self) -> None:
        self.cells = 0

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict:
        d = dict(pairs)
        if "output_type" in d:
            return {"output_type": d["output_type"]}
        if "cell_type" in d:
            self.cells += 1
            if self.cells > MAX_CELLS:
                raise _TooManyCells
            d.pop("attachments", None)
            if "outputs" in d or d.get("cell_type") == "code":
                d["outputs"] = []
                d["execution_count"] = None
            src = d.get("source")
            if isinstance(src, list) and all(isinstance(s, str) for s in src):
                d["source"] = "".join(src)
        return d


def parse_notebook(raw: bytes) -> tuple[list[dict], str]:
    """The notebook's cells (outputs stripped) and a schema problem ("" if nbformat-valid).
    The JSON's values are counted before it is parsed: a parse allocates per value."""
    width = untrusted.decoded_width(raw)
    if len(raw) * (1 + 2 * width) > bounds.NOTEBOOK_MAX_PARSE_BYTES:
        limit = bounds.NOTEBOOK_MAX_PARSE_BYTES // (1 + 2 * width) >> 20
        raise Unreadable(f"The notebook file is {len(raw) / 2**20:.0f} MB and holds characters "
                         f"outside Latin-1 (e.g. emoji); such notebooks are graded up to "
                         f"{limit} MB. Clear all outputs (Edit > Clear Outputs of All Cells), "
                         "save, and submit again.")
    if untrusted.count_json_values(raw, MAX_VALUES) > MAX_VALUES:
        raise Unreadable(f"The notebook's JSON holds more than {MAX_VALUES:,} values (lists, "
                         "objects and their items); this is not a notebook the grader can read. "
                         "Clear all outputs (Edit > Clear Outputs of All Cells), save, and "
                         "submit again.")
    try:
        data = json.loads(raw, object_pairs_hook=_StripOutputs())
    except _TooManyCells:
        raise Unreadable(f"The notebook has more than {MAX_CELLS:,} cells.") from None
    except UnicodeDecodeError:
        raise Unreadable("The file is not a Jupyter notebook: it is not UTF-8 text.") from None
    except json.JSONDecodeError as exc:
        raise Unreadable(json_problem(exc)) from None
    except RecursionError:
        raise Unreadable("The file is not a Jupyter notebook: its JSON is nested too deeply.") \
            from None
    except ValueError as exc:     # e.g. an integer past Python's digit limit: any value the
        raise Unreadable(f"The file is not a notebook the grader can read: {exc}"[:300]) \
            from None             # parser refuses is the file's problem, not the grader's
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list) \
            or "nbformat" not in data:
        if isinstance(data, dict) and data.get("nbformat") == 3 and "worksheets" in data:
            raise Unreadable(NBFORMAT3)
        raise Unreadable("The file is JSON but not a Jupyter notebook (it has no list of cells).")
    major = data.get("nbformat")
    if major != 4:
        if isinstance(major, int) and major < 4:
            raise Unreadable(NBFORMAT3)
        raise Unreadable(f"The notebook is in format {major!r}; only nbformat 4 notebooks, "
                         "as saved by Jupyter, can be graded.")
    cells = data["cells"]
    bad = next((i for i, c in enumerate(cells, 1) if not isinstance(c, dict)
                or not isinstance(c.get("cell_type"), str) or not isinstance(c.get("source"), str)),
               None)
    if bad is not None:
        raise Unreadable(f"The notebook is damaged: cell {bad} has no type or no source text. "
                         "Open it in Jupyter, save it, and submit again.")
    if sum(len(c["source"]) for c in cells) > MAX_CODE_CHARS:
        raise Unreadable(f"The notebook's cells hold more than {MAX_CODE_CHARS:,} characters of "
                         "text; this is not a notebook the grader can read.")
    return cells, schema_problem(data)


NBFORMAT3 = ("The notebook is in the old nbformat 3 format. Open it in a current Jupyter, save "
             "it (that converts it to nbformat 4), and submit again.")


def json_problem(exc: json.JSONDecodeError) -> str:
    if exc.pos >= len(exc.doc.rstrip()) or exc.msg.startswith("Unterminated string"):
        return ("The file is not a complete Jupyter notebook: it ends in the middle (the "
                "download or upload may have been cut off). Save the notebook again in Jupyter "
                "and resubmit.")
    return (f"The file is not a Jupyter notebook: it is not valid JSON (line {exc.lineno}, "
            f"column {exc.colno}: {exc.msg}).")


def schema_problem(data: dict) -> str:
    """nbformat's validation, on a copy (nbformat adds missing cell ids while validating)."""
    import nbformat
    from nbformat.validator import normalize

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, copy = normalize(data)
            nbformat.validate(nbformat.from_dict(copy))
    except Exception as exc:
        return "the notebook does not follow the nbformat 4 schema: " + \
            str(exc).strip().split("\n", 1)[0][:300]
    return ""


def student_cells(cells: list[dict]) -> list[StudentCell]:
    import nbformat

    out = []
    for number, c in enumerate(cells, start=1):
        cid = c.get("id")
        out.append(StudentCell(number=number, cell_type=c["cell_type"], source=c["source"],
                               cell_id=cid if isinstance(cid, str) else None,
                               meta=integrity.nbgrader_meta(c), grade_id=integrity.grade_id_of(c),
                               node=nbformat.from_dict(c)))
    return out


# --- what runs -------------------------------------------------------------------------------
class _Extractions:
    """``extract_definitions`` of each student cell without context, computed once: enough to
    know which functions a cell defines (defs never depend on other cells)."""

    def __init__(self) -> None:
        self.cache: dict[int, Extracted] = {}

    def functions(self, c: StudentCell) -> tuple[str, ...]:
        if c.number not in self.cache:
            self.cache[c.number] = extract_definitions(c.source)
        return self.cache[c.number].functions


def build(sub: Submission, raw_cells: list[dict], asg: Assignment) -> None:
    cells = student_cells(raw_cells)
    sub.flags.extend(integrity.check_cells(cells, asg))
    solution_ids = [c.id for c in asg.cells if c.kind == "solution"]
    chosen, shared, claimed = match_solutions(sub, cells, asg, solution_ids, _Extractions())
    before, trailing = place_added_cells(cells, chosen, claimed, asg)
    defined = emit(sub, asg, chosen, before, trailing)
    for gid in solution_ids:
        fn = asg.solution_functions[gid]
        if gid in shared:
            sub.solutions_found[gid] = sub.solutions_found.get(shared[gid], "")
        sub.solutions_found.setdefault(gid, "")
        if gid in sub.cell_problems or fn in defined:
            continue
        if gid in chosen or gid in shared:
            sub.cell_problems[gid] = (f"Your answer cell for {fn}(...) does not define {fn}: "
                                      f"no function named {fn} was found in your notebook.")
        else:
            sub.cell_problems[gid] = (f"The answer cell for {fn}(...) is missing: no cell has "
                                      f"the id '{gid}' and no cell defines {fn}.")


def match_solutions(sub: Submission, cells: list[StudentCell], asg: Assignment,
                    solution_ids: list[str], ex: _Extractions):
    """The student's cell for each solution: by grade_id, else the last unclaimed code cell that
    defines the function, else inside another solution's cell (``shared``: gid -> host gid).
    ``claimed``: student cells never run as added cells (chosen ones, and copies of the
    source's locked, grade and non-code nbgrader cells)."""
    protected = {s.grade_id for s in asg.nbgrader_cells if s.grade_id not in solution_ids}
    claimed = {c.number for c in cells if c.grade_id in protected}
    chosen: dict[str, StudentCell] = {}
    shared: dict[str, str] = {}
    for gid in solution_ids:
        copies = [c for c in cells if c.grade_id == gid]
        pick = pick_solution(copies, asg.solution_functions[gid], ex)
        if pick is not None:
            chosen[gid] = pick
            claimed.add(pick.number)
    for gid in solution_ids:
        if gid in chosen:
            continue
        fn = asg.solution_functions[gid]
        loose = [c for c in cells if c.cell_type == "code" and c.number not in claimed
                 and fn in ex.functions(c)]
        if loose:
            chosen[gid] = loose[-1]
            claimed.add(loose[-1].number)
            sub.flags.append(found_by_function(gid, fn, loose[-1]))
            continue
        host = next((h for h, c in chosen.items() if fn in ex.functions(c)), None)
        if host is not None:
            shared[gid] = host
            sub.flags.append(integrity.flag("solution_metadata_missing", f"answer cell '{gid}' "
                                            f"is missing; {fn}(...) was found in the cell of "
                                            f"'{host}' (cell {chosen[host].number})"))
    return chosen, shared, claimed


def place_added_cells(cells: list[StudentCell], chosen: dict[str, StudentCell], claimed: set[int],
                      asg: Assignment):
    """Each unclaimed student code cell goes before the next anchor below it in the student's
    notebook, or to ``trailing`` when none follows. Anchors: the chosen answer cells and the
    student's copies of the source's given and grade code cells (by grade_id), so a student's
    cell runs where Jupyter ran it relative to the given definitions too."""
    code_ids = {c.id for c in asg.cells}
    anchors = sorted([(c.number, gid) for gid, c in chosen.items()]
                     + [(c.number, c.grade_id) for c in cells
                        if c.number in claimed and c.grade_id in code_ids
                        and c.grade_id not in asg.solution_functions])
    before: dict[str, list[StudentCell]] = {c.id: [] for c in asg.cells}
    trailing: list[StudentCell] = []
    for c in cells:
        if c.cell_type != "code" or c.number in claimed:
            continue
        nxt = next((gid for number, gid in anchors if number > c.number), None)
        (before[nxt] if nxt else trailing).append(c)
    return before, trailing


def emit(sub: Submission, asg: Assignment, chosen: dict[str, StudentCell],
         before: dict[str, list[StudentCell]], trailing: list[StudentCell]) -> set[str]:
    """Fill ``sub.cells`` in the source's order; returns the functions the student's code
    defines. The student's cells and the set-up cells run as written, the other given cells
    contribute their definitions (constants may use names bound by any cell run before them).
    Records the student's lines not run (``magic_lines`` and one flag) and ``given_only``."""
    defined: set[str] = set()
    known: set[str] = set()

    def run(key: str, source: str, student: bool, setup: bool = False) -> str:
        e = run_as_written(source) if student or setup else extract_definitions(source, known)
        if student:
            sub.magic_lines.extend((key, line, text) for line, text in e.magics)
        if e.error:
            if student:
                sub.cell_problems[key] = e.error
            return ""
        known.update(e.names)
        if e.code:
            sub.cells.append({"id": key, "source": e.code})
        if student:
            defined.update(e.functions)
        return e.code

    for cell in asg.cells:
        for c in before[cell.id]:
            run(c.key, c.source, True)
        if cell.kind == "solution":
            if cell.id in chosen:
                sub.solutions_found[cell.id] = run(cell.id, chosen[cell.id].source, True)
        elif cell.kind in ("locked", "other"):
            run(cell.id, cell.source, False, cell.setup)
    for c in trailing:
        run(c.key, c.source, True)
    sub.given_only = given_only_names(asg, known)
    if sub.magic_lines:
        sub.flags.append(integrity.flag("magic_lines_dropped", magic_lines_message(
            sub.magic_lines, asg)))
    return defined


def reference_cells(asg: Assignment) -> list[dict]:
    """The answer key as the reference worker runs it, by the rule ``emit`` applies to a
    submission: solution and set-up cells as written, other given cells' definitions only,
    grade cells not at all."""
    known: set[str] = set()
    out = []
    for cell in asg.cells:
        if cell.kind == "grade":
            continue
        full = cell.kind == "solution" or cell.setup
        e = run_as_written(cell.source) if full else extract_definitions(cell.source, known)
        known.update(e.names)
        out.append({"id": cell.id, "source": e.code})
    return out


def given_only_names(asg: Assignment, bound: set[str]) -> dict[str, str]:
    """{name: the first given cell binding it} for the names that only given cells which do
    not run in full (training loops, plots, demos) would bind in Jupyter: at grading, nothing
    binds them."""
    out: dict[str, str] = {}
    if ANY_NAME in bound:
        return out
    for cell in asg.cells:
        if cell.kind in ("locked", "other") and not cell.setup:
            for name in run_as_written(cell.source).names:
                if name not in bound and name != ANY_NAME:
                    out.setdefault(name, cell.id)
    return out


def cell_label(key: str, asg: Assignment) -> str:
    """A cell as the student knows it: 'your answer cell for f', 'your cell 12', or 'the given
    cell setup'."""
    if key in asg.solution_functions:
        return f"your answer cell for {asg.solution_functions[key]}"
    if key.startswith("cell-") and key[5:].isdigit():
        return f"your cell {key[5:]} (counting every cell from the top)"
    return f"the given cell '{key}'" if key else "your notebook"


MAX_MAGIC_LINES_LISTED = 20


def magic_lines_message(lines: list[tuple[str, int, str]], asg: Assignment) -> str:
    shown = [f"{cell_label(key, asg)}, line {line}: {text[:80]}"
             for key, line, text in lines[:MAX_MAGIC_LINES_LISTED]]
    more = len(lines) - len(shown)
    return ("these shell/magic lines need Jupyter and were not run at grading (the rest of "
            "each cell was): " + "; ".join(shown) + (f"; and {more} more" if more > 0 else ""))


def pick_solution(copies: list[StudentCell], fn: str, ex) -> StudentCell | None:
    """Among the student's cells carrying a solution's grade_id: the last code cell defining the
    function, else the last code cell, else the last of any type (a cell turned to Markdown by
    accident is still read as code)."""
    code = [c for c in copies if c.cell_type == "code"]
    defining = [c for c in code if fn in ex.functions(c)]
    for group in (defining, code, copies):
        if group:
            return group[-1]
    return None


def found_by_function(gid: str, fn: str, cell: StudentCell) -> dict:
    if cell.grade_id:
        return integrity.flag("solution_metadata_changed", f"answer cell '{gid}' was found by "
                              f"its function {fn}(...) in cell {cell.number}, whose grade_id is "
                              f"'{cell.grade_id}'")
    return integrity.flag("solution_metadata_missing", f"answer cell '{gid}' has no nbgrader "
                          f"metadata; {fn}(...) was found in cell {cell.number}")
