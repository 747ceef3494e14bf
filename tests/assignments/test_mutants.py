"""Every realistic wrong implementation loses points on its own question, and only where it may.

Each mutant of ``assignments/ppo/mutants.py`` becomes a submission (the source notebook
with that function's solution cell changed) and is graded like any other: a sample through the
real command line (``python -m autograder grade ... --out``), the rest through the same
``grade_submission`` in this process (one worker start per notebook either way). For each:
points are lost on the function's own grade cell; nothing is lost on unrelated cells (the
training cell that runs the function may lose points too); the failure message shows the
mutant's hint, or at least the numeric difference. ``make mutants`` prints the same as a table.

Grading the corpus takes about three minutes on two cores, so those tests are marked slow
(``make test-all``); ``make test`` grades a sample of the mutants, one of every kind of check,
in-process (``tests/sandbox/test_fake_worker.py``), and checks the catalogue here.
"""
from __future__ import annotations

import pytest

from autograder.hints import MutantError, mutant_cells
from autograder.plugins import module_of
from mutant_catalogue import (check_every_mutant_applies_exactly_once,
                              check_hints_are_plain_words,
                              check_mutant_cells_define_only_the_renamed_function)

corpus = module_of("ppo", "corpus")
MUTANTS = module_of("ppo", "mutants").MUTANTS

# A sample through the real CLI: one mistake of each function, and the contract violation
# that may cost the type check only.
CLI_SAMPLE = {"reinforce_sum", "gae_forward", "gae_returns_list", "clip_upper_only",
              "combined_wrong_order"}

# The catalogue of grading-validity, item by item, and the mutants that realise each item.
CATALOGUE = {
    "GAE: recursion runs forward in time": ["gae_forward"],
    "GAE: values[t] used where values[t+1] belongs": ["gae_current_value_for_next"],
    "GAE: gamma missing from delta": ["gae_no_gamma_in_delta"],
    "GAE: lam applied twice": ["gae_lambda_twice"],
    "GAE: lam without gamma in the recursion": ["gae_lambda_without_gamma"],
    "GAE: lam ignored": ["gae_lambda_ignored"],
    "GAE: returns the deltas": ["gae_returns_deltas"],
    "GAE: returns advantages + values": ["gae_returns_returns"],
    "GAE: ignores the bootstrap value": ["gae_ignores_bootstrap"],
    "GAE: normalises the advantages inside": ["gae_normalised"],
    "GAE: sign of delta flipped": ["gae_delta_sign_flipped"],
    "GAE: output of length T+1, or off by one": ["gae_length_t_plus_1", "gae_off_by_one"],
    "GAE: returns a list or array": ["gae_returns_list"],
    "GAE: float32 out for float64 in": ["gae_float32_output"],
    "GAE: output on the wrong device": ["gae_wrong_device"],
    "GAE: mutates or aliases its inputs": ["gae_mutates_rewards", "gae_aliases_rewards"],
    "clip: max instead of min": ["clip_max_not_min"],
    "clip: no clipping": ["clip_none"],
    "clip: ratio = logp_new / logp_old": ["clip_ratio_of_log_probs"],
    "clip: ratio = exp(old - new)": ["clip_ratio_inverted"],
    "clip: clamp bounds swapped": ["clip_bounds_swapped"],
    "clip: clips the advantages instead of the ratio": ["clip_advantages"],
    "clip: min taken before multiplying by A": ["clip_min_before_advantage"],
    "clip: upper clip only": ["clip_upper_only"],
    "clip: sum instead of mean": ["clip_sum"],
    "clip: sign flipped": ["clip_sign_flipped"],
    "clip: normalises the advantages inside": ["clip_normalises_advantages"],
    "clip: logp_new detached, or .item() used": ["clip_detached", "clip_item"],
    "combined: vf_coeff missing": ["combined_no_vf_coeff"],
    "combined: 0.5 x MSE": ["combined_half_mse"],
    "combined: advantages used as the value target": ["combined_advantages_as_target"],
    "combined: shapes (N,1) vs (N,) broadcast": ["combined_broadcast"],
    "combined: vf_coeff folded into the returned value_loss": ["combined_vf_in_value_loss"],
    "combined: policy - vf_coeff * value": ["combined_minus_value"],
    "combined: floats returned, or the tuple in the wrong order": ["combined_floats",
                                                                   "combined_wrong_order"],
    "REINFORCE: sign flipped": ["reinforce_sign_flipped"],
    "REINFORCE: probability instead of log-probability": ["reinforce_probability"],
    "REINFORCE: raw logit used": ["reinforce_renormalised_logits"],
    "REINFORCE: sum instead of mean over a batch": ["reinforce_sum"],
    "REINFORCE: log_prob detached": ["reinforce_detached"],
    "any function: mutating an input in place": ["reinforce_negates_rewards_in_place",
                                                 "combined_subtracts_returns_in_place"],
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    results = corpus.grade_corpus(tmp_path_factory.mktemp("mutants"), mutants=MUTANTS,
                                  variants=[], via_cli=CLI_SAMPLE)
    print("\n" + corpus.table(results))
    return {g.name: g for g in results}


def test_catalogue_is_covered():
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names)) >= 35
    listed = [n for group in CATALOGUE.values() for n in group]
    assert sorted(listed) == sorted(set(listed))
    assert set(listed) <= set(names), set(listed) - set(names)
    assert set(names) - set(listed) <= {"clip_default_epsilon"}   # beyond the catalogue


def test_hints_are_plain_words():
    check_hints_are_plain_words(MUTANTS)


def test_every_mutant_applies_exactly_once(assignment):
    check_every_mutant_applies_exactly_once(assignment, MUTANTS, whole_cell_allowed=False)


def test_a_mutant_that_does_not_apply_is_an_error(assignment):
    bad = MUTANTS[0].__class__("nope", "compute_gae", "this text is not there", "x", "hint")
    with pytest.raises(MutantError):
        mutant_cells(assignment, [bad])


def test_mutant_cells_define_only_the_renamed_function(assignment):
    check_mutant_cells_define_only_the_renamed_function(
        assignment, MUTANTS, "import torch\nfrom torch.nn import functional as F\n")


@pytest.mark.slow
@pytest.mark.parametrize("name", [m.name for m in MUTANTS])
def test_mutant_loses_points_on_its_own_question_only(graded, name):
    g = graded[name]
    assert not g.grader_errors, g.grader_errors
    if not g.applicable:
        # e.g. a wrong-device output cannot differ when everything runs on the CPU: it is
        # reported as not applicable here, and must then really be equivalent.
        assert g.lost.get(g.question, 0.0) == 0.0
        return
    assert g.killed, f"{name} keeps full marks on {g.question}"
    assert not g.collateral, f"{name} loses points on unrelated cells {g.collateral}"
    assert g.hint_shown or g.numeric_shown, g.outputs.get(g.question)


@pytest.mark.slow
def test_the_cli_sample_went_through_the_cli(graded):
    assert {n for n, g in graded.items() if g.via == "cli"} == CLI_SAMPLE


@pytest.mark.slow
def test_a_list_output_costs_the_type_check_only(graded):
    """A compute_gae that returns a list breaks the contract: it loses the type check's share
    and nothing else (every value check reads the numbers; training works)."""
    g = graded["gae_returns_list"]
    assert g.failed["compute_gae"] == ["compute_gae: The result is a torch tensor (lists, float32 "
                                      "and float64 tensors in)"]
    assert g.lost["compute_gae"] == pytest.approx(g.max_scores[g.failed["compute_gae"][0]])
    assert "the contract asks for a 1-D torch tensor" in g.outputs["compute_gae"]
    assert g.lost["ppo_training"] == 0.0


@pytest.mark.slow
def test_the_kill_rate_is_complete(graded):
    applicable = [g for g in graded.values() if g.applicable]
    assert len(applicable) >= 35
    assert all(g.killed for g in applicable)
    assert sum(g.hint_shown for g in applicable) >= 0.9 * len(applicable)
