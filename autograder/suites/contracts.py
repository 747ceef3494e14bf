"""The inputs-not-modified check every function's suite runs (trusted parent; numpy only).

A function must leave its inputs as they were. Two sources say whether it did:

- **The parent's own comparison.** The call is made with ``echo_args``: the worker sends back
  every argument's contents after the call, read like a returned value, and the parent compares
  them with the numbers it sent (exact bytes, shape and type). This rests on no flag the worker
  computes, only on values, as every score does.
- **The worker's report** (``Returned.mutated``): the worker fingerprints each argument before and
  after the call. It also sees inputs built inside the worker (log-probabilities gathered from a
  logits leaf), whose numbers the parent never had; like all worker metadata it is a claim.

Either one finding a change costs the test, with a message that names the input by its name in
the contract. The test counts only for a function that returns an answer (numbers): a stub that
returns None does not earn it.
"""
from __future__ import annotations

import numpy as np

from autograder.mistakes import Mistake


def _sent(x):
    """The numbers the parent sent for one argument, or None when it built them in the worker."""
    from autograder.proxy import Computed, Tensor

    if isinstance(x, Computed):
        return _sent(x.of)
    if isinstance(x, Tensor):
        return np.asarray(x.data)
    if isinstance(x, (list, float, int)) and not isinstance(x, bool):
        return x
    return None


def _unchanged(sent, after) -> bool:
    if isinstance(sent, np.ndarray):
        try:
            got = np.asarray(after)
        except (TypeError, ValueError):
            return False
        if not isinstance(after, np.ndarray) or got.shape != sent.shape:
            return False
        if sent.dtype == np.bool_:
            return got.dtype == np.bool_ and bool(np.array_equal(got, sent))
        return bool(np.array_equal(got.astype(np.float64), sent.astype(np.float64),
                                   equal_nan=True))
    if isinstance(sent, list):
        if not isinstance(after, list) or len(after) != len(sent):
            return False
        return all(_unchanged(s, a) for s, a in zip(sent, after))
    try:
        return type(after) is type(sent) and (after == sent or (after != after and
                                                                 sent != sent))
    except Exception:   # noqa: BLE001 (an odd value that cannot be compared has changed)
        return False


def changed_inputs(got, args, kwargs, names) -> list[str]:
    """The contract names (``names``, one per positional argument) of the inputs that differ
    after the call ``got`` (made with ``echo_args=True``) from what was sent, by the parent's
    comparison or by the worker's report."""
    changed: list[str] = []
    after = got.args_after or {}
    after_args, after_kwargs = list(after.get("args") or []), dict(after.get("kwargs") or {})
    for i, x in enumerate(args):
        sent = _sent(x)
        label = names[i] if i < len(names) else f"argument {i + 1}"
        if sent is not None and i < len(after_args) and not _unchanged(sent, after_args[i]):
            changed.append(label)
    for k, x in (kwargs or {}).items():
        sent = _sent(x)
        if sent is not None and k in after_kwargs and not _unchanged(sent, after_kwargs[k]):
            changed.append(k)
    reported = [k for k, v in (got.mutated or {}).items() if v]
    for k in reported:    # the worker names parameters as the student's function does
        label = k
        if k.startswith("args[") and k.endswith("]") and k[5:-1].isdigit():
            i = int(k[5:-1])
            label = names[i] if i < len(names) else f"argument {i + 1}"
        elif k not in names and k not in (kwargs or {}):
            position = list(got.mutated).index(k)
            label = names[position] if position < len(names) else k
        if label not in changed:
            changed.append(label)
    return changed


def expect_inputs_unchanged(got, function: str, args, kwargs, names, what: str,
                            explain=lambda: "", outputs: int | None = None) -> None:
    """Raise a Mistake that names the changed inputs of ``function`` (called on ``what``);
    ``explain()`` adds what the mistake probably is. The function must also have returned an
    answer, numbers (``outputs`` of them in a tuple, when given): a stub that returns None or
    a string earns nothing here."""
    from autograder.suites.checks import numbers, tuple_of

    for value in (tuple_of(got, outputs, function) if outputs else (got.value,)):
        if value is None:      # numpy would read it as NaN
            raise Mistake(f"{function} returned None ({what}); it must return its result.")
        numbers(value, function)
    changed = changed_inputs(got, args, kwargs, names)
    if changed:
        hint = explain()
        raise Mistake(f"{function} changed its input {' and '.join(changed)} in place (called "
                      f"with {what}); it must leave its inputs as they were: work on new tensors "
                      "(no in-place operations such as += or .sub_() on an input, no writing "
                      "into it)." + (f" {hint}" if hint else ""))
