"""What every assignment's training tests share (trusted parent only; numpy, no torch).

An assignment's ``training.py`` (in its folder, ``assignments/<name>/``) builds on these:

- ``load_thresholds(folder)``: the calibrated pass marks, ``<folder>/thresholds.json`` (written
  by the assignment's calibration, ``python -m autograder.calibration --assignment <name>``);
- ``torch_seed``, ``generator``: seeds and numpy generators drawn from a hidden seed;
- ``check_params``: what a trusted trainer needs to check the student's replies
  (``autograder/harness/relay.py``);
- ``kit_classes``, ``kit_cells``: the source notebook's given code, as one block for a trainer
  to execute in a fresh namespace (``autograder.harness.kit_namespace``).
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np

THRESHOLDS_NAME = "thresholds.json"


def thresholds_file(folder) -> Path:
    """``<assignment folder>/thresholds.json`` (``folder``: a path, or an ``Assignment``)."""
    return Path(getattr(folder, "folder", folder)) / THRESHOLDS_NAME


def load_thresholds(folder) -> dict:
    """The calibrated pass marks of the assignment whose folder is ``folder``."""
    return json.loads(thresholds_file(folder).read_text())


def generator(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(int(seed)))


def torch_seed(seed: int) -> int:
    return int(seed) % (2**62)


def check_params(assignment, hidden_seed: int, calls: dict[str, int]) -> dict:
    """What the trusted trainer needs to check the student's replies (``relay.Student``): the
    seed of its sample of calls, the catalogued mistakes of each function (their names in the
    reference worker), and how many calls of each function a run makes."""
    from autograder.hints import MUTANT_PREFIX, load_mutants

    mutants: dict[str, list[str]] = {fn: [] for fn in calls}
    for m in load_mutants(assignment):
        if m.function in mutants:
            mutants[m.function].append(MUTANT_PREFIX + m.name)
    return {"seed": torch_seed(hidden_seed ^ 0xC4EC), "mutants": mutants, "calls": dict(calls)}


# --- the kit's given code, from the source notebook -------------------------------------------
def kit_classes(assignment, class_names) -> str:
    """Import lines and the named class definitions from the source notebook's given (locked)
    cells, as one block of code for a harness to execute in a fresh namespace."""
    from autograder.load.extract import extract_definitions

    imports: list[str] = []
    classes: dict[str, str] = {}
    for cell in assignment.cells:
        if cell.kind not in ("locked", "other"):
            continue
        code = extract_definitions(cell.source).code
        for node in ast.parse(code).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)) and _allowed_import(node):
                line = ast.get_source_segment(code, node) or ""
                if line not in imports:
                    imports.append(line)
            elif isinstance(node, ast.ClassDef) and node.name in class_names:
                classes[node.name] = ast.get_source_segment(code, node) or ""
    missing = [n for n in class_names if n not in classes]
    if missing:
        raise LookupError(f"the source notebook defines no {', '.join(missing)}")
    return "\n".join(imports) + "\n\n" + "\n\n".join(classes[n] for n in class_names) + "\n"


HARNESS_MODULES = {"torch", "numpy", "math", "random", "collections", "typing", "dataclasses",
                   "functools", "itertools"}


def _allowed_import(node) -> bool:
    """Harnesses import only torch, numpy and the standard library (no plotting in a worker)."""
    names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
    return all(n.split(".")[0] in HARNESS_MODULES for n in names)


def code_cells(assignment) -> dict[str, str]:
    """``{cell id: source}`` of the source notebook's code cells."""
    return {c.id: c.source for c in assignment.cells}


def kit_cells(assignment, cell_ids) -> str:
    """The source notebook's cells ``cell_ids``, as one block of code for the harness. They must
    be plain definitions (imports, functions, classes, assignments): nothing runs on import."""
    cells = code_cells(assignment)
    parts = []
    for cell_id in cell_ids:
        if cell_id not in cells:
            raise LookupError(f"the source notebook has no cell {cell_id!r}")
        source = cells[cell_id]
        for node in ast.parse(source).body:
            plain = isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef,
                                      ast.Assign)) or (isinstance(node, ast.Expr) and isinstance(
                                          node.value, ast.Constant))
            if not plain:
                raise ValueError(f"cell {cell_id} line {node.lineno} is not a plain definition")
        parts.append(f"# --- cell {cell_id}\n{source}\n")
    return "\n".join(parts)
