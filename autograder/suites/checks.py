"""Checks every assignment's hidden suites share (trusted parent; numpy only).

Expected values always come from the reference worker (the source notebook's solution cells)
called on the very same inputs; ``backed_by`` holds the reference to a documented value, and a
disagreement there is a ``GraderError`` (the kit's fault, never the student's). ``Mistake`` is the
student's: its message is what the student reads.
"""
from __future__ import annotations

import numpy as np

from autograder.feedback import Mistake

ATOL = 1e-4          # float32 everywhere; several wrong answers differ by only ~0.02


class GraderError(RuntimeError):
    """The reference does not reproduce a documented value: a bug in the kit, not the student."""


def backed_by(reference_value, fixed, what: str, atol: float = ATOL) -> None:
    """The reference must reproduce the documented value ``fixed``."""
    got = np.asarray(reference_value, dtype=np.float64)
    want = np.asarray(fixed, dtype=np.float64)
    if got.shape != want.shape or not np.allclose(got, want, atol=atol, rtol=0):
        raise GraderError(f"the answer key gives {got.tolist()} for {what}, the documented value "
                          f"is {want.tolist()}")


def is_tensor(returned, index=None) -> bool:
    """Whether the student returned a tensor (``index``: as that item of a returned tuple)."""
    meta = returned.meta
    if index is not None:
        meta = meta[index] if isinstance(meta, (tuple, list)) and -len(meta) <= index < len(meta) \
            else None
    return meta is not None and hasattr(meta, "dtype") and hasattr(meta, "shape")


def describe(value) -> str:
    """What a returned value is, in words a student knows."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {tuple(value.shape)}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if value is None:
        return "None"
    return f"a {type(value).__name__}"


def numbers(value, what: str) -> np.ndarray:
    """The returned value as float64 numbers (tensors, lists, arrays and floats all convert);
    a Mistake when it cannot be read as numbers at all."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise Mistake(f"{what} returned {describe(value)}, which cannot be read as numbers") \
            from None


def tuple_of(returned, n: int, function: str) -> tuple:
    value = returned.value
    if not isinstance(value, (tuple, list)) or len(value) != n:
        raise Mistake(f"{function} must return a tuple of {n} values; it returned "
                      f"{describe(value)}")
    return tuple(value)


def expect_values(got, want, what: str, explain=lambda: "", atol: float = ATOL,
                  rtol: float = 0.0) -> None:
    """``got`` (the student's, any numeric form) must match ``want`` (the reference's) within
    ``atol + rtol * |want|``; ``explain()`` adds what the mistake probably is."""
    a = numbers(got, what)
    e = np.asarray(want, dtype=np.float64)
    if a.shape != e.shape:
        if a.size == e.size == 1:
            a = a.reshape(e.shape)
        else:
            detail = explain()
            raise Mistake(f"{what}: expected shape {e.shape}, got shape {a.shape}."
                          + (f" {detail}" if detail else ""))
    if not np.all(np.isfinite(a)) and np.all(np.isfinite(e)):
        detail = explain()
        raise Mistake(f"{what}: the result contains NaN or infinite values."
                      + (f" {detail}" if detail else ""))
    if not np.allclose(a, e, atol=atol, rtol=rtol):
        detail = explain()
        raise Mistake(f"{what}: the numbers are wrong." + (f" {detail}" if detail else ""))


def against_reference(student, reference, hints, function: str, what: str, args, kwargs=None,
                      *, fixed=None, backward=None, rtol: float = 0.0):
    """Call ``function`` on the same ``args`` in the reference worker (held to the documented
    value ``fixed`` when given) and in the student's; the student's value must match, and a
    mismatch says what the mistake probably is. Returns ``(got, ref)``, the proxies' replies."""
    kwargs = kwargs or {}
    ref = reference.call(function, *args, backward=backward, **kwargs)
    if fixed is not None:
        backed_by(ref.value, fixed, what)
    got = student.call(function, *args, backward=backward, **kwargs)
    expect_values(got.value, ref.value, what,
                  lambda: hints.explain(function, args, kwargs, got, backward=backward,
                                        expected=ref.value), rtol=rtol)
    return got, ref


def expect_tensor(got, hints, function: str, args, *, contract: str, shape: tuple, on: str,
                  why: str = "") -> None:
    """The student's reply ``got`` must be a tensor (``contract`` says which, in words) of
    ``shape``; ``on`` describes the inputs and ``why`` what the shape means."""
    if not is_tensor(got):
        hint = hints.explain(function, args, {}, got, aspect="type")
        raise Mistake(f"{function} returned {describe(got.value)}; the contract asks for "
                      f"{contract}." + (f" {hint}" if hint else ""))
    if tuple(got.meta.shape) != tuple(shape):
        hint = hints.explain(function, args, {}, got, aspect="shape")
        raise Mistake(f"{function} on {on} returned shape {tuple(got.meta.shape)}; expected "
                      f"{tuple(shape)}{why}." + (f" {hint}" if hint else ""))
