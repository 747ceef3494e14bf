"""Hints: explain a wrong answer by matching it against known mistakes, computed, never guessed.

Each assignment's ``assignments/<name>/mutants.py`` lists ``Mutant``s: a textual change to
one function's solution cell in the source notebook (the answer key), with a plain-words hint.
The reference worker loads every mutant next to the answer key (``mutant_cells``), each wrapped
so that it defines only ``_mutant_<name>``. When a suite finds a wrong output it asks
``Hints.explain``. The rules of a hint (``Hints.hint``):

- **Two inputs.** A mutant's hint is shown only when the student's output equals the mutant's on
  every input tried (the failing one and the suite's probes, ``HINT_PROBES`` of the
  assignment's ``hidden_inputs.py``: new inputs of the same form, dtype, leaves and keyword
  arguments, one of them spread wide; and the same with the default keyword arguments when the
  test gave others), and the mutant differs from the answer key on at least two of them. One
  input, often a degenerate one (a single action, a batch of one), never decides.
- **The whole output.** "Equal" means the whole returned value (every item of a tuple, its
  numbers and types) and the aspect the test looks at (a gradient, the dtype, the inputs
  changed ...).
- **A missing gradient never matches a number**, and a missing value is never read as a number.
- **At most one hint.** When mutants with different hints all match, none is shown.

When no hint is shown, the message is the first wrong number and its position ((row, token)
for a 2-D output). A hint therefore never claims more than a computation showed.
"""
from __future__ import annotations

import re
import zlib
import textwrap
from dataclasses import dataclass

import numpy as np

MUTANT_PREFIX = "_mutant_"
ATOL = 1e-4
MIN_DISTINGUISHING_INPUTS = 2
HINT_PREFIX = "Your result matches a known mistake: "


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


def load_probes(assignment) -> dict:
    """``HINT_PROBES`` of the assignment's ``hidden_inputs.py``: {function: probe(rng, args,
    kwargs) -> [(args, kwargs), ...]}, new inputs shaped like the given ones."""
    module = _suite_module(assignment, "hidden_inputs")
    return dict(getattr(module, "HINT_PROBES", {})) if module else {}


def load_correct_variants(assignment) -> list[CorrectVariant]:
    module = _suite_module(assignment, "mutants")
    return list(getattr(module, "CORRECT_VARIANTS", [])) if module else []


def _suite_module(assignment, name: str):
    """The module ``name`` of the assignment's folder (``autograder.plugins``), or None."""
    from autograder.plugins import assignment_module, has_module

    if not has_module(assignment, name):
        return None
    return assignment_module(assignment, name)


def mutant_cells(assignment, mutants: list[Mutant] | None = None) -> list[dict]:
    """Extra cells for the reference worker's load, after the answer key's cells: one per
    mutant, each defining ``_mutant_<name>`` only. A mutant that does not apply raises
    MutantError (``tests/assignments/test_mutants.py`` checks that every one applies)."""
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
    if value is None:       # a missing value (no gradient) is not a number
        return None
    if isinstance(value, tuple):
        parts = [numeric(v) for v in value]
        return None if any(p is None for p in parts) else tuple(parts)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
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


def first_wrong(actual, expected, atol: float) -> str:
    """The first number out of tolerance, as ``mistakes.first_difference`` words it (a 2-D
    position as (row, token); the expected value only where it may be shown); "" when the two
    are not arrays of one shape."""
    from autograder.mistakes import first_difference

    a, e = numeric(actual), numeric(expected)
    if not isinstance(a, np.ndarray) or not isinstance(e, np.ndarray) or a.shape != e.shape:
        return ""
    return first_difference(a, e, atol)


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
    """Bound to the reference worker (answer key + mutants loaded), the mutant list, the suite's
    probes and, once the session has one, the student's proxy (``student``)."""

    def __init__(self, reference_proxy, mutants: list[Mutant], probes: dict | None = None,
                 student=None):
        self.reference = reference_proxy
        self.mutants = list(mutants)
        self.probes = dict(probes or {})
        self.student = student

    @classmethod
    def for_assignment(cls, reference_proxy, assignment) -> "Hints":
        return cls(reference_proxy, load_mutants(assignment), load_probes(assignment))

    def of(self, function: str) -> list[Mutant]:
        return [m for m in self.mutants if m.function == function]

    def hint(self, function: str, args=(), kwargs=None, student=None, *, aspect: str = "value",
             index=None, backward=None, atol: float = ATOL, student_call=None) -> str:
        """The one mistake the student's output shows, by the rules of the module docstring, or
        "". ``student`` is the student's proxy ``Returned`` on ``args``; ``student_call(args,
        kwargs, backward)`` calls the student's function on a probe (default: the student's
        proxy)."""
        kwargs = dict(kwargs or {})
        mutants = self.of(function)
        probe = self.probes.get(function)
        if student_call is None and self.student is not None:
            def student_call(a, kw, bw):
                return self._call(self.student, function, a, kw, bw, raise_errors=True)
        if not mutants or probe is None or student_call is None or student is None:
            return ""
        rng = np.random.default_rng(zlib.crc32(function.encode()))
        inputs = [(tuple(args), kwargs, student)]
        probes = [(tuple(a), dict(kw)) for a, kw in probe(rng, tuple(args), kwargs)]
        if kwargs:   # the defaults too: lam = 0 makes many recursion mistakes coincide
            probes += [(a, {}) for a, _ in probes[:2]]
        try:
            for a, kw in probes:
                inputs.append((a, kw, student_call(a, kw, backward)))
        except Exception:   # the student's code fails on a probe: nothing can be confirmed
            return ""
        refs = [self._call(self.reference, function, a, kw, backward) for a, kw, _ in inputs]
        found: list[str] = []
        for m in mutants:
            agree, differ = True, 0
            for (a, kw, mine), ref in zip(inputs, refs):
                got = self._call(self.reference, MUTANT_PREFIX + m.name, a, kw, backward)
                if got is None or not _same(got, mine, aspect, index, atol):
                    agree = False
                    break
                if ref is not None and not _same(got, ref, aspect, index, atol):
                    differ += 1
            if agree and differ >= MIN_DISTINGUISHING_INPUTS and m.hint not in found:
                found.append(m.hint)
        return found[0] if len(found) == 1 else ""

    def explain(self, function: str, args=(), kwargs=None, student_value=None, *,
                aspect: str = "value", index=None, backward=None, atol: float = ATOL,
                expected=None, student_call=None) -> str:
        """A sentence for the student: the one mistake the output shows, or where the numbers
        first differ. ``student_value`` is the student's proxy ``Returned`` (or a plain
        value)."""
        student = student_value if hasattr(student_value, "value") else _Plain(student_value)
        hint = self.hint(function, args, kwargs, student, aspect=aspect, index=index,
                         backward=backward, atol=atol, student_call=student_call) \
            if hasattr(student_value, "value") else ""
        if hint:
            return HINT_PREFIX + hint
        if aspect == "value" or aspect.startswith("grad:"):
            got = aspect_of(student, aspect, index)
            want = expected
            if want is None:
                ref = self._call(self.reference, function, args, kwargs or {}, backward)
                want = aspect_of(ref, aspect, index) if ref is not None else None
            a, e = numeric(got), numeric(want)
            if isinstance(a, np.ndarray) and isinstance(e, np.ndarray):
                if a.shape != e.shape and a.size != e.size:
                    return f"The shape is {a.shape}, expected {e.shape}."
                diff = first_wrong(a.reshape(e.shape), e, atol)
                if diff:
                    return f"The first wrong number is {diff}."
        return ""

    @staticmethod
    def _call(proxy, name, args, kwargs, backward, raise_errors: bool = False):
        from autograder import proxy as proxies

        try:
            if backward is not None:
                return proxy.call(name, *args, backward=backward, **kwargs)
            return proxy.call(name, *args, **kwargs)
        except (proxies.StudentError, proxies.NotDefined):
            if raise_errors:
                raise
            return None


def _types(returned):
    """The type of the output, or of every item of a returned tuple ("tensor", "float", ...)."""
    if isinstance(returned.value, tuple):
        return tuple(aspect_of(returned, "type", i) for i in range(len(returned.value)))
    return aspect_of(returned, "type")


def _same(a, b, aspect: str, index, atol: float) -> bool:
    """Two proxy replies agree on the whole value, the types of its items, and ``aspect`` (of
    every item of a returned tuple, for the type, dtype, shape, device and graph aspects)."""
    if not aspects_equal(aspect_of(a, "value"), aspect_of(b, "value"), "value", atol):
        return False
    if _types(a) != _types(b):
        return False
    if aspect == "value":
        return True
    indices: list | range = [index]
    if index is not None and isinstance(a.value, tuple) and isinstance(b.value, tuple) and \
            aspect in ("graph", "type", "dtype", "device", "shape"):
        indices = range(len(a.value)) if len(a.value) == len(b.value) else [index]
    return all(aspects_equal(aspect_of(a, aspect, i), aspect_of(b, aspect, i), aspect, atol)
               for i in indices)


class _Plain:
    """A plain value dressed as a proxy ``Returned`` (for explain on already-decoded values)."""

    def __init__(self, value):
        self.value, self.meta, self.grads, self.mutated = value, None, {}, {}


def shaped_like(template, data):
    """``data`` (numbers) in the form of the input ``template``: a ``Tensor`` of its dtype with
    its ``requires_grad`` and leaf name, a ``Computed`` of such a leaf, a list, or a float (the
    first number). Hint probes use it to build new inputs of the same form as a test's."""
    from autograder.proxy import Computed, Tensor

    arr = np.asarray(data, dtype=np.float64)
    if isinstance(template, Computed):
        return Computed(shaped_like(template.of, arr))
    if isinstance(template, Tensor):
        dtype = np.asarray(template.data).dtype
        return Tensor(arr.astype(dtype) if dtype != np.bool_ else arr != 0,
                      requires_grad=template.requires_grad, name=template.name)
    if isinstance(template, (list, tuple)):
        return arr.tolist()
    return float(arr.ravel()[0])
