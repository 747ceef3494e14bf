"""The rules of a hint (``autograder/hints.py``), on fake proxies (no worker, no torch).

A fake proxy computes numpy functions: the answer key ``f``, mutants ``_mutant_<name>``, and the
student's function. Each rule is tested with a case it must reject and one it must accept.
"""
from __future__ import annotations

import numpy as np

from autograder.mistakes import revealing

from autograder.hints import HINT_PREFIX, Hints, Mutant, first_wrong
from autograder.proxy import Returned


class FakeProxy:
    def __init__(self, functions: dict):
        self.functions = functions
        self.calls = 0

    def call(self, name, *args, backward=None, **kwargs):
        self.calls += 1
        out = self.functions[name](*args, **kwargs)
        grads = {}
        if isinstance(out, dict):         # {"value": ..., "grad": array or None}
            grads = {"x": out["grad"]}
            out = out["value"]
        return Returned(value=out, meta=None, grads=grads, mutated={}, seconds=0.0)


def key(x):
    return float(np.mean(x))


def probes(rng, args, kwargs):
    return [((rng.normal(size=n),), kwargs) for n in (3, 4, 5)]


def hints_for(mutants: dict, student_fn, hint_texts: dict | None = None, probe=probes):
    reference = FakeProxy({"f": key, **{f"_mutant_{n}": fn for n, fn in mutants.items()}})
    student = FakeProxy({"f": student_fn})
    ms = [Mutant(n, "f", None, "", (hint_texts or {}).get(n, f"hint of {n}")) for n in mutants]
    return Hints(reference, ms, {"f": probe} if probe else {}, student=student), student


def explain(h, student, x):
    got = student.call("f", x)
    return h.explain("f", (x,), {}, got)


def test_a_mistake_matched_on_a_degenerate_input_only_is_not_named():
    """On a single number both 'baseline subtracted' (x - mean) and 'renormalised' give 0."""
    h, student = hints_for({"renormalised": lambda x: float(np.mean(x - np.log(np.sum(np.exp(x)))))
                            if np.size(x) > 1 else 0.0},
                           lambda x: float(np.mean(x - np.mean(x))))
    message = explain(h, student, np.asarray([0.7]))
    assert HINT_PREFIX not in message


def test_a_mistake_confirmed_on_the_probes_is_named():
    h, student = hints_for({"sum": lambda x: float(np.sum(x))}, lambda x: float(np.sum(x)))
    message = explain(h, student, np.asarray([0.5, 1.5]))
    assert message == HINT_PREFIX + "hint of sum"


def test_two_inputs_where_the_mistake_differs_are_needed():
    """A mutant that equals the key on every probe (it differs on the failing input only) is
    not confirmed, even though the student matches it everywhere."""
    def odd(x):
        return 99.0 if np.size(x) == 2 else key(x)
    h, student = hints_for({"odd": odd}, odd)
    assert HINT_PREFIX not in explain(h, student, np.asarray([0.5, 1.5]))


def test_without_probes_or_a_student_to_call_no_hint_is_shown():
    h, student = hints_for({"sum": lambda x: float(np.sum(x))}, lambda x: float(np.sum(x)),
                           probe=None)
    assert HINT_PREFIX not in explain(h, student, np.asarray([0.5, 1.5]))


def test_at_most_one_hint_and_none_when_two_disagree():
    same = lambda x: float(np.sum(x))          # noqa: E731
    h, student = hints_for({"a": same, "b": same}, same, {"a": "one story", "b": "another"})
    assert HINT_PREFIX not in explain(h, student, np.asarray([0.5, 1.5]))
    h, student = hints_for({"a": same, "b": same}, same, {"a": "one story", "b": "one story"})
    assert explain(h, student, np.asarray([0.5, 1.5])) == HINT_PREFIX + "one story"


def test_a_missing_gradient_never_matches_a_number_nor_reads_as_one():
    def student_fn(x):
        return {"value": key(x), "grad": None}

    def mutant_fn(x):
        return {"value": key(x), "grad": np.zeros(np.size(x))}
    reference = FakeProxy({"f": lambda x: {"value": key(x), "grad": np.ones(np.size(x))},
                           "_mutant_zero": mutant_fn})
    student = FakeProxy({"f": student_fn})
    h = Hints(reference, [Mutant("zero", "f", None, "", "zero grad")], {"f": probes},
              student=student)
    x = np.asarray([0.5, 1.5, 2.0])
    got = student.call("f", x)
    message = h.explain("f", (x,), {}, got, aspect="grad:x")
    assert message == "", message            # no hint, and no "shape ()" from a missing value


def test_the_whole_output_must_match_not_one_item():
    """A tuple whose first item matches a mutant's but whose second does not: no hint."""
    def key2(x):
        return (float(np.mean(x)), float(np.max(x)))
    reference = FakeProxy({"f": key2, "_mutant_order": lambda x: (float(np.max(x)),
                                                                  float(np.mean(x)))})
    student = FakeProxy({"f": lambda x: (float(np.max(x)), 7.0)})
    h = Hints(reference, [Mutant("order", "f", None, "", "wrong order")], {"f": probes},
              student=student)
    x = np.asarray([0.5, 1.5])
    got = student.call("f", x)
    assert HINT_PREFIX not in h.explain("f", (x,), {}, got, index=0)


def test_2d_positions_are_row_and_token():
    a = np.zeros((3, 4))
    e = a.copy()
    e[2, 1] = 1.0
    assert first_wrong(a, e, 1e-4) == "at position (row 2, token 1): yours is 0"
    with revealing():                         # a per-submission input may show the expected value
        assert first_wrong(a, e, 1e-4).startswith("at position (row 2, token 1): got 0, expected 1")
    assert first_wrong(np.zeros(3), np.asarray([0.0, 2.0, 0.0]), 1e-4).startswith(
        "at position 1:")
