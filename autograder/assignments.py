"""The answer key of one assignment, read from ``source/<name>/<name>.ipynb``.

Invariants:
- Points live only in the source's grade cells (``grade_cells``); ``max_score`` is their sum.
- ``cells`` are the source's code cells in notebook order; solution cells carry the reference
  solution. ``kind`` is "solution" (nbgrader ``solution``, whatever else it is), "grade" (a grade
  cell that is not a solution), "locked" (locked given code) or "other" (unmarked code).
- Every code solution cell defines exactly one top-level function (``solution_functions``);
  a source that breaks this raises ``AssignmentError`` rather than grading wrongly.
- ``locked_checksums`` holds nbgrader's checksum of each locked and grade cell as nbgrader
  releases it (see ``autograder/load/integrity.py``).
- A given (locked or unmarked) code cell whose metadata says ``"autograder": {"setup": true}``
  is set-up (``CodeCell.setup``): at grading it runs in full, where other given cells
  contribute their definitions only. Only given code cells may be marked.
- Everything else of the assignment (hidden suite, hidden inputs, trainers, mutants,
  calibration, thresholds, demo recipe) lives in its folder ``folder``:
  ``<course_dir>/assignments/<name>/``, else the kit's own ``assignments/<name>/``
  (``autograder.plugins.assignment_folder``; imported only through ``autograder.plugins``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from autograder.plugins import assignment_folder

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class UnknownAssignment(Exception):
    """No such assignment: no source notebook or no assignment folder. The message says which."""


class AssignmentError(Exception):
    """The source notebook breaks the kit's contract (a message for the instructor)."""


@dataclass(frozen=True)
class GradeCell:
    id: str
    points: float


@dataclass(frozen=True)
class CodeCell:
    id: str          # nbgrader grade_id, else the cell's nbformat id, else "cell-<n>"
    source: str
    kind: str        # "solution" | "locked" | "grade" | "other"
    setup: bool = False   # a given cell marked {"autograder": {"setup": true}}: runs in full


@dataclass(frozen=True)
class NbgraderCell:
    """The nbgrader metadata of one source cell (code or markdown), for integrity checks."""
    grade_id: str
    cell_type: str
    cell_id: str | None
    solution: bool
    grade: bool
    locked: bool
    points: float


@dataclass(frozen=True)
class Assignment:
    name: str
    notebook_name: str
    source_path: Path
    folder: Path                 # assignments/<name>/: the hidden suite and all its own code
    cells: tuple[CodeCell, ...]
    grade_cells: tuple[GradeCell, ...]
    solution_functions: dict[str, str]
    locked_checksums: dict[str, str | None]
    nbgrader_cells: tuple[NbgraderCell, ...] = ()

    @property
    def max_score(self) -> float:
        return float(sum(g.points for g in self.grade_cells))


_CACHE: dict[tuple[str, int, int, str], Assignment] = {}


def list_assignments(course_dir: Path) -> list[str]:
    """Names A with both ``source/A/A.ipynb`` in the course and an assignment folder, sorted."""
    source = Path(course_dir) / "source"
    if not source.is_dir():
        return []
    return sorted(d.name for d in source.iterdir()
                  if _NAME.match(d.name) and (d / f"{d.name}.ipynb").is_file()
                  and assignment_folder(d.name, course_dir) is not None)


def load_assignment(name: str, course_dir: Path) -> Assignment:
    """The assignment's answer key; cached per (source path, mtime, size)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise UnknownAssignment(f"not an assignment name: {name!r}")
    path = (Path(course_dir) / "source" / name / f"{name}.ipynb").resolve()
    if not path.is_file():
        raise UnknownAssignment(f"unknown assignment {name!r}: no source notebook {path}")
    folder = assignment_folder(name, course_dir)
    if folder is None:
        raise UnknownAssignment(f"assignment {name!r} has no folder assignments/{name}/ in "
                                f"{Path(course_dir)} nor in the kit")
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, str(folder))
    if key not in _CACHE:
        _CACHE[key] = _read(name, path, folder)
    return _CACHE[key]


def _read(name: str, path: Path, folder: Path) -> Assignment:
    import nbformat

    from autograder.load.extract import extract_definitions
    from autograder.load.integrity import checksum, nbgrader_utils, released_source

    nbu = nbgrader_utils()
    nb = nbformat.read(str(path), as_version=4)
    cells: list[CodeCell] = []
    grade_cells: list[GradeCell] = []
    nbgrader_cells: list[NbgraderCell] = []
    functions: dict[str, str] = {}
    checksums: dict[str, str | None] = {}
    seen: set[str] = set()
    for number, cell in enumerate(nb.cells, start=1):
        meta = cell.metadata.get("nbgrader", {})
        solution, grade, locked = nbu.is_solution(cell), nbu.is_grade(cell), nbu.is_locked(cell)
        gid = meta.get("grade_id") if (solution or grade or locked) else None
        if (solution or grade or locked) and not gid:
            raise AssignmentError(f"{path}: cell {number} has nbgrader flags but no grade_id")
        if gid:
            if gid in seen:
                raise AssignmentError(f"{path}: grade_id {gid!r} is used twice")
            seen.add(gid)
            points = float(meta.get("points", 0)) if grade else 0.0
            nbgrader_cells.append(NbgraderCell(gid, cell.cell_type, cell.get("id"), bool(solution),
                                               bool(grade), bool(locked), points))
            if grade:
                grade_cells.append(GradeCell(gid, points))
            if locked:        # nbgrader: grade cells that are not solutions are locked too
                released = dict(cell, source=released_source(cell.source)) if grade else cell
                checksums[gid] = checksum(nbformat.from_dict(released))
        if cell.cell_type != "code":
            continue
        kind = "solution" if solution else "grade" if grade else "locked" if locked else "other"
        setup = is_setup(cell)
        if setup and kind not in ("locked", "other"):
            raise AssignmentError(f"{path}: cell {number} is a {kind} cell marked as set-up; "
                                  "only given code cells can be")
        cells.append(CodeCell(gid or cell.get("id") or f"cell-{number}", cell.source, kind,
                              setup))
        if kind == "solution":
            assert gid is not None            # a solution cell without grade_id raised above
            defined = extract_definitions(cell.source).functions
            if len(defined) != 1:
                raise AssignmentError(f"{path}: solution cell {gid!r} must define exactly one "
                                      f"function, not {list(defined)}")
            functions[gid] = defined[0]
    return Assignment(name=name, notebook_name=path.name, source_path=path, folder=folder,
                      cells=tuple(cells), grade_cells=tuple(grade_cells),
                      solution_functions=functions, locked_checksums=checksums,
                      nbgrader_cells=tuple(nbgrader_cells))


def is_setup(cell) -> bool:
    """Whether a source cell is marked as set-up: ``metadata.autograder.setup`` is true."""
    meta = cell.get("metadata", {}).get("autograder")
    return isinstance(meta, dict) and meta.get("setup") is True
