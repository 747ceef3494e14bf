"""Hints: explain a wrong answer by matching it against known mistakes, computed, never guessed.

Each assignment's ``autograder/suites/<name>/mutants.py`` lists ``Mutant``s: a textual change to
one function's solution cell in the source notebook (the answer key), with a plain-words hint.
The reference worker loads every mutant next to the answer key (``mutant_cells``), each wrapped
so that it defines only ``_mutant_<name>``. When a suite finds a wrong output it asks
``Hints.explain``: the mutants are called on the very same inputs, and the hints of those whose
output matches the student's (and differs from the answer key's) are shown. When none matches,
the message is the numeric difference at the first wrong position. A hint therefore never claims
more than a computation showed.
"""
from __future__ import annotations

import importlib.util
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autograder.feedback import first_difference

MUTANT_PREFIX = "_mutant_"
ATOL = 1e-4


@dataclass(frozen=True)
class Mutant:
    """A realistic wrong implementation of ``function``.

    ``find`` must occur exactly once in the function's solution cell; it is replaced by
    ``replace``. With ``find=None``, ``replace`` is a whole replacement cell.
    ``needs`` names a condition without which the mistake cannot show (e.g. ``"cuda"``: a
    wrong-device bug is invisible when everything runs on the CPU).
    """
    name: str
    function: str
    find: str | None
    replace: str
    hint: str
    needs: str = ""


@dataclass(frozen=True)
class CorrectVariant:
    """A whole solution cell for ``function``, written differently, that must get full marks."""
    name: str
    function: str
    source: str


class MutantError(ValueError):
    """A mutant that does not apply to the answer key (a kit bug: the notebook changed)."""


# --- building mutant cells -----------------------------------------------------------------

def solution_cell(assignment, function: str):
    """The source notebook's solution cell that defines ``function``."""
    pattern = re.compile(rf"^def\s+{re.escape(function)}\s*\(", re.M)
    cells = [c for c in assignment.cells
             if getattr(c, "kind", "") == "solution" and pattern.search(c.source)]
    if len(cells) != 1:
        raise MutantError(f"expected one solution cell defining {function}, found {len(cells)}")
    return cells[0]


def apply_mutant(source: str, mutant: Mutant) -> str:
    """The solution cell with the mutant's change applied (exactly once)."""
    if mutant.find is None:
        return mutant.replace
    count = source.count(mutant.find)
    if count != 1:
        raise MutantError(f"mutant {mutant.name}: the text to change occurs {count} times in "
                          f"the solution cell of {mutant.function}, not once")
    return source.replace(mutant.find, mutant.replace)


def wrap_as(source: str, function: str, new_name: str) -> str:
    """Code that defines ``new_name`` as the ``function`` the cell ``source`` defines, and
    nothing else: the cell runs inside a factory, so its helpers cannot overwrite the answer
    key's names in the shared namespace."""
    factory = f"_make{new_name}"
    body = textwrap.indent(source.rstrip() + f"\nreturn {function}\n", "    ")
    return f"def {factory}():\n{body}\n{new_name} = {factory}()\ndel {factory}\n"


def load_mutants(assignment) -> list[Mutant]:
    """``MUTANTS`` of the assignment's suite, or [] when it has none."""
    module = _suite_module(assignment, "mutants")
    return list(getattr(module, "MUTANTS", [])) if module else []


def load_correct_variants(assignment) -> list[CorrectVariant]:
    module = _suite_module(assignment, "mutants")
    return list(getattr(module, "CORRECT_VARIANTS", [])) if module else []


def _suite_module(assignment, name: str):
    path = Path(assignment.suite_dir) / f"{name}.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(
        f"autograder_suite_{assignment.name}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mutant_cells(assignment, mutants: list[Mutant] | None = None) -> list[dict]:
    """Extra cells for the reference worker's load, after the answer key's cells: one per
    mutant, each defining ``_mutant_<name>`` only. A mutant that does not apply raises
    MutantError (``tests/test_mutants.py`` checks that every one applies)."""
    from autograder.load.extract import extract_definitions

    mutants = load_mutants(assignment) if mutants is None else mutants
    cells = []
    for m in mutants:
        changed = apply_mutant(solution_cell(assignment, m.function).source, m)
        code = extract_definitions(changed).code
        cells.append({"id": f"mutant:{m.name}", "source": wrap_as(code, m.function,
                                                                  MUTANT_PREFIX + m.name)})
    return cells


# --- comparing outputs ---------------------------------------------------------------------

def numeric(value):
    """A float64 array of a returned value (array, number, list, tuple of those), or None."""
    if isinstance(value, tuple):
        parts = [numeric(v) for v in value]
        return None if any(p is None for p in parts) else tuple(parts)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr


def same_numbers(a, b, atol: float = ATOL, rtol: float = 1e-5) -> bool:
    a, b = numeric(a), numeric(b)
    if a is None or b is None:
        return False
    if isinstance(a, tuple) or isinstance(b, tuple):
        return isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and \
            all(same_numbers(x, y, atol, rtol) for x, y in zip(a, b))
    if a.shape != b.shape:
        return False
    return bool(np.allclose(a, b, atol=atol, rtol=rtol, equal_nan=True))


def _pick(value, index):
    if index is None:
        return value
    if isinstance(value, (tuple, list)) and -len(value) <= index < len(value):
        return value[index]
    return None


def aspect_of(returned, aspect: str, index=None):
    """The part of a proxy ``Returned`` that ``aspect`` names, for comparison."""
    if aspect == "value":
        return _pick(returned.value, index)
    if aspect.startswith("grad:"):
        return (returned.grads or {}).get(aspect[5:])
    if aspect == "mutated":
        return tuple(sorted(k for k, v in (returned.mutated or {}).items() if v))
    meta = _pick(returned.meta, index)
    value = _pick(returned.value, index)
    if aspect == "graph":   # is the output a tensor connected to the autograd graph?
        return bool(meta is not None and getattr(meta, "grad_fn", False))
    if aspect == "type":
        return "tensor" if meta is not None and hasattr(meta, "dtype") else type(value).__name__
    if aspect == "dtype":
        return getattr(meta, "dtype", None)
    if aspect == "device":
        return getattr(meta, "device", None)
    if aspect == "shape":
        return getattr(meta, "shape", None) or np.shape(value)
    raise ValueError(f"unknown aspect {aspect!r}")


def aspects_equal(a, b, aspect: str, atol: float) -> bool:
    if aspect == "value" or aspect.startswith("grad:"):
        if a is None or b is None:
            return a is None and b is None
        return same_numbers(a, b, atol)
    return a == b


class Hints:
    """Bound to the reference worker (answer key + mutants loaded) and the mutant list."""

    def __init__(self, reference_proxy, mutants: list[Mutant]):
        self.reference = reference_proxy
        self.mutants = list(mutants)

    @classmethod
    def for_assignment(cls, reference_proxy, assignment) -> "Hints":
        return cls(reference_proxy, load_mutants(assignment))

    def of(self, function: str) -> list[Mutant]:
        return [m for m in self.mutants if m.function == function]

    def matching(self, function: str, args=(), kwargs=None, student=None, *,
                 aspect: str = "value", index=None, backward=None, atol: float = ATOL,
                 reference=None) -> list[Mutant]:
        """The mutants whose ``aspect`` of the output, on these inputs, equals the student's and
        differs from the answer key's. ``student`` is the student's proxy ``Returned``."""
        kwargs = dict(kwargs or {})
        if reference is None:
            reference = self._call(function, args, kwargs, backward)
        if reference is None:
            return []
        want = aspect_of(student, aspect, index)
        ref = aspect_of(reference, aspect, index)
        found = []
        for m in self.of(function):
            got = self._call(MUTANT_PREFIX + m.name, args, kwargs, backward)
            if got is None:
                continue
            mine = aspect_of(got, aspect, index)
            if aspects_equal(mine, want, aspect, atol) and not aspects_equal(mine, ref, aspect,
                                                                              atol):
                found.append(m)
        return found

    def explain(self, function: str, args=(), kwargs=None, student_value=None, *,
                aspect: str = "value", index=None, backward=None, atol: float = ATOL,
                expected=None) -> str:
        """A sentence for the student: the matching mistakes' hints, or where the numbers first
        differ. ``student_value`` is the student's proxy ``Returned`` (or a plain value)."""
        student = student_value if hasattr(student_value, "value") else _Plain(student_value)
        reference = self._call(function, args, kwargs or {}, backward)
        found = self.matching(function, args, kwargs, student, aspect=aspect, index=index,
                              backward=backward, atol=atol, reference=reference) \
            if reference is not None else []
        if found:
            hints = []
            for m in found:
                if m.hint not in hints:
                    hints.append(m.hint)
            return "Your result matches a known mistake: " + " Or: ".join(hints)
        if aspect == "value" or aspect.startswith("grad:"):
            want = expected if expected is not None else \
                (aspect_of(reference, aspect, index) if reference is not None else None)
            got = aspect_of(student, aspect, index)
            a, e = numeric(got), numeric(want)
            if isinstance(a, np.ndarray) and isinstance(e, np.ndarray):
                if a.shape != e.shape and a.size != e.size:
                    return f"The shape is {a.shape}, expected {e.shape}."
                diff = first_difference(a.ravel(), e.ravel(), atol=atol)
                if diff:
                    return f"The first wrong number is {diff}."
        return ""

    def _call(self, name, args, kwargs, backward):
        from autograder import proxy

        try:
            if backward is not None:
                return self.reference.call(name, *args, backward=backward, **kwargs)
            return self.reference.call(name, *args, **kwargs)
        except (proxy.StudentError, proxy.NotDefined):
            return None


class _Plain:
    """A plain value dressed as a proxy ``Returned`` (for explain on already-decoded values)."""

    def __init__(self, value):
        self.value, self.meta, self.grads, self.mutated = value, None, {}, {}
