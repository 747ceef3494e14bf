"""Hidden inputs are per submission, training seeds per student, and the feedback is no oracle.

- The code digest is the code that runs: outputs, execution counts and cell ids change nothing;
  any change of a statement changes it.
- ``rng`` (the unit tests' hidden inputs) changes with the code digest; ``training_seed`` and
  ``hidden_seed`` (training runs) do not; the same code gives the same values. Checked on the
  real plugin, through pytest.
- Unit tests never ask for the per-student seeds; training tests are the only ones that do.
- No message of a failed unit test shows an expected value (the suites declare no comparison
  ``per_submission``), and the helpers show one only when a comparison is declared so.
- The lookup-table attack of issue 12: grade a partial submission, harvest every input and
  expected value its feedback reveals, answer ``ppo_combined_loss`` from that table, grade again,
  four rounds. It gains nothing. Two controls show that the attack is real: with expected values
  revealed and the inputs fixed per student (the old grader) it gains points; with expected
  values revealed but per-submission inputs, it still gains on the fixed cases, which is why
  those never show an expected value.
"""
from __future__ import annotations

import copy
import json
import re
import textwrap

import numpy as np
import pytest

from autograder import REPO_ROOT, mistakes
from autograder.assignments import load_assignment
from autograder.mistakes import Mistake
from autograder.grade.plugin import SuiteContext
from autograder.grade.runner import run_suite
from autograder.hints import Hints
from autograder.load.notebook import read_submission
from autograder.proxy import StudentProxy
from autograder.seeding import code_digest, derive_seed
from autograder.suites import checks
from autograder.suites.mutant_corpus import submission_notebook
from autograder.sandbox.fake import FakeWorker, reference_worker
from suite_driver import hidden_tests, run_hidden_test

TRAINING_CELLS = {"reinforce_training", "ppo_training", "lm_ppo_training"}


# --- the code digest ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ppo():
    return load_assignment("ppo", REPO_ROOT)


def digest_of(tmp_path, nb: dict, assignment) -> str:
    path = tmp_path / f"nb{len(list(tmp_path.iterdir()))}.ipynb"
    path.write_text(json.dumps(nb))
    sub = read_submission(path, assignment)
    assert sub.readable, sub.problem
    return code_digest(sub.cells)


def test_digest_ignores_outputs_counts_and_ids_but_not_code(tmp_path, ppo):
    base = submission_notebook(ppo, {})
    ran = copy.deepcopy(base)
    for n, cell in enumerate(c for c in ran["cells"] if c["cell_type"] == "code"):
        cell["execution_count"] = n + 7
        cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": f"run {n}\n"}]
    renamed = copy.deepcopy(base)
    for n, cell in enumerate(renamed["cells"]):
        cell["id"] = f"renamed-{n}"
    extra_markdown = copy.deepcopy(base)
    extra_markdown["cells"].insert(3, {"cell_type": "markdown", "id": "note", "metadata": {},
                                       "source": "my notes"})
    same = {digest_of(tmp_path, nb, ppo) for nb in (base, ran, renamed, extra_markdown)}
    assert len(same) == 1

    gae = next(i for i, c in enumerate(base["cells"])
               if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "compute_gae_answer")
    changed = []
    for edit in ("\nHELPER = 3\n", "\ndef helper(x):\n    return x\n"):
        nb = copy.deepcopy(base)
        cell = nb["cells"][gae]
        cell["source"] = "".join(cell["source"]) + edit
        changed.append(digest_of(tmp_path, nb, ppo))
    assert len({*same, *changed}) == 3


def test_seed_derivation():
    assert derive_seed(1, "a", "t") == derive_seed(1, "a", "t", code="")
    seeds = {derive_seed(1, "a", "t", code=c) for c in ("", "x", "y")}
    assert len(seeds) == 3
    assert code_digest([{"source": "ab"}, {"source": "c"}]) != \
        code_digest([{"source": "a"}, {"source": "bc"}])
    assert code_digest([{"id": "1", "source": "a"}]) == code_digest([{"id": "2", "source": "a"}])


# --- the real plugin's fixtures ----------------------------------------------------------------

PROBE_SUITE = '''
import json, os
GRADE_CELL = "probe"

def test_probe(rng, training_seed, hidden_seed):
    with open(os.environ["PROBE_OUT"], "a") as f:
        f.write(json.dumps([rng.integers(0, 2**62, size=3).tolist(), training_seed,
                            hidden_seed]) + "\\n")
'''


class _ProbeAssignment:
    name = "probe"

    def __init__(self, folder):
        self.folder = folder


def test_plugin_rng_is_per_submission_training_seed_per_student(tmp_path, monkeypatch):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_probe.py").write_text(textwrap.dedent(PROBE_SUITE))
    out = tmp_path / "out.jsonl"
    monkeypatch.setenv("PROBE_OUT", str(out))

    def probe(student, code):
        ctx = SuiteContext(assignment=_ProbeAssignment(suite), student_proxy=None,
                           reference_proxy=None, hints=None, cohort_seed=7, student_id=student,
                           device="cpu", code_digest=code)
        outcomes = run_suite(ctx)
        assert all(o.passed for o in outcomes), [o.kit_error for o in outcomes]
        return json.loads(out.read_text().splitlines()[-1])

    a1, a1_again, a2, b1 = (probe("alice", "code-1"), probe("alice", "code-1"),
                            probe("alice", "code-2"), probe("bob", "code-1"))
    assert a1 == a1_again                       # a regrade of the same code: the same
    assert a1[0] != a2[0]                       # changed code: fresh hidden inputs
    assert a1[1:] == a2[1:]                     # ... but the same training seeds
    assert a1[1] == a1[2] == derive_seed(7, "alice", "test_probe.py::test_probe")
    assert b1[0] != a1[0] and b1[1] != a1[1]    # another student: other inputs and seeds


def test_only_training_tests_ask_for_the_per_student_seeds():
    for name in ("ppo", "ppo_lm"):
        for t in hidden_tests(load_assignment(name, REPO_ROOT)):
            assert t.is_training == (t.grade_cell in TRAINING_CELLS), t.key
            if t.is_training:
                assert "rng" not in t.params, t.key


# --- what the feedback shows -------------------------------------------------------------------

def test_helpers_withhold_expected_values_unless_declared_per_submission():
    explain = lambda: "The first wrong number is " + mistakes.first_difference(  # noqa: E731
        [1.0, 2.5], [1.0, 2.0], atol=1e-4) + "."
    with pytest.raises(Mistake) as fixed:
        checks.expect_values([1.0, 2.5], [1.0, 2.0], "f", explain)
    assert "2.5" in str(fixed.value) and "expected 2" not in str(fixed.value)
    assert "difference" not in str(fixed.value)
    with pytest.raises(Mistake) as fresh:
        checks.expect_values([1.0, 2.5], [1.0, 2.0], "f", explain, per_submission=True)
    assert "expected 2" in str(fresh.value)
    # outside a declared comparison nothing reveals, whatever calls the formatter
    assert "expected" not in mistakes.first_difference([3.0], [1.0], atol=1e-4)


EXPECTED_NUMBER = re.compile(r"expected -?\d|difference [+-]")


@pytest.fixture(scope="module")
def grader(ppo):
    reference = StudentProxy(reference_worker(ppo))
    return reference, Hints.for_assignment(reference, ppo)


def unit_tests(assignment, grade_cell=None):
    return [t for t in hidden_tests(assignment) if not t.is_training
            and (grade_cell is None or t.grade_cell == grade_cell)]


def _scaled(function):
    """The answer key's ``function`` with every output 10% too large."""
    def wrong(*args, **kwargs):
        out = function(*args, **kwargs)
        return tuple(x * 1.1 for x in out) if isinstance(out, tuple) else out * 1.1
    return wrong


@pytest.mark.parametrize("name", ["ppo", "ppo_lm"])
def test_no_failed_unit_test_shows_an_expected_value(name):
    assignment = load_assignment(name, REPO_ROOT)
    reference = StudentProxy(reference_worker(assignment))
    hints = Hints.for_assignment(reference, assignment)
    key = reference._worker.server.ns
    worker = FakeWorker()
    worker.define(**{fn: _scaled(key[fn]) for fn in assignment.solution_functions.values()})
    failed = []
    for t in unit_tests(assignment):
        result = run_hidden_test(t, student=StudentProxy(worker), reference=reference,
                                 hints=hints, assignment=assignment, code="x")
        assert not result.kit_error
        if not result.passed:
            failed.append(result.message)
            assert not EXPECTED_NUMBER.search(result.message), (t.key, result.message)
    assert len(failed) >= 15
    assert any("yours is" in m for m in failed)   # the student's own value is still shown


# --- the lookup-table attack -------------------------------------------------------------------

LOSS_MESSAGE = re.compile(r"^(total_loss|policy_loss|value_loss) of .*?expected "
                          r"(-?[0-9.]+(?:e[+-]?\d+)?)", re.DOTALL)
NAMES = ("total_loss", "policy_loss", "value_loss")


class LookupTable:
    """A ``ppo_combined_loss`` made only of a table harvested from earlier feedback: keyed by
    its inputs (every input of every call, as an attacker who logs them would have), it returns
    the harvested numbers, and 0 where it knows none."""

    def __init__(self):
        self.table: dict[tuple, dict[int, float]] = {}
        self.calls: list[tuple] = []

    @staticmethod
    def key(args, kwargs) -> tuple:
        flat = []
        for a in args:
            flat.extend(np.round(np.asarray(a.detach(), dtype=np.float64).ravel(), 4).tolist())
        return tuple(flat) + tuple(sorted(kwargs.items()))

    def __call__(self, *args, **kwargs):
        import torch

        k = self.key(args, kwargs)
        self.calls.append(k)
        known = self.table.get(k, {})
        return tuple(torch.tensor(known.get(i, 0.0), dtype=torch.float32) for i in range(3))

    def code(self) -> str:
        """The submission's code: the table is part of it."""
        return repr(sorted(self.table.items()))

    def harvest(self, message: str) -> None:
        m = LOSS_MESSAGE.search(message)
        if m and self.calls:
            self.table.setdefault(self.calls[-1], {})[NAMES.index(m.group(1))] = \
                float(m.group(2))


def attack(ppo, grader, *, reveal: bool, per_submission: bool, rounds: int = 4):
    """Points on ppo_combined_loss's unit tests in each round, and the tests gained."""
    reference, hints = grader
    tests = unit_tests(ppo, "ppo_combined_loss")
    lookup = LookupTable()
    scores, passed_sets = [], []
    original = checks.revealing
    if reveal:                     # the old grader: every comparison shows its expected value
        checks.revealing = lambda allowed=False: original(True)
    try:
        for _ in range(rounds):
            worker = FakeWorker()
            worker.define(ppo_combined_loss=lookup)
            code = lookup.code() if per_submission else ""
            passed, score, messages = set(), 0.0, []
            for t in tests:
                result = run_hidden_test(t, student=StudentProxy(worker), reference=reference,
                                         hints=hints, assignment=ppo, code=code)
                assert not result.kit_error
                if result.passed:
                    passed.add(t.name)
                    score += t.weight
                else:
                    messages.append(result.message)
                    lookup.harvest(result.message)
            scores.append(score)
            passed_sets.append(passed)
    finally:
        checks.revealing = original
    return scores, passed_sets[-1] - passed_sets[0], lookup


def test_lookup_table_from_feedback_gains_nothing(ppo, grader):
    scores, gained, lookup = attack(ppo, grader, reveal=False, per_submission=True)
    assert scores == [scores[0]] * len(scores) and not gained
    assert lookup.table == {}      # the feedback gave it nothing to put in the table


def test_control_old_grader_the_lookup_table_gains(ppo, grader):
    scores, gained, _ = attack(ppo, grader, reveal=True, per_submission=False)
    assert scores[-1] > scores[0], scores
    # random inputs the same in every submission are harvested too
    rng_tests = {t.name for t in unit_tests(ppo, "ppo_combined_loss") if "rng" in t.params}
    assert gained & rng_tests, gained


def test_control_per_submission_inputs_alone_leave_the_fixed_cases_open(ppo, grader):
    scores, gained, _ = attack(ppo, grader, reveal=True, per_submission=True)
    fixed_only = {t.name for t in unit_tests(ppo, "ppo_combined_loss") if "rng" not in t.params}
    assert gained and gained <= fixed_only, (scores, gained)
