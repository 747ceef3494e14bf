"""No value a student's function returns can cause a grader error.

Property: for EVERY hidden unit test of both assignments, whatever the student's functions
return (see ``tests/odd_values.py``: wrong shapes, per-sample tensors, nested tuples, NaN,
non-tensors, huge values, tuple subclasses, ``$other`` and ``$toolarge`` values, exceptions,
in-place changes), the test ends as a scored test (passed, or failed with a message for the
student), never as a grader error. At least 50 examples per hidden test.

It runs in this process: the student's side is the worker's own ``Server`` with the chosen
functions in its namespace (``autograder/sandbox/fake.py``'s ``FakeWorker``: every value
crosses the real wire format, encoded by the worker's own encoder), the reference side is the
answer key and its mutants loaded the way the grader loads them. The training tests are left
out: they do not call a student function directly (their harness does, and its errors are its
own messages); ``test_training_tests_are_the_only_ones_left_out`` pins which ones those are.
"""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from autograder import REPO_ROOT
from autograder.assignments import load_assignment
from autograder.mistakes import Mistake
from autograder.hints import Hints
from autograder.proxy import Other, Returned, StudentProxy, TooLarge
from autograder.suites import checks
from autograder.sandbox.fake import FakeWorker, reference_worker
from odd_values import SPOILS, answer_with, build, specs
from suite_driver import hidden_tests, run_hidden_test

ASSIGNMENTS = ("ppo", "ppo_lm")
EXAMPLES = 50
TRAINING_CELLS = {"reinforce_training", "ppo_training", "lm_ppo_training"}


def _all_tests():
    return [t for name in ASSIGNMENTS for t in hidden_tests(load_assignment(name, REPO_ROOT))]


UNIT_TESTS = [t for t in _all_tests() if not t.is_training]


@pytest.fixture(scope="module")
def graders():
    """Per assignment: (assignment, reference proxy, hints), the answer key loaded once."""
    out = {}
    for name in ASSIGNMENTS:
        asg = load_assignment(name, REPO_ROOT)
        reference = StudentProxy(reference_worker(asg))
        out[name] = (asg, reference, Hints.for_assignment(reference, asg))
    return out


def test_training_tests_are_the_only_ones_left_out():
    left_out = {(t.assignment, t.grade_cell) for t in _all_tests() if t.is_training}
    assert {cell for _, cell in left_out} == TRAINING_CELLS
    assert len(UNIT_TESTS) >= 60


@pytest.mark.parametrize("test", UNIT_TESTS, ids=lambda t: f"{t.assignment}:{t.key}")
def test_odd_return_values_are_scored_never_grader_errors(test, graders):
    """Random odd values (50 examples), and every spoiled output of the correct answer."""
    asg, reference, hints = graders[test.assignment]
    functions = list(asg.solution_functions.values())
    key = reference._worker.server.ns      # the answer key's functions (trusted, in-process)
    examples = []

    def check(spec):
        worker, calls = FakeWorker(), itertools.count()
        worker.define(**{fn: _returning(spec, key[fn], calls) for fn in functions})
        result = run_hidden_test(test, student=StudentProxy(worker), reference=reference,
                                 hints=hints, assignment=asg, code=repr(spec))
        examples.append(spec)
        assert not result.kit_error, (spec, result.kit_error)
        assert result.passed or result.message.strip(), spec

    for position in (None, 0, 1, 2):        # systematic: each output spoiled each way,
        for how in SPOILS:                  # on every call, then on later calls only
            check(answer_with(position, how))
    calls = _student_calls(test, asg, reference, hints, functions, key)
    for n in range(1, calls):               # right up to call n, spoiled from call n on
        for how in LATE_SPOILS:
            check(("after", n, answer_with(None, "same"), answer_with(None, how)))
    systematic = len(examples)
    settings(max_examples=EXAMPLES, deadline=None, database=None,
             suppress_health_check=list(HealthCheck))(given(spec=specs())(check))()
    assert len(examples) - systematic >= EXAMPLES


LATE_SPOILS = ("extra", "unsqueeze", "item", "none")


def _student_calls(test, asg, reference, hints, functions, key) -> int:
    """How many calls the test makes of the student's functions when they are right."""
    worker = FakeWorker()
    worker.define(**{fn: key[fn] for fn in functions})
    result = run_hidden_test(test, student=StudentProxy(worker), reference=reference,
                             hints=hints, assignment=asg)
    assert result.passed, (test.key, result.message)
    return sum(r.get("op") in ("call", "harness") for r in worker.requests)


def _returning(spec, answer_key, calls):
    """A student's function answering by ``spec``: one spec for every call, a spec per call
    (``per_call``), or ``("after", n, early, late)``: ``early`` for the first n calls of any of
    the student's functions, ``late`` from then on. ``calls`` counts the calls of all of them."""
    def student_function(*args, **kwargs):
        index = next(calls)
        if spec[0] == "per_call":
            now = spec[1][index % len(spec[1])]
        elif spec[0] == "after":
            now = spec[2] if index < spec[1] else spec[3]
        else:
            now = spec
        return build(now, args, kwargs, answer=lambda: answer_key(*args, **kwargs))
    return student_function


ODD_DECODED = [None, "0.5", b"1", {"a": 1.0}, 1 + 2j, np.array([1 + 1j]), [[1.0, 2.0], [3.0]],
               (np.zeros(3), 1.0), [Other("generator", "<gen>")], Other("Losses", "Losses(...)"),
               TooLarge("Tensor", (10_000_001,)), 1 << 2000, float("nan"), np.zeros((2, 0)),
               [], (), np.array([object()], dtype=object), [True, False], 10 ** 300]


@pytest.mark.parametrize("value", ODD_DECODED, ids=lambda v: type(v).__name__)
def test_reading_helpers_return_numbers_or_raise_mistake(value):
    """What the helpers do with every odd decoded value: numbers, or a Mistake with a message."""
    def outcome(read):
        try:
            return read()
        except Mistake as exc:
            assert str(exc).strip()
            return exc

    arr = outcome(lambda: checks.numbers(value, "f"))
    assert isinstance(arr, Mistake) or arr.dtype == np.float64
    one = outcome(lambda: checks.scalar(value, "policy_loss"))
    assert isinstance(one, (Mistake, float))
    grad = outcome(lambda: checks.grad_of(Returned(None, None, {"x": value}, {}, 0.0), "x"))
    assert grad is None if value is None else isinstance(grad, Mistake) or grad.dtype == np.float64
    outcome(lambda: checks.item(value, 1, "f"))
    outcome(lambda: checks.tuple_of(Returned(value, None, {}, {}, 0.0), 3, "f"))
    assert isinstance(outcome(lambda: checks.expect_values(value, [1.0, 2.0], "f")), Mistake)


UNREDUCED_POLICY_LOSS = '''
def ppo_combined_loss(log_probs_new, log_probs_old, advantages, values, returns,
                      epsilon=0.2, vf_coeff=0.5):
    ratio = torch.exp(log_probs_new - log_probs_old)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    policy_loss = -torch.min(ratio * advantages, clipped * advantages)   # not averaged
    value_loss = ((values - returns) ** 2).mean()
    return policy_loss.mean() + vf_coeff * value_loss, policy_loss, value_loss
'''


def test_an_unreduced_policy_loss_is_a_scored_mistake_end_to_end(tmp_path):
    """Through the real grader (loader, sandboxed worker, suite): the per-sample policy loss
    that raised TypeError in the parent costs points with a message, and no grader error."""
    from autograder.config import load_settings
    from autograder.grade.submission import grade_submission
    from autograder.suites.mutant_corpus import sandbox_arguments, submission_notebook

    asg = load_assignment("ppo", REPO_ROOT)
    path = tmp_path / "ppo.ipynb"
    path.write_text(json.dumps(submission_notebook(asg, {"ppo_combined_loss":
                                                         UNREDUCED_POLICY_LOSS})))
    backend = "unsafe" if sandbox_arguments() else None
    result = grade_submission(path, "ppo", student="s", settings=load_settings(REPO_ROOT),
                              backend=backend).to_json()
    flags = [f["code"] for f in result["extra_data"]["flags"]]
    assert "grader_error" not in flags, result["extra_data"]["flags"]
    cells = result["extra_data"]["grade_cells"]
    assert cells["ppo_combined_loss"]["score"] < cells["ppo_combined_loss"]["max_score"]
    assert cells["compute_gae"]["score"] == cells["compute_gae"]["max_score"]
    messages = " ".join(t["output"] for t in result["tests"] if t["tags"] == ["ppo_combined_loss"])
    assert "policy_loss is an array of shape" in messages, messages
    assert "error in the grader" not in messages
