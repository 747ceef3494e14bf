"""The grader in this process, on ``autograder.sandbox.fake``: no worker process is spawned.

``FakePool`` hands ``grade_submission`` a ``FakeWorker`` for the student and the answer key
loaded in another as the reference: the whole path (reading the notebook, the session, the
pytest plugin and runner, the hints, the scores) runs as in production, with the sandbox and the
limits left out. A submission costs one to two seconds, so ``make test`` grades here the answer
key, a sample of Part 1's mutants (every kind of check) and every correct variant, on the
function questions; ``tests/test_mutants.py`` and ``tests/test_correct_variants.py`` grade all
of them through real workers, the training questions included, in ``make test-all``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from autograder import REPO_ROOT
from autograder.assignments import load_assignment
from autograder.config import load_settings
from autograder.grade import submission as submission_module
from autograder.proxy import StudentProxy
from autograder.sandbox.fake import FakePool, FakeWorker, reference_worker
from autograder.suites import mutant_corpus
from autograder.suites.ppo import corpus
from autograder.suites.ppo.mutants import CORRECT_VARIANTS, MUTANTS
from batch_grader import functions_only

ASSIGNMENT = "ppo"
# A sample of the mutants, each kind of check represented: wrong values (the hint or the first
# wrong number), a list or float32 output, inputs changed or aliased, the gradient cut.
MUTANT_SAMPLE = ["reinforce_sign_flipped", "reinforce_sum", "reinforce_detached",
                 "gae_forward", "gae_lambda_twice", "gae_returns_list", "gae_float32_output",
                 "gae_mutates_rewards", "gae_aliases_rewards", "clip_max_not_min", "clip_none",
                 "clip_detached", "clip_item", "combined_no_vf_coeff", "combined_floats",
                 "combined_subtracts_returns_in_place"]
FUNCTION_CELLS = {"reinforce_loss": 3.0, "compute_gae": 5.0, "ppo_combined_loss": 5.0}


@pytest.fixture(scope="module")
def assignment():
    return load_assignment(ASSIGNMENT, REPO_ROOT)


@pytest.fixture(scope="module")
def trimmed(assignment, tmp_path_factory):
    """Part 1 with the hidden tests of its function questions only (no training run), and the
    suite's mutants and hint probes (``mutants.py``, ``checks.py``), so the hints work."""
    suite = tmp_path_factory.mktemp("suite-functions")
    for name in ("mutants.py", "checks.py"):
        shutil.copyfile(assignment.suite_dir / name, suite / name)
    return functions_only(assignment, suite)


@pytest.fixture(scope="module")
def pool():
    with FakePool() as p:
        yield p


@pytest.fixture
def no_processes(monkeypatch):
    """Any attempt to start a process fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a process was started")

    monkeypatch.setattr(os, "fork", refuse)
    monkeypatch.setattr(os, "posix_spawn", refuse)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture
def grade(trimmed, pool, tmp_path, monkeypatch, no_processes):
    """Grade {function: new solution source} (nothing: the answer key) in this process; the
    result's JSON and the corpus record of it."""
    settings = load_settings(REPO_ROOT)
    monkeypatch.setattr(submission_module, "load_assignment", lambda name, course: trimmed)

    def run(name: str, replacements: dict[str, str], record=None):
        path = tmp_path / f"{name}.ipynb"
        path.write_text(json.dumps(mutant_corpus.submission_notebook(trimmed, replacements)))
        result = submission_module.grade_submission(
            path, ASSIGNMENT, student=name, settings=settings, backend="unsafe",
            pool=pool).to_json()
        record = record or mutant_corpus.Graded(name, "answer_key")
        return result, mutant_corpus.fill(record, result, "fake", 0.0)
    return run


def test_the_answer_key_gets_full_marks_without_a_process(grade, pool):
    result, g = grade("answer_key", {})
    assert not g.grader_errors and not result["extra_data"]["flags"], g.flags
    assert {c: t["max_score"] for c, t in result["extra_data"]["grade_cells"].items()} == \
        FUNCTION_CELLS
    assert result["score"] == sum(FUNCTION_CELLS.values()), g.outputs
    assert all(isinstance(w, FakeWorker) for w in pool.students) and pool.students


def test_the_sample_names_mutants_of_every_function():
    by_name = {m.name: m for m in MUTANTS}
    assert set(MUTANT_SAMPLE) <= set(by_name)
    assert {by_name[n].function for n in MUTANT_SAMPLE} == set(FUNCTION_CELLS)


@pytest.mark.parametrize("name", MUTANT_SAMPLE)
def test_a_mutant_loses_points_on_its_own_question_only(grade, assignment, name):
    """As ``tests/test_mutants.py`` asks of every mutant, on the function questions."""
    mutant = next(m for m in MUTANTS if m.name == name)
    record = corpus.record(mutant.name, "mutant", mutant.function, mutant.hint, mutant.needs)
    _, g = grade(name, {mutant.function: corpus.mutant_source(assignment, mutant)}, record)
    assert not g.grader_errors, g.grader_errors
    if not g.applicable:
        assert g.lost.get(g.question, 0.0) == 0.0
        return
    assert g.killed, f"{name} keeps full marks on {g.question}"
    assert not g.collateral, f"{name} loses points on unrelated cells {g.collateral}"
    assert g.hint_shown or g.numeric_shown, g.outputs.get(g.question)


@pytest.mark.parametrize("name", [v.name for v in CORRECT_VARIANTS])
def test_a_correct_variant_keeps_full_marks(grade, name):
    variant = next(v for v in CORRECT_VARIANTS if v.name == name)
    _, g = grade(name, {variant.function: variant.source})
    assert not g.grader_errors, g.grader_errors
    lost = {c: p for c, p in g.lost.items() if p > 1e-9}
    assert not lost, f"{name} loses {lost}: {g.outputs}"


def test_hints_name_a_mistake_through_the_proxy(assignment, no_processes):
    """The reference worker (answer key and mutants) and a student worker whose compute_gae runs
    the recursion forward, both in this process: the hints name that mistake, and only it."""
    from autograder.hints import HINT_PREFIX, Hints
    from autograder.proxy import Tensor

    reference = StudentProxy(reference_worker(assignment))
    mutant = next(m for m in MUTANTS if m.name == "gae_forward")
    worker = FakeWorker()
    reply = worker.load(submission_module.reference_cells(assignment) + [
        {"id": "compute_gae_answer", "source": corpus.mutant_source(assignment, mutant)}])
    assert not reply["cell_errors"], reply["cell_errors"]
    student = StudentProxy(worker)
    hints = Hints.for_assignment(reference, assignment)
    hints.student = student
    args = (Tensor(np.array([1.0, 0.0, 2.0, -1.0, 0.5], dtype=np.float32)),
            Tensor(np.array([0.5, 0.2, 0.1, 0.3, -0.4, 0.0], dtype=np.float32)))
    kwargs = {"gamma": 0.9, "lam": 0.8}
    returned = student.compute_gae(*args, **kwargs)
    assert hints.explain("compute_gae", args, kwargs, returned) == HINT_PREFIX + mutant.hint
    answer = StudentProxy(reference_worker(assignment))   # the answer key: nothing to explain
    assert hints.hint("compute_gae", args, kwargs, answer.compute_gae(*args, **kwargs),
                      student_call=lambda a, kw, bw: answer.compute_gae(*a, **kw)) == ""
