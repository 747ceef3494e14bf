"""Every function's contract is tested, and only its contract; hints are true or absent.

Submissions written the ways students write them, each with its expected outcome, graded like
any other (``grade_submission`` in this process, one worker pool; Part 2's training shortened to
one iteration, as its unit questions are what is asserted here):

- in-place changes of an input (``rewards.neg_()`` in ``reinforce_loss``, ``returns.sub_(values)``
  in ``ppo_combined_loss``, writing into ``x`` in ``masked_mean``): points lost on that question,
  by the inputs-not-modified test only, with a message that names the input;
- a ``compute_gae`` that returns a list only for float64 values: the type point lost, nothing else;
- a ``ppo_combined_loss`` that returns a ``NamedTuple``, and a Part 2 ``token_ppo_loss`` that
  computes in float32: full marks;
- the false hints of issue 13 (a value loss cut by ``.item()``, a detached value, a baseline
  subtracted inside ``reinforce_loss``, the clipped term only, a Part 2 GAE with junk in the
  padding): each gets its true hint or none, and never a claim that is false.

And for every failed test of every case: at most one hint, and 2-D positions as (row, token).
"""
from __future__ import annotations

import json
import re

import pytest

from autograder import REPO_ROOT
from autograder.assignments import load_assignment
from autograder.hints import HINT_PREFIX
from autograder.suites import mutant_corpus
from autograder.suites.mutant_corpus import MutantGrade

RF_IN_PLACE = '''\
import torch

def reinforce_loss(log_probs, rewards):
    rewards = torch.as_tensor(rewards, dtype=log_probs.dtype, device=log_probs.device)
    rewards.neg_()                       # in place: the caller's tensor changes sign
    return (log_probs * rewards).mean()
'''

RF_BASELINE = '''\
import torch

def reinforce_loss(log_probs, rewards):
    rewards = torch.as_tensor(rewards, dtype=log_probs.dtype, device=log_probs.device)
    return -(log_probs * (rewards - rewards.mean())).mean()
'''

GAE_LIST_FOR_FLOAT64 = '''\
import torch

def compute_gae(rewards, values, gamma=0.99, lam=0.95):
    dtype = values.dtype if torch.is_tensor(values) else torch.float32
    r = torch.as_tensor(rewards, dtype=dtype)
    v = torch.as_tensor(values, dtype=dtype)
    advantages = torch.zeros(len(r), dtype=dtype)
    running = 0.0
    for t in reversed(range(len(r))):
        running = r[t] + gamma * v[t + 1] - v[t] + gamma * lam * running
        advantages[t] = running
    if dtype == torch.float64:
        return advantages.tolist()       # a list, but only for float64 values
    return advantages
'''

COMBINED_NAMEDTUPLE = '''\
from typing import NamedTuple

import torch


class PPOLosses(NamedTuple):
    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor


def ppo_combined_loss(log_probs_new, log_probs_old, advantages,
                      values, returns, epsilon=0.2, vf_coeff=0.5):
    policy_loss = ppo_loss(log_probs_new, log_probs_old, advantages, epsilon)
    value_loss = ((values - returns) ** 2).mean()
    return PPOLosses(policy_loss + vf_coeff * value_loss, policy_loss, value_loss)
'''

COMBINED_SUB_IN_PLACE = '''\
def ppo_combined_loss(log_probs_new, log_probs_old, advantages,
                      values, returns, epsilon=0.2, vf_coeff=0.5):
    policy_loss = ppo_loss(log_probs_new, log_probs_old, advantages, epsilon)
    returns.sub_(values)                 # in place: the caller's returns change
    value_loss = (returns ** 2).mean()
    return policy_loss + vf_coeff * value_loss, policy_loss, value_loss
'''

COMBINED_VALUE_ITEM = '''\
def ppo_combined_loss(log_probs_new, log_probs_old, advantages,
                      values, returns, epsilon=0.2, vf_coeff=0.5):
    policy_loss = ppo_loss(log_probs_new, log_probs_old, advantages, epsilon)
    value_loss = ((values - returns) ** 2).mean().item()
    total_loss = policy_loss + vf_coeff * value_loss
    return total_loss, policy_loss, value_loss
'''

COMBINED_CLIPPED_ONLY = '''\
import torch

def ppo_combined_loss(log_probs_new, log_probs_old, advantages,
                      values, returns, epsilon=0.2, vf_coeff=0.5):
    ratio = torch.exp(log_probs_new - log_probs_old)
    policy_loss = -(torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * advantages).mean()
    value_loss = ((values - returns) ** 2).mean()
    return policy_loss + vf_coeff * value_loss, policy_loss, value_loss
'''

MM_IN_PLACE = '''\
import torch

def masked_mean(x, mask):
    real = torch.as_tensor(mask) != 0
    x.data[~real] = 0.0                  # writes into the caller's tensor
    return x.sum() / real.sum()
'''

TOKEN_GAE_JUNK_IN_PADDING = '''\
import torch

def compute_token_gae(rewards, values, mask, gamma=1.0, lam=0.95):
    real = torch.as_tensor(mask) != 0
    advantages = rewards.clone()         # the padding keeps the rewards' numbers
    for b, n in enumerate(real.sum(dim=1).tolist()):
        next_v, running = 0.0, 0.0
        for t in reversed(range(int(n))):
            delta = rewards[b, t] + gamma * next_v - values[b, t]
            running = delta + gamma * lam * running
            advantages[b, t] = running
            next_v = values[b, t]
    return advantages
'''

TOKEN_PPO_DETACHED_VALUES = '''\
import torch

def token_ppo_loss(logprobs_new, logprobs_old, advantages, values, returns, mask,
                   epsilon=0.2, vf_coeff=0.5):
    real = torch.as_tensor(mask) != 0
    zero = torch.zeros((), dtype=logprobs_new.dtype)
    ratio = torch.exp(torch.where(real, logprobs_new - logprobs_old, zero))
    adv = torch.where(real, advantages, torch.zeros_like(advantages))
    surrogate = torch.min(ratio * adv, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * adv)
    policy_loss = -masked_mean(surrogate, real)
    error = torch.where(real, values.detach() - returns, torch.zeros_like(returns))
    value_loss = masked_mean(error ** 2, real)
    return policy_loss + vf_coeff * value_loss, policy_loss, value_loss
'''

TOKEN_PPO_FLOAT32 = '''\
import torch

def token_ppo_loss(logprobs_new, logprobs_old, advantages, values, returns, mask,
                   epsilon=0.2, vf_coeff=0.5):
    m = torch.as_tensor(mask).float()    # float32 inside, whatever the inputs
    ratio = torch.exp((logprobs_new.float() - logprobs_old.float()) * m)
    adv = advantages.float() * m
    objective = torch.min(ratio * adv, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * adv)
    policy_loss = -(objective * m).sum() / m.sum()
    value_loss = (((values.float() - returns.float()) * m) ** 2).sum() / m.sum()
    return policy_loss + vf_coeff * value_loss, policy_loss, value_loss
'''

# (assignment, notebook name, {function: solution cell}); cases of different functions share
# a notebook (each question is graded on its own).
NOTEBOOKS = [
    ("ppo", "rf_in_place+gae_list_for_float64+combined_namedtuple",
     {"reinforce_loss": RF_IN_PLACE, "compute_gae": GAE_LIST_FOR_FLOAT64,
      "ppo_combined_loss": COMBINED_NAMEDTUPLE}),
    ("ppo", "rf_baseline+combined_sub_in_place",
     {"reinforce_loss": RF_BASELINE, "ppo_combined_loss": COMBINED_SUB_IN_PLACE}),
    ("ppo", "combined_value_item", {"ppo_combined_loss": COMBINED_VALUE_ITEM}),
    ("ppo", "combined_clipped_only", {"ppo_combined_loss": COMBINED_CLIPPED_ONLY}),
    ("ppo_lm", "mm_in_place+token_gae_junk+ppo_detached_values",
     {"masked_mean": MM_IN_PLACE, "compute_token_gae": TOKEN_GAE_JUNK_IN_PADDING,
      "token_ppo_loss": TOKEN_PPO_DETACHED_VALUES}),
    ("ppo_lm", "token_ppo_float32", {"token_ppo_loss": TOKEN_PPO_FLOAT32}),
]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    from autograder.config import load_settings
    from autograder.grade.pool import WorkerPool
    from autograder.plugins import module_of

    SHORT_ITERATIONS = module_of("ppo_lm", "corpus").SHORT_ITERATIONS
    training_iterations = module_of("ppo_lm", "corpus").training_iterations

    out = tmp_path_factory.mktemp("contracts")
    results = {}
    with WorkerPool(load_settings(REPO_ROOT)) as pool:
        for name in ("ppo", "ppo_lm"):
            assignment = load_assignment(name, REPO_ROOT)
            records = []
            for asg, nb_name, cells in NOTEBOOKS:
                if asg != name:
                    continue
                path = out / f"{nb_name}.ipynb"
                path.write_text(json.dumps(mutant_corpus.submission_notebook(assignment, cells)))
                records.append((MutantGrade(nb_name, "case", tuple(cells)), path))
            shorten = (lambda r: training_iterations(SHORT_ITERATIONS)) if name == "ppo_lm" \
                else (lambda r: training_iterations(None))
            for g in mutant_corpus.grade_api(records, name, out, pool=pool, around=shorten):
                results[g.name] = g
    return results


def failed_tests(g: MutantGrade, cell: str) -> list[str]:
    return [t.split(": ", 1)[1] for t in g.failed.get(cell, [])]


def outputs_of(g: MutantGrade) -> list[str]:
    return [t.output for t in g.result.tests if not t.passed]


def test_no_case_is_a_grader_error(graded):
    for g in graded.values():
        assert not g.grader_errors, (g.name, g.grader_errors)


def test_every_failed_test_has_at_most_one_hint_and_row_token_positions(graded):
    for g in graded.values():
        for text in outputs_of(g):
            assert text.count(HINT_PREFIX) <= 1 and " Or: " not in text, (g.name, text)
            assert "The shape is ()" not in text, (g.name, text)
            if g.name.startswith("mm_") or g.name.startswith("token_"):
                # Part 2 outputs are (B, T): a first wrong number is given as (row, token)
                for m in re.finditer(r"first wrong number is at position ([^:]*):", text):
                    where = m.group(1)
                    assert where.startswith("(row ") or where.isdigit() and "(B" not in text, \
                        (g.name, text)


# --- in-place changes of an input ------------------------------------------------------------

@pytest.mark.parametrize("name, cell, function, input_name", [
    ("rf_in_place+gae_list_for_float64+combined_namedtuple", "reinforce_loss", "reinforce_loss",
     "rewards"),
    ("rf_baseline+combined_sub_in_place", "ppo_combined_loss", "ppo_combined_loss", "returns"),
    ("mm_in_place+token_gae_junk+ppo_detached_values", "masked_mean", "masked_mean", "x"),
])
def test_an_in_place_change_loses_points_on_its_question(graded, name, cell, function,
                                                         input_name):
    g = graded[name]
    assert g.lost.get(cell, 0.0) > 0, g.outputs
    assert any(t.startswith("The inputs are never modified") for t in failed_tests(g, cell)), \
        failed_tests(g, cell)
    assert f"{function} changed its input {input_name} in place" in g.outputs[cell]


def test_an_in_place_change_with_right_numbers_costs_only_that_test(graded):
    """rewards.neg_() and returns.sub_(values) give the right loss and gradients: only the
    inputs-not-modified test may fail on their question."""
    for name, cell in (("rf_in_place+gae_list_for_float64+combined_namedtuple",
                        "reinforce_loss"),
                       ("rf_baseline+combined_sub_in_place", "ppo_combined_loss")):
        failed = failed_tests(graded[name], cell)
        assert len(failed) == 1 and failed[0].startswith("The inputs are never modified"), \
            (name, failed)


# --- types and dtypes --------------------------------------------------------------------------

def test_a_list_only_for_float64_loses_the_type_point(graded):
    g = graded["rf_in_place+gae_list_for_float64+combined_namedtuple"]
    failed = failed_tests(g, "compute_gae")
    assert len(failed) == 1 and failed[0].startswith("The result is a torch tensor"), failed
    assert g.lost["compute_gae"] == pytest.approx(
        g.max_scores["compute_gae: " + failed[0]])
    assert "the contract asks for a 1-D torch tensor" in g.outputs["compute_gae"]


def test_a_namedtuple_return_gets_full_marks(graded):
    g = graded["rf_in_place+gae_list_for_float64+combined_namedtuple"]
    assert g.lost["ppo_combined_loss"] == 0.0, g.outputs.get("ppo_combined_loss")
    assert g.lost["ppo_training"] == 0.0, g.outputs.get("ppo_training")


def test_a_part2_loss_in_float32_gets_full_marks(graded):
    g = graded["token_ppo_float32"]
    assert g.lost["token_ppo_loss"] == 0.0, g.outputs.get("token_ppo_loss")


# --- the false hints of issue 13 ---------------------------------------------------------------

def test_value_loss_cut_by_item_is_not_called_wrong_order(graded):
    g = graded["combined_value_item"]
    text = g.outputs["ppo_combined_loss"]
    assert g.lost["ppo_combined_loss"] > 0
    assert "wrong order" not in text, text
    assert "no gradient of total_loss reaches values" in text
    assert "value_loss is a float" in text


def test_a_detached_value_is_not_read_as_a_shape(graded):
    g = graded["mm_in_place+token_gae_junk+ppo_detached_values"]
    text = g.outputs["token_ppo_loss"]
    assert "no gradient of total_loss reaches values" in text, text
    assert "The shape is" not in text and HINT_PREFIX not in text, text


def test_a_baseline_inside_reinforce_is_not_called_renormalised_logits(graded):
    g = graded["rf_baseline+combined_sub_in_place"]
    text = g.outputs["reinforce_loss"]
    assert g.lost["reinforce_loss"] > 0
    assert HINT_PREFIX not in text, text      # no catalogued mistake is this one


def test_clipped_term_only_gets_no_contradictory_guesses(graded):
    g = graded["combined_clipped_only"]
    text = g.outputs["ppo_combined_loss"]
    assert g.lost["ppo_combined_loss"] > 0
    assert HINT_PREFIX not in text, text      # no catalogued mistake is this one


def test_junk_in_the_padding_is_not_said_to_flow_into_real_tokens(graded):
    g = graded["mm_in_place+token_gae_junk+ppo_detached_values"]
    text = g.outputs["compute_token_gae"]
    assert g.lost["compute_token_gae"] > 0
    assert "flow back into the real tokens" not in text and "leak into them" not in text, text
    assert "(row " in text, text


# --- the worker's side: tuple subclasses, inputs built like the loop's, contents echoed ---------

WORKER_CELL = '''\
from typing import NamedTuple
import torch

class Losses(NamedTuple):
    total: torch.Tensor
    policy: torch.Tensor

class Liar(tuple):
    def __iter__(self):
        return iter(())
    def __len__(self):
        return 0
    def __getitem__(self, i):
        raise IndexError(i)

def named(x):
    return Losses((x * 2).sum(), x.sum())

def liar(x):
    return Liar((x.sum(), 1.5))

def negate_in_place(x, values):
    x.neg_()
    values.append(0.0)
    return x.sum()
'''


@pytest.fixture(scope="module")
def worker_student():
    from autograder.config import load_settings
    from autograder.proxy import StudentProxy
    from autograder.sandbox.client import Worker

    w = Worker(load_settings(REPO_ROOT).limits, backend="unsafe", device="cpu")
    w.start()
    w.load([{"id": "cell", "source": WORKER_CELL}])
    yield StudentProxy(w)
    w.close()


def test_tuple_subclasses_travel_as_tuples(worker_student):
    import numpy as np

    from autograder.proxy import Backward, Tensor

    x = Tensor(np.asarray([1.0, 2.0], np.float32), requires_grad=True, name="x")
    got = worker_student.call("named", x, backward=Backward(output=0, wrt=["x"]))
    assert isinstance(got.value, tuple) and len(got.value) == 2
    assert float(got.value[0]) == 6.0 and got.meta[1].shape == ()
    np.testing.assert_allclose(got.grads["x"], [2.0, 2.0])
    # a subclass that hides its items from iteration and len is read with tuple's own methods
    got = worker_student.call("liar", Tensor(np.asarray([1.0, 2.0], np.float32)))
    assert isinstance(got.value, tuple) and float(got.value[0]) == 3.0 and got.value[1] == 1.5


def test_in_place_changes_are_seen_by_the_parent_and_reported(worker_student):
    import numpy as np

    from autograder.proxy import Computed, Tensor
    from autograder.suites.contracts import changed_inputs

    args = (Computed(Tensor(np.asarray([1.0, -2.0], np.float32), requires_grad=True, name="x")),
            [1.0, 2.0])
    got = worker_student.call("negate_in_place", *args, echo_args=True)
    np.testing.assert_allclose(got.args_after["args"][0], [-1.0, 2.0])   # the parent's own view
    assert got.args_after["args"][1] == [1.0, 2.0, 0.0]
    assert changed_inputs(got, args, {}, ("x", "values")) == ["x", "values"]
    got.mutated = {}          # without the worker's report, the parent still sees both changes
    assert changed_inputs(got, args, {}, ("x", "values")) == ["x", "values"]
