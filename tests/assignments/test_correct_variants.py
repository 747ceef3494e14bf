"""Correct solutions written differently from the answer key get full marks.

Each ``CORRECT_VARIANTS`` entry of ``assignments/ppo/mutants.py`` replaces one solution cell
of the source notebook (loops, vectorised, numpy inside, float64 inside, ``torch.where``,
reversed cumulative, recursion, ``F.mse_loss``, ...); the notebook is graded like any submission,
two through the real command line. Every grade cell must keep full marks: a correct student
must never lose points to the way the grader checks. The answer key itself is graded too.

The variants' grading through real workers (the training questions included) is marked slow
(``make test-all``); ``make test`` grades every variant on the function questions in-process
(``tests/sandbox/test_fake_worker.py``), and the answer key here through the command line.
"""
from __future__ import annotations

import json

import pytest

from autograder import REPO_ROOT
from autograder.assignments import load_assignment
from autograder.hints import CorrectVariant
from autograder.plugins import module_of

corpus = module_of("ppo", "corpus")
CORRECT_VARIANTS = module_of("ppo", "mutants").CORRECT_VARIANTS

CLI_SAMPLE = {"gae_numpy_inside", "combined_torch_where"}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    results = corpus.grade_corpus(tmp_path_factory.mktemp("variants"), mutants=[],
                                  variants=CORRECT_VARIANTS, via_cli=CLI_SAMPLE)
    print("\n" + corpus.table(results))
    return {g.name: g for g in results}


def test_there_are_enough_variants():
    assert len(CORRECT_VARIANTS) >= 8
    assert {v.function for v in CORRECT_VARIANTS} == {"reinforce_loss", "compute_gae",
                                                      "ppo_combined_loss"}
    assert len({v.name for v in CORRECT_VARIANTS}) == len(CORRECT_VARIANTS)


@pytest.mark.slow
@pytest.mark.parametrize("name", [v.name for v in CORRECT_VARIANTS])
def test_variant_gets_full_marks(graded, name):
    g = graded[name]
    assert not g.grader_errors, g.grader_errors
    lost = {c: p for c, p in g.lost.items() if p > 1e-9}
    assert not lost, f"{name} loses {lost}: {g.outputs}"


@pytest.mark.slow
def test_the_cli_sample_went_through_the_cli(graded):
    assert {n for n, g in graded.items() if g.via == "cli"} == CLI_SAMPLE


@pytest.mark.slow   # end to end: make test-all
def test_the_answer_key_gets_full_marks(tmp_path):
    """The source notebook, solution cells as they are, graded through the command line."""
    assignment = load_assignment("ppo", REPO_ROOT)
    key = CorrectVariant("answer_key", "compute_gae",
                         corpus.solution_cell(assignment, "compute_gae").source)
    [(record, path)] = corpus.write_corpus(assignment, tmp_path, [], [key])
    g = corpus.grade_cli(record, path, tmp_path)
    assert not g.grader_errors and not any(p > 1e-9 for p in g.lost.values()), g.outputs
    result = json.loads((tmp_path / f"{path.stem}.results.json").read_text())
    assert result["score"] == pytest.approx(result["extra_data"]["max_score"]) == 16
