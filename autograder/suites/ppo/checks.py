"""Shared checks for the ``ppo`` suites (trusted parent; numpy only).

Expected values always come from the reference worker (the source notebook's solution cells)
called on the very same inputs. The fixed values of the grading-validity notes back the reference
up: if the reference disagrees with one, that is a grader error (``GraderError``), never the
student's fault, and the plugin reports it as such.
"""
from __future__ import annotations

import numpy as np

from autograder.feedback import Mistake

ATOL = 1e-4          # float32 everywhere; several wrong answers differ by only ~0.02
RTOL = 0.0           # absolute tolerance only: at most 1e-4 anywhere


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
    meta = returned.meta if index is None else _item(returned.meta, index)
    return meta is not None and hasattr(meta, "dtype") and hasattr(meta, "shape")


def _item(seq, index):
    if isinstance(seq, (tuple, list)) and -len(seq) <= index < len(seq):
        return seq[index]
    return None


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
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise Mistake(f"{what} returned {describe(value)}, which cannot be read as numbers") \
            from None
    return arr


def tuple_of(returned, n: int, function: str) -> tuple:
    value = returned.value
    if not isinstance(value, (tuple, list)) or len(value) != n:
        raise Mistake(f"{function} must return a tuple of {n} values; it returned "
                      f"{describe(value)}")
    return tuple(value)


def expect_values(got, want, what: str, explain=lambda: "", atol: float = ATOL) -> None:
    """``got`` (the student's, any numeric form) must match ``want`` (the reference's)."""
    a = numbers(got, what)
    e = np.asarray(want, dtype=np.float64)
    if a.shape != e.shape:
        if a.size == e.size and a.size == 1:
            a = a.reshape(e.shape)
        else:
            detail = explain()
            raise Mistake(f"{what}: expected shape {e.shape}, got shape {a.shape}."
                          + (f" {detail}" if detail else ""))
    if not np.all(np.isfinite(a)) and np.all(np.isfinite(e)):
        raise Mistake(f"{what}: the result contains NaN or infinite values.")
    if not np.allclose(a, e, atol=atol, rtol=RTOL):
        detail = explain()
        raise Mistake(f"{what}: the numbers are wrong." + (f" {detail}" if detail else ""))


def random_episode(rng: np.random.Generator, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Hidden rewards (T,) and values (T+1,), bootstrap value never 0."""
    rewards = rng.normal(0.5, 1.0, size=steps)
    values = rng.normal(0.0, 1.0, size=steps + 1)
    values[-1] = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 2.0)
    return rewards, values


def random_ppo_batch(rng: np.random.Generator, n: int) -> dict:
    """Hidden PPO inputs: ratios spread on both sides of the clip range, advantages of both
    signs, values and returns that differ everywhere (so broadcasting would show)."""
    lp_old = -rng.uniform(0.2, 3.0, size=n)
    lp_new = lp_old + rng.normal(0.0, 0.35, size=n)
    adv = rng.normal(0.0, 1.0, size=n)
    adv[0], adv[1] = abs(adv[0]) + 0.1, -abs(adv[1]) - 0.1   # both signs, always
    values = rng.normal(0.0, 1.0, size=n)
    returns = values + rng.normal(0.0, 1.0, size=n)
    return {"lp_new": lp_new, "lp_old": lp_old, "adv": adv, "values": values,
            "returns": returns}
