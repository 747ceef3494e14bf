"""Mistake, what a failing test tells the student, and how a numeric difference is worded.

Suites raise Mistake; nothing else reaches a student."""
from __future__ import annotations

import contextlib
import contextvars

import numpy as np


class Mistake(AssertionError):
    """A student-facing failure. ``str(m)`` is shown as the test's output, as written."""


_REVEAL = contextvars.ContextVar("reveal_expected_values", default=False)


@contextlib.contextmanager
def revealing(allowed: bool = True):
    """Within this block ``first_difference`` may show expected values. Open it only around a
    comparison on inputs that are new for every submission (``checks.expect_values(...,
    per_submission=True)``): an expected value on an input that every submission sees again can
    be harvested into a lookup table (docs/grading.md, "Hidden inputs and what the feedback
    shows")."""
    token = _REVEAL.set(bool(allowed))
    try:
        yield
    finally:
        _REVEAL.reset(token)


def first_difference(actual, expected, atol: float, rtol: float = 0.0) -> str:
    """'at position 2: yours is 1.5' for the first element out of tolerance (a 2-D position as
    '(row 1, token 3)'); inside ``revealing()`` also the expected value: 'at position 2: got
    1.5, expected 2.538 (...)'. The one place a numeric difference is written for a student."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        a, e = a.ravel(), e.ravel()
        if a.shape != e.shape:
            return ""
    bad = ~np.isclose(a, e, atol=atol, rtol=rtol, equal_nan=False)
    if not bad.any():
        return ""
    flat = int(np.argmax(bad.ravel()))
    where = np.unravel_index(flat, a.shape) if a.ndim else ()
    position = (f"(row {where[0]}, token {where[1]})" if a.ndim == 2 else
                ", ".join(str(int(i)) for i in where) or "0")
    x, y = float(a.ravel()[flat]), float(e.ravel()[flat])
    if not _REVEAL.get():
        return f"at position {position}: yours is {x:.6g}"
    return f"at position {position}: got {x:.6g}, expected {y:.6g} (difference {x - y:+.3g})"


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Mistake(message)
