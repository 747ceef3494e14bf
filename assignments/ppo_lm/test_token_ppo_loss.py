"""Hidden tests for ``token_ppo_loss`` (grade cell ``token_ppo_loss``).

Contract: ``token_ppo_loss(logprobs_new, logprobs_old, advantages, values, returns, mask,
epsilon=0.2, vf_coeff=0.5) -> (total_loss, policy_loss, value_loss)``, three 0-dim tensors;
Part 1's clipped policy loss and plain-MSE value loss, each averaged over the real tokens only;
total = policy + vf_coeff * value; gradients flow to logprobs_new and values (none to padding);
any float dtype for the losses; the inputs are never modified.

The student's function is called with ``masked_mean`` bound to the kit's own correct
implementation while it runs (``checks.call_with_kit_masked_mean``): this question is graded on
its own, and a mistake in ``masked_mean`` costs points on ``masked_mean`` only.
"""
import numpy as np
import pytest

from autograder.mistakes import Mistake
from autograder.proxy import Backward, StudentError, Tensor
from autograder.suites.checks import backed_by, describe, is_tensor, scalar, tuple_of
from autograder.suites.contracts import expect_inputs_unchanged
from .hidden_inputs import (bool_mask, call_with_kit_masked_mean, expect_values,
                                             np_ppo_losses, ppo_batch)

GRADE_CELL = "token_ppo_loss"
FN = "token_ppo_loss"
NAMES = ("total_loss", "policy_loss", "value_loss")
ARG_NAMES = ["logprobs_new", "logprobs_old", "advantages", "values", "returns", "mask"]
BACKWARD = Backward(output=0, wrt=["lp_new", "values"])

# The notebook's example: row 1 has one real token, its padding holds numbers that change nothing.
SEED = {"lp_new": [[-0.5, -1.0], [-0.3, 3.0]], "lp_old": [[-0.7, -0.8], [-0.5, -3.0]],
        "adv": [[2.0, -1.0], [0.5, 7.0]], "values": [[0.5, 1.0], [-0.5, 30.0]],
        "returns": [[1.0, 0.0], [0.5, -30.0]], "mask": [[1.0, 1.0], [1.0, 0.0]],
        "lengths": [2, 1]}
SEED_LOSSES = (-0.3520897, -0.7270897, 0.75)
SEED_GRAD_LP = [[0.0, 0.2729103], [0.0, 0.0]]
SEED_GRAD_V = [[-1 / 6, 1 / 3], [-1 / 3, 0.0]]
SEED_EPS01_VF1 = {0: 0.1333333, 1: -0.6166667}


def args_of(batch: dict, dtype=np.float32, mask: str = "float") -> tuple:
    """The six arguments; logprobs_new and values are gradient leaves."""
    f = lambda k: np.asarray(batch[k], dtype=dtype)  # noqa: E731
    m = bool_mask(batch["mask"]) if mask == "bool" else Tensor(f("mask"))
    return (Tensor(f("lp_new"), requires_grad=True, name="lp_new"), Tensor(f("lp_old")),
            Tensor(f("adv")), Tensor(f("values"), requires_grad=True, name="values"),
            Tensor(f("returns")), m)


def student_call(student, args, kwargs=None, backward=None, device="cpu"):
    return call_with_kit_masked_mean(student, FN, list(args), ARG_NAMES, kwargs=kwargs,
                                     backward_output=None if backward is None else
                                     backward.output, device=device)


def prober(student, device):
    """How autograder.hints calls the student's function on its probes: as the tests do, with
    the kit's masked_mean."""
    return lambda args, kwargs, backward: student_call(student, args, kwargs, backward, device)


def losses(student, reference, hints, device, what, batch, kwargs=None, fixed=None,
           check=(0, 1, 2), dtype=np.float32, mask="float"):
    """Compare the chosen outputs with the reference's on ``batch``; returns both replies."""
    kwargs = kwargs or {}
    args = args_of(batch, dtype, mask)
    ref = reference.call(FN, *args, **kwargs)
    for i, value in (fixed or {}).items():
        backed_by(ref.value[i], value, f"{NAMES[i]} of {what}")
    got = student_call(student, args, kwargs, device=device)
    values = tuple_of(got, 3, FN)
    for i in check:
        expect_values(values[i], ref.value[i], f"{NAMES[i]} of {what}",
                      lambda i=i: hints.explain(FN, args, kwargs, got, index=i,
                                                expected=ref.value[i],
                                                student_call=prober(student, device)))
    return got, ref


def gradients(student, reference, hints, device, what, batch, kwargs=None, fixed=None,
              leaves=("lp_new", "values")):
    """Gradients of total_loss with respect to logprobs_new and values, against the reference's
    (0 on the padding)."""
    kwargs = kwargs or {}
    args = args_of(batch)
    ref = reference.call(FN, *args, backward=BACKWARD, **kwargs)
    for leaf, value in (fixed or {}).items():
        backed_by(ref.grads[leaf], value, f"the gradient of {what}")
    try:
        got = student_call(student, args, kwargs, backward=BACKWARD, device=device)
    except StudentError as exc:
        if exc.stage != "backward":
            raise
        raise Mistake(f"{what}: total_loss cannot be back-propagated ({exc.type}: "
                      f"{exc.message}). It must be a tensor connected to logprobs_new and "
                      "values.") from None
    # the reference's leaves are named lp_new and values; the student's gradients likewise
    got.grads = {{"logprobs_new": "lp_new"}.get(k, k): v for k, v in (got.grads or {}).items()}
    for leaf in leaves:
        label = {"lp_new": "logprobs_new", "values": "values"}[leaf]
        grad = got.grads.get(leaf)
        if grad is None:
            hint = hints.explain(FN, args, kwargs, got, aspect=f"grad:{leaf}",
                                 backward=BACKWARD, student_call=prober(student, device))
            raise Mistake(f"{what}: no gradient of total_loss reaches {label}. Keep it in the "
                          "graph: no .detach(), no .item(), no new tensor built from its numbers."
                          + (f" {hint}" if hint else ""))
        expect_values(grad, ref.grads[leaf], f"{what}: the gradient of total_loss with respect "
                      f"to {label}",
                      lambda leaf=leaf: hints.explain(FN, args, kwargs, got,
                                                      backward=BACKWARD, aspect=f"grad:{leaf}",
                                                      expected=ref.grads[leaf],
                                                      student_call=prober(student, device)))


@pytest.mark.weight(2)
def test_seed_example(student, reference, hints, device):
    """The notebook's example: three real tokens, numbers in the padding that change nothing"""
    what = "the notebook's example"
    losses(student, reference, hints, device, what, SEED,
           fixed={0: SEED_LOSSES[0], 1: SEED_LOSSES[1], 2: SEED_LOSSES[2]})
    gradients(student, reference, hints, device, what, SEED,
              fixed={"lp_new": SEED_GRAD_LP, "values": SEED_GRAD_V})


def test_epsilon_vf_coeff_bool_mask(student, reference, hints, device):
    """epsilon and vf_coeff are used; a bool mask works the same"""
    losses(student, reference, hints, device,
           "the notebook's example with epsilon=0.1, vf_coeff=1.0 and a bool mask", SEED,
           {"epsilon": 0.1, "vf_coeff": 1.0}, fixed=SEED_EPS01_VF1, mask="bool")


@pytest.mark.weight(2)
def test_random_padded_batch(student, reference, hints, rng, device):
    """A random batch: rows of different lengths, junk in the padding; losses and gradients"""
    batch = ppo_batch(rng, 6, 8)
    what = f"6 rows of lengths {batch['lengths'].tolist()} (T = 8)"
    want = np_ppo_losses(batch)
    losses(student, reference, hints, device, what, batch,
           fixed={0: want[0], 1: want[1], 2: want[2]})
    gradients(student, reference, hints, device, what, batch)


def test_random_epsilon_and_vf_coeff(student, reference, hints, rng, device):
    """Random epsilon and vf_coeff on a random batch"""
    batch = ppo_batch(rng, 5, 10)
    eps = float(np.round(rng.uniform(0.06, 0.15), 3))
    vf = float(np.round(rng.uniform(1.5, 3.0), 3))
    want = np_ppo_losses(batch, eps, vf)
    losses(student, reference, hints, device,
           f"rows of lengths {batch['lengths'].tolist()} with epsilon={eps}, vf_coeff={vf}",
           batch, {"epsilon": eps, "vf_coeff": vf}, fixed={0: want[0], 1: want[1], 2: want[2]})


def test_value_loss_over_real_tokens(student, reference, hints, rng, device):
    """value_loss averages the squared error over the real tokens only"""
    batch = ppo_batch(rng, 5, 7)
    losses(student, reference, hints, device,
           f"rows of lengths {batch['lengths'].tolist()} (values and returns differ by up to "
           "60 in the padding)", batch, fixed={2: np_ppo_losses(batch)[2]}, check=(2,))


def test_policy_loss_over_real_tokens(student, reference, hints, rng, device):
    """policy_loss averages over the real tokens only (a batch with much padding)"""
    batch = ppo_batch(rng, 8, 12)
    losses(student, reference, hints, device,
           f"rows of lengths {batch['lengths'].tolist()} (T = 12)", batch,
           fixed={1: np_ppo_losses(batch)[1]}, check=(1,))


def test_float64(student, reference, hints, rng, device):
    """float64 inputs give the same numbers (the contract leaves the losses' dtype free)"""
    batch = ppo_batch(rng, 4, 6)
    losses(student, reference, hints, device, "a float64 batch", batch,
           fixed=dict(enumerate(np_ppo_losses(batch, dtype=np.float64))), dtype=np.float64)


def test_outputs_are_0dim_tensors(student, hints, rng, device):
    """All three outputs are 0-dim tensors (float32 and float64 inputs)"""
    batch = ppo_batch(rng, 3, 5)
    for dtype in (np.float32, np.float64):
        outputs_are_0dim_tensors(student, hints, device, args_of(batch, dtype))


def outputs_are_0dim_tensors(student, hints, device, args):
    got = student_call(student, args, device=device)
    values = tuple_of(got, 3, FN)
    for i, v in enumerate(values):
        if not is_tensor(got, i):
            hint = hints.explain(FN, args, {}, got, aspect="type", index=i,
                                 student_call=prober(student, device))
            raise Mistake(f"{NAMES[i]} is {describe(v)}; all three outputs must be 0-dim torch "
                          "tensors (no .item(), no float())." + (f" {hint}" if hint else ""))
        if tuple(got.meta[i].shape) != ():
            hint = hints.explain(FN, args, {}, got, aspect="shape", index=i,
                                 student_call=prober(student, device))
            raise Mistake(f"{NAMES[i]} has shape {tuple(got.meta[i].shape)}; it must be a 0-dim "
                          "tensor (one mean over the real tokens)." + (f" {hint}" if hint else ""))


def test_total_is_policy_plus_weighted_value(student, reference, hints, rng, device):
    """total_loss = policy_loss + vf_coeff * value_loss"""
    batch = ppo_batch(rng, 4, 6)
    vf = float(np.round(rng.uniform(0.2, 0.9), 3))
    got, _ = losses(student, reference, hints, device, f"a random batch with vf_coeff={vf}",
                    batch, {"vf_coeff": vf}, check=(0,))
    total, policy, value = (scalar(v, n) for v, n in zip(tuple_of(got, 3, FN), NAMES))
    if abs(total - (policy + vf * value)) > 1e-4:
        raise Mistake(f"With vf_coeff={vf}, your outputs do not satisfy total_loss = "
                      f"policy_loss + vf_coeff * value_loss: {total:.6g} vs "
                      f"{policy:.6g} + {vf} * {value:.6g}.")


def test_no_gradient_to_padding(student, reference, hints, rng, device):
    """Gradients reach logprobs_new and values on the real tokens, never on the padding"""
    batch = ppo_batch(rng, 5, 6)
    gradients(student, reference, hints, device,
              f"rows of lengths {batch['lengths'].tolist()}", batch)


def test_inputs_not_modified(student, hints, rng, device):
    """The inputs are never modified (float and bool masks, with and without gradients)"""
    batch = ppo_batch(rng, 4, 5)
    plain = lambda args: tuple(Tensor(a.data) if isinstance(a, Tensor) else a  # noqa: E731
                               for a in args)
    for what, args in (("a float mask", args_of(batch)),
                       ("a bool mask", args_of(batch, mask="bool")),
                       ("float64 tensors without gradients", plain(args_of(batch, np.float64)))):
        try:
            got = student_call(student, args, device=device)
        except StudentError as exc:
            if "in-place operation" not in exc.message:
                raise
            raise Mistake(f"token_ppo_loss changed one of its inputs in place (with {what}): "
                          f"{exc.message}. It must leave its inputs as they were: work on new "
                          "tensors.") from None
        expect_inputs_unchanged(got, FN, args, {}, ARG_NAMES, what, outputs=3)
