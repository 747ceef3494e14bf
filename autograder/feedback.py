"""What a failing test tells the student. Suites raise Mistake; nothing else reaches a student."""
from __future__ import annotations

import numpy as np


class Mistake(AssertionError):
    """A student-facing failure. ``str(m)`` is shown as the test's output, as written."""


def first_difference(actual, expected, atol: float, rtol: float = 0.0) -> str:
    """'at position 2: got 1.5, expected 2.538' for the first element out of tolerance."""
    a = np.asarray(actual, dtype=np.float64).ravel()
    e = np.asarray(expected, dtype=np.float64).ravel()
    bad = ~np.isclose(a, e, atol=atol, rtol=rtol, equal_nan=False)
    if not bad.any():
        return ""
    i = int(np.argmax(bad))
    return f"at position {i}: got {a[i]:.6g}, expected {e[i]:.6g} (difference {a[i] - e[i]:+.3g})"


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Mistake(message)
