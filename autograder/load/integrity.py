"""Integrity of a submission against the answer key: nbgrader checksums and metadata.

One job: compare the student's nbgrader cells with the source notebook's and return flags
(``{"code", "message"}``), for course staff. Nothing here raises for a strange notebook, and
nothing here decides what runs: ``notebook.py`` restores locked cells and ignores grade cells
whatever the flags say.

Checksums are nbgrader's own (``nbgrader.utils.compute_checksum``: source, cell type, the
grade/solution/locked flags, grade_id and points). A grade cell is compared with its *released*
form: nbgrader removes ``BEGIN HIDDEN TESTS`` ... ``END HIDDEN TESTS`` regions (the delimiters
are nbgrader's defaults; the course config does not change them) before it computes the
checksum it ships.

Flag codes: ``locked_cell_modified``, ``locked_cell_deleted``, ``grade_cell_modified``,
``grade_cell_deleted``, ``grade_cell_duplicated``, ``duplicate_grade_id``,
``solution_metadata_changed``, ``cell_type_changed``, ``cell_id_changed``, ``unknown_grade_id``
(here) and ``solution_metadata_missing``, ``notebook_schema_invalid`` (from ``notebook.py``).
"""
from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autograder import outcomes

if TYPE_CHECKING:
    from autograder.assignments import Assignment
    from autograder.load.notebook import StudentCell

BEGIN_HIDDEN, END_HIDDEN = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"


@functools.lru_cache(maxsize=1)
def nbgrader_utils():
    """``nbgrader.utils``, loaded from its file without running ``nbgrader/__init__.py``.

    ``import nbgrader.utils`` first imports the package, whose ``__init__`` loads nbgrader's
    Jupyter server extensions (about 1.2 s); the utils module itself needs only nbformat,
    dateutil, tornado.log and setuptools.archive_util (about 0.1 s beyond nbformat)."""
    if "nbgrader.utils" in sys.modules:
        return sys.modules["nbgrader.utils"]
    package = importlib.util.find_spec("nbgrader")
    if package is None or not package.submodule_search_locations:
        raise ImportError("nbgrader is not installed in this environment")
    path = Path(list(package.submodule_search_locations)[0]) / "utils.py"
    spec = importlib.util.spec_from_file_location("autograder._nbgrader_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flag(code: str, message: str) -> dict:
    """A result flag; ``code`` must be declared in ``autograder/outcomes.py``."""
    return outcomes.flag(code, message)


def nbgrader_meta(cell: Any) -> dict:
    """The cell's ``metadata.nbgrader`` when it is a dict, else ``{}`` (students can edit it)."""
    meta = cell.get("metadata") if isinstance(cell, dict) else None
    nbg = meta.get("nbgrader") if isinstance(meta, dict) else None
    return nbg if isinstance(nbg, dict) else {}


def grade_id_of(cell: Any) -> str | None:
    gid = nbgrader_meta(cell).get("grade_id")
    return gid if isinstance(gid, str) and gid else None


def checksum(node: Any) -> str | None:
    """nbgrader's checksum of a cell (a NotebookNode); None when its metadata is too broken for
    nbgrader to checksum it, which never equals a real checksum."""
    try:
        return nbgrader_utils().compute_checksum(node)
    except Exception:
        return None


def released_source(source: str) -> str:
    """A grade cell's source as nbgrader releases it: hidden-test regions removed."""
    kept, hidden = [], False
    for line in source.split("\n"):
        if BEGIN_HIDDEN in line:
            hidden = True
        elif END_HIDDEN in line:
            hidden = False
        elif not hidden:
            kept.append(line)
    return "\n".join(kept)


def check_cells(cells: list["StudentCell"], assignment: "Assignment") -> list[dict]:
    """Flags for every difference between the student's nbgrader cells and the source's."""
    flags: list[dict] = []
    by_gid: dict[str, list] = {}
    for c in cells:
        if c.grade_id:
            by_gid.setdefault(c.grade_id, []).append(c)
    known = {s.grade_id for s in assignment.nbgrader_cells}
    for src in assignment.nbgrader_cells:
        gid, copies = src.grade_id, by_gid.get(src.grade_id, [])
        where = ", ".join(str(c.number) for c in copies)
        if src.grade and not src.solution:
            if not copies:
                flags.append(flag("grade_cell_deleted", f"grade cell '{gid}' is missing (deleted, "
                                  "or its nbgrader metadata removed); its hidden tests ran anyway"))
            elif len(copies) > 1:
                flags.append(flag("grade_cell_duplicated", f"grade cell '{gid}' appears "
                                  f"{len(copies)} times (cells {where})"))
            if any(checksum(c.node) != assignment.locked_checksums.get(gid) for c in copies):
                flags.append(flag("grade_cell_modified", f"grade cell '{gid}' was edited; grade "
                                  "cells are replaced by the hidden tests: the edit had no effect"))
        elif src.locked and not src.solution:
            if not copies:
                flags.append(flag("locked_cell_deleted", f"locked cell '{gid}' is missing; the "
                                  "original from the answer key was used for grading"))
            elif len(copies) > 1:
                flags.append(duplicated(gid, copies))
            if any(checksum(c.node) != assignment.locked_checksums.get(gid) for c in copies):
                flags.append(flag("locked_cell_modified", f"locked cell '{gid}' was edited; the "
                                  "original from the answer key was used for grading"))
        else:
            if len(copies) > 1:
                flags.append(duplicated(gid, copies))
            changed = [c.number for c in copies if not same_solution_meta(c, src)]
            if changed:
                flags.append(flag("solution_metadata_changed", f"the nbgrader metadata of answer "
                                  f"cell '{gid}' was changed (cell {changed[0]})"))
        for c in copies:
            if c.cell_type != src.cell_type:
                flags.append(flag("cell_type_changed", f"cell '{gid}' was changed from "
                                  f"{src.cell_type} to {c.cell_type} (cell {c.number})"))
            if src.cell_id and c.cell_id and c.cell_id != src.cell_id:
                flags.append(flag("cell_id_changed", f"cell '{gid}' has cell id '{c.cell_id}' "
                                  f"instead of '{src.cell_id}' (re-created or copied)"))
    unknown = sorted(set(by_gid) - known)
    if unknown:
        flags.append(flag("unknown_grade_id", "cells with grade_ids that are not in the "
                          "assignment: " + ", ".join(f"'{g}'" for g in unknown)))
    return flags


def duplicated(gid: str, copies: list) -> dict:
    where = ", ".join(str(c.number) for c in copies)
    return flag("duplicate_grade_id", f"grade_id '{gid}' appears on {len(copies)} cells "
                f"(cells {where})")


def same_solution_meta(cell: "StudentCell", src) -> bool:
    meta = cell.meta
    if bool(meta.get("solution")) != src.solution or bool(meta.get("grade")) != src.grade:
        return False
    if bool(meta.get("locked")) != src.locked:
        return False
    if src.grade:
        points = meta.get("points")
        if points is None:                # float(None) would raise TypeError: not the same cell
            return False
        try:
            return float(points) == src.points
        except (TypeError, ValueError):
            return False
    return True
