"""The grader in this process, on ``autograder.sandbox.fake``: no worker process is spawned.

``FakePool`` hands ``grade_submission`` a ``FakeWorker`` for the student and the answer key
loaded in another as the reference: the whole path (reading the notebook, the session, the
pytest plugin and runner, the hints, the scores) runs as in production, with the sandbox and the
limits left out. A submission costs one to two seconds, so ``make test`` grades here the answer
key, a sample of Part 1's mutants (every kind of check) and every correct variant, on the
function questions; ``tests/assignments/test_mutants.py`` and
``tests/assignments/test_correct_variants.py`` grade all of them through real workers, the
training questions included, in ``make test-all``.
"""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from autograder import REPO_ROOT
from autograder.assignments import load_assignment
from autograder.config import load_settings
from autograder.hints import apply_mutant, solution_cell
from autograder.grade import submission as submission_module
from autograder.proxy import StudentProxy
from autograder.sandbox.fake import FakePool, FakeWorker, reference_worker
from autograder.plugins import module_of
from autograder.suites import mutant_corpus
from batch_grader import functions_only

ASSIGNMENT = "ppo"
corpus = module_of("ppo", "corpus")
MUTANTS = module_of("ppo", "mutants").MUTANTS
FUNCTION_CELLS = {"reinforce_loss": 3.0, "compute_gae": 5.0, "ppo_combined_loss": 5.0}
# A sample of each assignment's mutants, every kind of check represented: wrong values (the hint
# or the first wrong number), a list, float32 or Python-number output, inputs changed or
# aliased, the gradient cut, padding and masks (Part 2).
MUTANT_SAMPLE = {
    "ppo": ["reinforce_sign_flipped", "reinforce_sum", "reinforce_detached", "gae_forward",
            "gae_lambda_twice", "gae_returns_list", "gae_float32_output", "gae_mutates_rewards",
            "gae_aliases_rewards", "clip_max_not_min", "clip_none", "clip_detached", "clip_item",
            "combined_no_vf_coeff", "combined_floats", "combined_subtracts_returns_in_place"],
    "ppo_lm": ["rewards_kl_coef_missing", "rewards_score_at_last_padded_position",
               "mean_includes_padding", "mean_item", "gae_leaks_across_rows",
               "gae_padding_not_zeroed", "ppo_unmasked_value_loss", "ppo_ratio_detached"],
}


def suite_package(name: str):
    """(mutants, correct variants, training cell of each function) of an assignment."""
    if name == "ppo":
        ppo_mutants = module_of("ppo", "mutants")
        return ppo_mutants.MUTANTS, ppo_mutants.CORRECT_VARIANTS, corpus.TRAINING_CELL
    lm_corpus, lm_mutants = module_of("ppo_lm", "corpus"), module_of("ppo_lm", "mutants")

    functions = {m.function for m in lm_mutants.MUTANTS}
    return (lm_mutants.MUTANTS, lm_mutants.CORRECT_VARIANTS,
            dict.fromkeys(functions, lm_corpus.TRAINING_CELL))


def question_of(name: str, mutant) -> str:
    if name == "ppo_lm":
        return module_of("ppo_lm", "corpus").question_of(mutant)
    return mutant.function


@pytest.fixture(scope="module")
def trimmed(tmp_path_factory):
    """{assignment: the assignment with the hidden tests of its function questions only (no
    training run), with the folder's other modules (mutants, hint probes), so the hints work}."""
    out = {}
    for name in MUTANT_SAMPLE:
        assignment = load_assignment(name, REPO_ROOT)
        out[name] = functions_only(assignment, tmp_path_factory.mktemp(f"{name}-functions"))
    return out


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
    """Grade an assignment's notebook with {function: new solution source} (nothing: the answer
    key) in this process; the result's JSON and the corpus record of it."""
    settings = load_settings(REPO_ROOT)

    def run(assignment: str, name: str, replacements: dict[str, str], record=None):
        asg = trimmed[assignment]
        monkeypatch.setattr(submission_module, "load_assignment", lambda n, course: asg)
        path = tmp_path / f"{name}.ipynb"
        path.write_text(json.dumps(mutant_corpus.submission_notebook(asg, replacements)))
        graded = submission_module.grade_submission(
            path, assignment, student=name, settings=settings, backend="unsafe", pool=pool)
        record = record or mutant_corpus.MutantGrade(name, "answer_key")
        return graded.to_json(), mutant_corpus.fill(record, graded, "fake", 0.0)
    return run


@pytest.mark.parametrize("name", list(MUTANT_SAMPLE))
def test_the_answer_key_gets_full_marks_without_a_process(grade, pool, trimmed, name):
    result, g = grade(name, "answer_key", {})
    assert not g.grader_errors and not result["extra_data"]["flags"], g.flags
    cells = {c.id: c.points for c in trimmed[name].grade_cells}
    assert {c: t["max_score"] for c, t in result["extra_data"]["grade_cells"].items()} == cells
    assert result["score"] == sum(cells.values()) > 0, g.outputs
    assert all(isinstance(w, FakeWorker) for w in pool.students) and pool.students
    if name == ASSIGNMENT:
        assert cells == FUNCTION_CELLS


def test_the_samples_name_mutants_of_every_function(trimmed):
    for name, sample in MUTANT_SAMPLE.items():
        mutants, _, training = suite_package(name)
        by_name = {m.name: m for m in mutants}
        assert set(sample) <= set(by_name), name
        assert {by_name[n].function for n in sample} == set(training), name
        assert {question_of(name, by_name[n]) for n in sample} <= \
            {c.id for c in trimmed[name].grade_cells}, name


@pytest.mark.parametrize("name, mutant_name",
                         [(a, m) for a, sample in MUTANT_SAMPLE.items() for m in sample])
def test_a_mutant_loses_points_on_its_own_question_only(grade, trimmed, name, mutant_name):
    """As ``tests/assignments/test_mutants.py`` and ``tests/assignments/test_ppo_lm_grading.py``
    ask of every mutant, on the function questions."""
    mutants, _, training = suite_package(name)
    mutant = next(m for m in mutants if m.name == mutant_name)
    record = mutant_corpus.MutantGrade(mutant.name, "mutant", (mutant.function,),
                                  question_of(name, mutant), (training[mutant.function],),
                                  mutant.hint, mutant.needs)
    source = apply_mutant(solution_cell(trimmed[name], mutant.function).source, mutant)
    _, g = grade(name, mutant_name, {mutant.function: source}, record)
    assert not g.grader_errors, g.grader_errors
    if not g.applicable:
        assert g.lost.get(g.question, 0.0) == 0.0
        return
    assert g.killed, f"{mutant_name} keeps full marks on {g.question}"
    assert not g.collateral, f"{mutant_name} loses points on unrelated cells {g.collateral}"
    assert g.hint_shown or g.numeric_shown, g.outputs.get(g.question)


def variant_notebooks() -> list[tuple[str, str, list]]:
    """(assignment, name, [variants]): Part 1's one per notebook, Part 2's in groups of one
    variant per function (as ``assignments/ppo_lm/corpus.py`` grades them)."""
    lm_corpus = module_of("ppo_lm", "corpus")

    out = [("ppo", v.name, [v]) for v in suite_package("ppo")[1]]
    out += [("ppo_lm", "+".join(v.name for v in group), group)
            for group in lm_corpus.variant_groups(suite_package("ppo_lm")[1])]
    return out


@pytest.mark.parametrize("name, variant_name, group", variant_notebooks(),
                         ids=[n for _, n, _ in variant_notebooks()])
def test_correct_variants_keep_full_marks(grade, name, variant_name, group):
    _, g = grade(name, variant_name, {v.function: v.source for v in group})
    assert not g.grader_errors, g.grader_errors
    lost = {c: p for c, p in g.lost.items() if p > 1e-9}
    assert not lost, f"{variant_name} loses {lost}: {g.outputs}"


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
