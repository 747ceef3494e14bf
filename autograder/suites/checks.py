"""Checks every assignment's hidden suites share (trusted parent; numpy only).

Expected values always come from the reference worker (the source notebook's solution cells)
called on the very same inputs; ``backed_by`` holds the reference to a documented value, and a
disagreement there is a ``GraderError`` (the kit's fault, never the student's). ``Mistake`` is the
student's: its message is what the student reads.

Two rules hold for every suite because they live here:

- **Student values are read only through these helpers** (``numbers``, ``scalar``, ``item``,
  ``tuple_of``, ``grad_of``, ``is_tensor``, ``matches``, ``expect_values``). Whatever the worker
  sent back (a tensor of any shape or dtype, NaN, huge numbers, nested tuples, strings,
  ``Other``, ``TooLarge``), they either return plain float64 numbers or raise ``Mistake`` with a
  message; no student value can raise anything else (``tests/grade/test_no_grader_error.py``).
- **Expected values are withheld** from the feedback unless a comparison is declared to be on
  inputs that are new for every submission (``per_submission=True``): a hidden input that every
  submission sees again would otherwise be an oracle (docs/grading.md, "Hidden inputs and
  what the feedback shows").
"""
from __future__ import annotations

import warnings

import numpy as np

from autograder.mistakes import Mistake, revealing
from autograder.sandbox.protocol import Other, TooLarge

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
    if isinstance(value, Other):       # what the worker could not send: its type, in words
        return f"an object of type {value.type}"
    if isinstance(value, TooLarge):
        return f"a {value.type} too large to check (shape {tuple(value.shape)})"
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def numbers(value, what: str) -> np.ndarray:
    """The returned value as float64 numbers (tensors, arrays, numbers, and lists or tuples of
    them, all of one shape); a Mistake for anything else: strings, None, complex numbers,
    ragged or nested containers of other things, values the worker could not send."""
    def refuse(why: str = "") -> Mistake:
        return Mistake(f"{what} returned {describe(value)}, which cannot be read as numbers"
                       + (f" ({why})" if why else ""))

    if value is None or isinstance(value, (str, bytes, dict)):
        raise refuse()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = np.asarray(value)
            if raw.dtype.kind not in "biuf":
                raise refuse("complex numbers" if raw.dtype.kind == "c" else "")
            return np.asarray(raw, dtype=np.float64)
    except Mistake:
        raise
    except (TypeError, ValueError, OverflowError, RecursionError, MemoryError):
        raise refuse() from None


def scalar(value, what: str) -> float:
    """One number (a 0-dim tensor, a one-element tensor or a float); a Mistake for anything
    else, e.g. a per-sample (unreduced) loss. ``what`` names the output ("policy_loss")."""
    try:
        arr = numbers(value, what)
    except Mistake:
        raise Mistake(f"{what} is {describe(value)}, which cannot be read as a number") from None
    if arr.size != 1:
        raise Mistake(f"{what} is {describe(value)}; it must be a single number (a 0-dim "
                      "tensor), e.g. a mean over the batch")
    return float(arr.reshape(()))


def item(values, index: int, what: str):
    """``values[index]`` of a returned tuple or list; a Mistake when there is no such item."""
    if not isinstance(values, (tuple, list)) or not -len(values) <= index < len(values):
        raise Mistake(f"{what} returned {describe(values)}; there is no output {index + 1}")
    return values[index]


def grad_of(returned, leaf: str) -> np.ndarray | None:
    """The gradient the worker reported for ``leaf`` as float64 numbers, or None when no
    gradient reached it; a Mistake when what came back cannot be read as numbers."""
    grad = (getattr(returned, "grads", None) or {}).get(leaf)
    return None if grad is None else numbers(grad, f"the gradient with respect to {leaf}")


def matches(value, want, what: str, atol: float = ATOL, rtol: float = 0.0) -> bool:
    """Whether the student's ``value`` has ``want``'s shape and numbers (within tolerance);
    a Mistake when it cannot be read as numbers."""
    a, e = numbers(value, what), np.asarray(want, dtype=np.float64)
    with np.errstate(all="ignore"):
        return a.shape == e.shape and bool(np.allclose(a, e, atol=atol, rtol=rtol))


def tuple_of(returned, n: int, function: str) -> tuple:
    """The ``n`` outputs of a returned tuple (or list, or tuple subclass)."""
    value = returned.value
    if not isinstance(value, (tuple, list)) or len(value) != n:
        raise Mistake(f"{function} must return a tuple of {n} values; it returned "
                      f"{describe(value)}")
    return tuple(value)


def expect_values(got, want, what: str, explain=lambda: "", atol: float = ATOL,
                  rtol: float = 0.0, *, per_submission: bool = False) -> None:
    """``got`` (the student's, any numeric form) must match ``want`` (the reference's) within
    ``atol + rtol * |want|``; ``explain()`` adds what the mistake probably is. Expected values
    appear in the message only with ``per_submission=True``: declare it only when every input
    of the comparison is drawn from ``rng`` (new for every submission)."""
    a = numbers(got, what)
    e = np.asarray(want, dtype=np.float64)

    def detail() -> str:
        with revealing(per_submission):
            text = explain()
        return f" {text}" if text else ""

    if a.shape != e.shape:
        if a.size == e.size == 1:
            a = a.reshape(e.shape)
        else:
            raise Mistake(f"{what}: expected shape {e.shape}, got shape {a.shape}." + detail())
    if not np.all(np.isfinite(a)) and np.all(np.isfinite(e)):
        raise Mistake(f"{what}: the result contains NaN or infinite values." + detail())
    with np.errstate(all="ignore"):
        close = np.allclose(a, e, atol=atol, rtol=rtol)
    if not close:
        raise Mistake(f"{what}: the numbers are wrong." + detail())


def against_reference(student, reference, hints, function: str, what: str, args, kwargs=None,
                      *, fixed=None, backward=None, rtol: float = 0.0,
                      per_submission: bool = False):
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
                                        expected=ref.value), rtol=rtol,
                  per_submission=per_submission)
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
