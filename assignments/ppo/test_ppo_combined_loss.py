"""Hidden tests for ``ppo_combined_loss`` (grade cell ``ppo_combined_loss``).

Contract: ``ppo_combined_loss(log_probs_new, log_probs_old, advantages, values, returns,
epsilon=0.2, vf_coeff=0.5) -> (total, policy_loss, value_loss)``, three 0-dim tensors;
policy_loss = -mean(min(r*A, clip(r, 1-eps, 1+eps)*A)) with r = exp(new - old);
value_loss = mean((values - returns)^2) (plain MSE); total = policy_loss + vf_coeff*value_loss;
gradients flow to log_probs_new and values; the inputs are never modified.
"""
import numpy as np
import pytest

from autograder.mistakes import Mistake
from autograder.proxy import Backward, Computed, StudentError, Tensor
from autograder.suites.checks import (backed_by, describe, expect_values, is_tensor, scalar,
                                      tuple_of)
from autograder.suites.contracts import expect_inputs_unchanged
from .hidden_inputs import random_ppo_batch

GRADE_CELL = "ppo_combined_loss"
FN = "ppo_combined_loss"
NAMES = ("total_loss", "policy_loss", "value_loss")
ARG_NAMES = ("log_probs_new", "log_probs_old", "advantages", "values", "returns")

# Documented values (grading-validity) that back the reference up.
SEED = {"lp_new": [-0.5, -1.0, -0.3], "lp_old": [-0.7, -0.8, -0.5], "adv": [2.0, -1.0, 0.5],
        "values": [0.5, 1.0, -0.5], "returns": [1.0, 0.0, 0.5]}
SEED_LOSSES = (-0.3520897, -0.7270897, 0.75)
SEED_GRAD_LP = [0.0, 0.2729103, 0.0]
CASE_Q = {"lp_new": [-0.5, -1.5, -0.5, -1.5, -0.9], "lp_old": [-1.0] * 5,
          "adv": [1.0, 1.0, -1.0, -1.0, 0.5]}
CASE_Q_POLICY = 0.0179210
CASE_Q_GRAD = [0.0, -0.1213061, 0.3297443, 0.0, -0.1105171]

BACKWARD = Backward(output=0, wrt=["lp_new", "values"])


def args_of(batch: dict, dtype=np.float32) -> tuple:
    """The five tensor arguments; log_probs_new and values are leaves that carry gradients."""
    f = lambda k: np.asarray(batch[k], dtype=dtype)  # noqa: E731
    return (Tensor(f("lp_new"), requires_grad=True, name="lp_new"), Tensor(f("lp_old")),
            Tensor(f("adv")), Tensor(f("values"), requires_grad=True, name="values"),
            Tensor(f("returns")))


def losses(student, reference, hints, what, batch, kwargs=None, fixed=None, check=(0, 1, 2)):
    """Compare the chosen outputs with the reference's on ``batch``; returns both replies."""
    kwargs = kwargs or {}
    args = args_of(batch)
    ref = reference.call(FN, *args, **kwargs)
    if fixed is not None:
        for i, value in fixed.items():
            backed_by(ref.value[i], value, f"{NAMES[i]} of {what}")
    got = student.call(FN, *args, **kwargs)
    values = tuple_of(got, 3, FN)
    for i in check:
        expect_values(values[i], ref.value[i], f"{NAMES[i]} of {what}",
                      lambda i=i: hints.explain(FN, args, kwargs, got, index=i,
                                                expected=ref.value[i]))
    return got, ref


def gradients(student, reference, hints, what, batch, kwargs=None, fixed_lp=None,
              leaves=("lp_new", "values")):
    """Gradients of the total loss w.r.t. log_probs_new and values, against the reference's."""
    kwargs = kwargs or {}
    args = args_of(batch)
    ref = reference.call(FN, *args, backward=BACKWARD, **kwargs)
    if fixed_lp is not None:
        backed_by(ref.grads["lp_new"], fixed_lp, f"the gradient of {what}")
    try:
        got = student.call(FN, *args, backward=BACKWARD, **kwargs)
    except StudentError as exc:
        if exc.stage != "backward":
            raise
        plain = student.call(FN, *args, **kwargs)
        hint = hints.explain(FN, args, kwargs, plain, aspect="graph", index=0)
        raise Mistake(f"{what}: total_loss cannot be back-propagated ({exc.type}: "
                      f"{exc.message}). It must be a tensor connected to log_probs_new and "
                      "values." + (f" {hint}" if hint else "")) from None
    for leaf in leaves:
        label = {"lp_new": "log_probs_new", "values": "values"}[leaf]
        grad = (got.grads or {}).get(leaf)
        if grad is None:
            hint = hints.explain(FN, args, kwargs, got, aspect=f"grad:{leaf}", backward=BACKWARD)
            raise Mistake(f"{what}: no gradient of total_loss reaches {label}. Keep it in the "
                          "graph: no .detach(), no .item(), no new tensor built from its numbers."
                          + (f" {hint}" if hint else ""))
        expect_values(grad, ref.grads[leaf], f"{what}: the gradient of total_loss with respect "
                      f"to {label}",
                      lambda leaf=leaf: hints.explain(FN, args, kwargs, got, backward=BACKWARD,
                                                      aspect=f"grad:{leaf}",
                                                      expected=ref.grads[leaf]))


def with_values(rng, batch: dict) -> dict:
    n = len(batch["lp_new"])
    values = rng.normal(0.0, 1.0, size=n)
    return dict(batch, values=values, returns=values + rng.normal(0.0, 1.0, size=n))


@pytest.mark.weight(2)
def test_seed_example(student, reference, hints):
    """The notebook's example: total, policy and value losses"""
    losses(student, reference, hints, "the notebook's example", SEED,
           fixed={0: SEED_LOSSES[0], 1: SEED_LOSSES[1], 2: SEED_LOSSES[2]})


@pytest.mark.weight(2)
def test_case_q_every_sign_and_clip(student, reference, hints, rng):
    """Every sign and clip combination: the policy loss and its gradient"""
    batch = with_values(rng, CASE_Q)
    what = ("log_probs_new [-0.5, -1.5, -0.5, -1.5, -0.9], log_probs_old all -1, advantages "
            "[1, 1, -1, -1, 0.5]")
    losses(student, reference, hints, what, batch, fixed={1: CASE_Q_POLICY}, check=(1,))
    gradients(student, reference, hints, what, batch, fixed_lp=CASE_Q_GRAD, leaves=("lp_new",))


@pytest.mark.weight(2)
def test_random_batch(student, reference, hints, rng):
    """A random batch: all three losses and both gradients"""
    batch = random_ppo_batch(rng, 16)
    losses(student, reference, hints, "a random batch of 16", batch)
    gradients(student, reference, hints, "a random batch of 16", batch)


def test_value_loss_is_plain_mse(student, reference, hints, rng):
    """value_loss is the plain mean squared error (no factor 0.5, returns as targets)"""
    batch = random_ppo_batch(rng, 8)
    expected = np.mean((np.float32(batch["values"]) - np.float32(batch["returns"])) ** 2)
    losses(student, reference, hints, "a random batch of 8", batch, fixed={2: expected},
           check=(2,))


def test_vf_coeff_used(student, reference, hints, rng):
    """A non-default vf_coeff weighs the value loss in the total"""
    batch = random_ppo_batch(rng, 8)
    vf = float(np.round(rng.uniform(1.5, 3.0), 3))
    losses(student, reference, hints, f"a random batch of 8 with vf_coeff={vf}", batch,
           {"vf_coeff": vf})


def test_epsilon_used(student, reference, hints, rng):
    """A non-default epsilon sets the clip range"""
    batch = random_ppo_batch(rng, 24)
    eps = float(np.round(rng.uniform(0.06, 0.12), 3))
    losses(student, reference, hints, f"a random batch of 24 with epsilon={eps}", batch,
           {"epsilon": eps}, check=(1,))


def test_total_is_policy_plus_weighted_value(student, reference, hints, rng):
    """total_loss = policy_loss + vf_coeff * value_loss, with value_loss the plain MSE"""
    batch = random_ppo_batch(rng, 8)
    vf = float(np.round(rng.uniform(0.2, 0.9), 3))
    got, ref = losses(student, reference, hints, f"a random batch of 8 with vf_coeff={vf}",
                      batch, {"vf_coeff": vf}, check=(2, 0))
    total, policy, value = (scalar(v, n) for v, n in zip(tuple_of(got, 3, FN), NAMES))
    if abs(total - (policy + vf * value)) > 1e-4:
        raise Mistake(f"With vf_coeff={vf}, your outputs do not satisfy total_loss = "
                      f"policy_loss + vf_coeff * value_loss: {total:.6g} vs "
                      f"{policy:.6g} + {vf} * {value:.6g}.")


def test_output_order(student, reference, hints, rng):
    """The tuple is (total_loss, policy_loss, value_loss), in that order"""
    batch = random_ppo_batch(rng, 8)
    args = args_of(batch)
    ref = reference.call(FN, *args)
    got = student.call(FN, *args)
    values = tuple_of(got, 3, FN)
    try:
        mine = [scalar(v, n) for v, n in zip(values, NAMES)]
    except (TypeError, ValueError):
        raise Mistake(f"{FN} must return three single numbers (0-dim tensors); it returned "
                      f"{', '.join(describe(v) for v in values)}") from None
    expected = [float(np.asarray(v)) for v in ref.value]
    if np.allclose(mine, expected, atol=1e-4):
        return
    order = []
    for m in mine:
        where = [NAMES[j] for j, e in enumerate(expected) if abs(m - e) <= 1e-4]
        order.append(where[0] if where else "?")
    if "?" not in order and sorted(order) == sorted(NAMES):
        raise Mistake(f"The outputs are in the wrong order: yours are ({', '.join(order)}); "
                      "return (total_loss, policy_loss, value_loss).")
    hint = hints.explain(FN, args, {}, got, expected=ref.value)
    raise Mistake("The three outputs are not (total_loss, policy_loss, value_loss) of a random "
                  "batch." + (f" {hint}" if hint else ""))


def loop_args(batch: dict, dtype=np.float32) -> tuple:
    """The five arguments as the notebook's loop passes them: log_probs_new and values carry
    gradients and are not leaves (a network's outputs), the others are plain tensors."""
    f = lambda k: np.asarray(batch[k], dtype=dtype)  # noqa: E731
    return (Computed(Tensor(f("lp_new"), requires_grad=True, name="lp_new")), Tensor(f("lp_old")),
            Tensor(f("adv")), Computed(Tensor(f("values"), requires_grad=True, name="values")),
            Tensor(f("returns")))


def test_outputs_are_0dim_tensors(student, hints, rng):
    """All three outputs are 0-dim tensors (float32 and float64 inputs)"""
    batch = random_ppo_batch(rng, 6)
    for dtype in (np.float32, np.float64):
        outputs_are_0dim_tensors(student, hints, args_of(batch, dtype))


def outputs_are_0dim_tensors(student, hints, args):
    got = student.call(FN, *args)
    values = tuple_of(got, 3, FN)
    for i, v in enumerate(values):
        if not is_tensor(got, i):
            hint = hints.explain(FN, args, {}, got, aspect="type", index=i)
            raise Mistake(f"{NAMES[i]} is {describe(v)}; all three outputs must be 0-dim torch "
                          "tensors (no .item(), no float())." + (f" {hint}" if hint else ""))
        if tuple(got.meta[i].shape) != ():
            hint = hints.explain(FN, args, {}, got, aspect="shape", index=i)
            raise Mistake(f"{NAMES[i]} has shape {tuple(got.meta[i].shape)}; it must be a 0-dim "
                          "tensor (a mean over the batch)." + (f" {hint}" if hint else ""))


def test_gradients_flow(student, reference, hints, rng):
    """Gradients of total_loss reach log_probs_new and values"""
    batch = random_ppo_batch(rng, 10)
    gradients(student, reference, hints, "a random batch of 10", batch)


def test_no_broadcasting(student, reference, hints, rng):
    """values and returns of shape (N,) are compared element by element (no N x N broadcast)"""
    n = int(rng.integers(5, 9))
    batch = random_ppo_batch(rng, n)
    batch["returns"] = batch["values"] + np.linspace(-1.5, 1.5, n)   # every pair differs
    expected = np.mean((np.float32(batch["values"]) - np.float32(batch["returns"])) ** 2)
    losses(student, reference, hints, f"a random batch of {n}", batch, fixed={2: expected},
           check=(2,))
    gradients(student, reference, hints, f"a random batch of {n}", batch, leaves=("values",))


def test_mean_not_sum(student, reference, hints, rng):
    """Both losses average over the batch (a batch of 32)"""
    batch = random_ppo_batch(rng, 32)
    losses(student, reference, hints, "a random batch of 32", batch, check=(1, 2))


def test_inputs_not_modified(student, hints, rng):
    """The inputs are never modified (as the notebook's loop passes them, float32 and float64)"""
    batch = random_ppo_batch(rng, 8)
    for dtype in (np.float32, np.float64):
        args = loop_args(batch, dtype)
        what = (f"{np.dtype(dtype).name} tensors as in the notebook's loop (log_probs_new and "
                "values computed with gradients)")
        got = student.call(FN, *args, echo_args=True)
        expect_inputs_unchanged(got, FN, args, {}, ARG_NAMES, what,
                                lambda: hints.explain(FN, args, {}, got, aspect="mutated"),
                                outputs=3)
