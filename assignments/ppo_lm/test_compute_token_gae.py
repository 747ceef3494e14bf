"""Hidden tests for ``compute_token_gae`` (grade cell ``compute_token_gae``).

Contract: ``compute_token_gae(rewards, values, mask, gamma=1.0, lam=0.95)`` returns a (B, T)
tensor on the device of ``rewards``: for the real tokens of each row, delta_t = r_t +
gamma * V_{t+1} - V_t and A_t = delta_t + gamma * lam * A_{t+1}, where the value and the
advantage after the row's last real token count as 0; the padding gets 0. Every row is its own
episode: nothing crosses from one row to another, nor from the padding into a row. ``mask`` is
float (1/0) or bool; the inputs are never modified.
"""
import numpy as np
import pytest

from autograder.mistakes import Mistake
from autograder.suites.checks import (against_reference, expect_tensor, is_tensor, numbers)
from autograder.suites.contracts import expect_inputs_unchanged
from .hidden_inputs import RTOL, bool_mask, np_token_gae, rlhf_batch, tensor

GRADE_CELL = "compute_token_gae"
FN = "compute_token_gae"

# The notebook's examples and their documented values (they back the reference up).
SEED_REWARDS = [[0.0, 0.0, 1.0], [0.0, -0.5, 0.0]]
SEED_VALUES = [[0.5, 0.6, 0.7], [0.2, 0.1, 9.0]]     # 9.0 sits in the padding of row 1
SEED_MASK = [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
SEED_ADV = [[0.46575, 0.385, 0.3], [-0.67, -0.6, 0.0]]
SEED_ADV_09_05 = [[0.11425, 0.165, 0.3], [-0.38, -0.6, 0.0]]
F64_REWARDS = [[0.1, -0.2, 0.3, 1.0], [0.5, 0.0, 0.0, 0.0]]
F64_VALUES = [[0.4, 0.3, 0.2, 0.1], [0.25, 3.0, 3.0, 3.0]]
F64_MASK = [[True, True, True, True], [True, False, False, False]]
F64_ADV = [[0.6671375, 0.70225, 1.055, 0.9], [0.25, 0.0, 0.0, 0.0]]


def check(student, reference, hints, what, args, kwargs=None, fixed=None):
    return against_reference(student, reference, hints, FN, what, args, kwargs, fixed=fixed,
                             rtol=RTOL)


def batch_args(batch, dtype=np.float32, mask="float"):
    m = bool_mask(batch["mask"]) if mask == "bool" else tensor(batch["mask"], dtype)
    return (tensor(batch["rewards"], dtype), tensor(batch["values"], dtype), m)


def independent(batch, gamma, lam, dtype=np.float32):
    return np_token_gae(np.asarray(batch["rewards"], dtype), np.asarray(batch["values"], dtype),
                        batch["lengths"], gamma, lam)


@pytest.mark.weight(2)
def test_seed_example(student, reference, hints):
    """The notebook's example (gamma = 1, lam = 0.95), with 9.0 in the padding of values"""
    args = (tensor(SEED_REWARDS), tensor(SEED_VALUES), tensor(SEED_MASK))
    check(student, reference, hints, "compute_token_gae on the notebook's example", args,
          fixed=SEED_ADV)
    check(student, reference, hints,
          "compute_token_gae on the notebook's example with gamma=0.9, lam=0.5", args,
          {"gamma": 0.9, "lam": 0.5}, fixed=SEED_ADV_09_05)


def test_single_token_row_float64_bool_mask(student, reference, hints):
    """The notebook's float64 example: a row with a single real token, a bool mask"""
    check(student, reference, hints,
          "compute_token_gae on float64 rows of 4 and 1 real tokens with a bool mask",
          (tensor(F64_REWARDS, np.float64), tensor(F64_VALUES, np.float64),
           bool_mask(F64_MASK)), fixed=F64_ADV)


@pytest.mark.weight(2)
def test_random_padded_batch(student, reference, hints, rng):
    """A random batch: rows of different lengths, junk in the padding, random gamma and lam"""
    batch = rlhf_batch(rng, 6, 12)
    gamma, lam = float(rng.uniform(0.85, 0.99)), float(rng.uniform(0.7, 0.95))
    check(student, reference, hints,
          f"compute_token_gae on 6 rows of lengths {batch['lengths'].tolist()} (T = 12, "
          f"gamma={gamma:.3f}, lam={lam:.3f})", batch_args(batch),
          {"gamma": gamma, "lam": lam}, fixed=independent(batch, gamma, lam))


def test_defaults_gamma_1_lam_095(student, reference, hints, rng):
    """The defaults: gamma = 1, lam = 0.95"""
    batch = rlhf_batch(rng, 5, 8)
    check(student, reference, hints,
          f"compute_token_gae with the default gamma and lam on rows of lengths "
          f"{batch['lengths'].tolist()}", batch_args(batch), fixed=independent(batch, 1.0, 0.95))


def test_lambda_zero_and_one(student, reference, hints, rng):
    """lam = 0 gives the TD residuals; lam = gamma = 1 gives the rewards-to-go minus V"""
    batch = rlhf_batch(rng, 4, 7)
    gamma = float(rng.uniform(0.8, 0.95))
    check(student, reference, hints,
          f"compute_token_gae with lam=0, gamma={gamma:.3f} (rows of lengths "
          f"{batch['lengths'].tolist()})", batch_args(batch), {"gamma": gamma, "lam": 0.0},
          fixed=independent(batch, gamma, 0.0))
    r = np.asarray(batch["rewards"], np.float32).astype(float)
    v = np.asarray(batch["values"], np.float32).astype(float)
    to_go = np.zeros_like(r)   # an independent formula: sum of the row's later rewards - V_t
    for b, n in enumerate(batch["lengths"]):
        to_go[b, :n] = np.cumsum(r[b, :n][::-1])[::-1] - v[b, :n]
    check(student, reference, hints,
          f"compute_token_gae with gamma=1, lam=1 (rows of lengths {batch['lengths'].tolist()})",
          batch_args(batch), {"gamma": 1.0, "lam": 1.0}, fixed=to_go)


@pytest.mark.weight(2)
def test_rows_are_independent(student, reference, hints, rng):
    """Each row is its own episode: nothing leaks across rows or in from the padding"""
    batch = rlhf_batch(rng, 5, 9)
    first = np.argsort(batch["lengths"] != 9, kind="stable")   # a row without padding first:
    batch = {k: v[first] for k, v in batch.items()}              # it is followed by other rows
    gamma, lam = float(rng.uniform(0.9, 1.0)), float(rng.uniform(0.8, 0.95))
    kwargs = {"gamma": gamma, "lam": lam}
    args = batch_args(batch)
    got, ref = check(student, reference, hints,
                     f"compute_token_gae on 5 rows of lengths {batch['lengths'].tolist()}", args,
                     kwargs, fixed=independent(batch, gamma, lam))
    mine = numbers(got.value, FN)
    # every row alone, as a batch of one, must give the same advantages as inside the batch
    for b in range(len(batch["lengths"])):
        one = {k: batch[k][b:b + 1] for k in ("rewards", "values", "mask")}
        alone = student.call(FN, *batch_args(one), **kwargs)
        a = numbers(alone.value, FN).reshape(-1)
        if a.shape != mine[b].shape or not np.allclose(a, mine[b], atol=1e-4, rtol=1e-5):
            hint = hints.explain(FN, args, kwargs, got, expected=ref.value)
            raise Mistake(
                f"Row {b} (length {batch['lengths'][b]}) gets different advantages inside the "
                f"batch than on its own: rows influence each other. Every row is its own "
                "episode; the recursion must restart at 0 after each row's last real token."
                + (f" {hint}" if hint else ""))
    # other numbers in the padding must change nothing
    moved = dict(batch, rewards=np.where(batch["mask"] != 0, batch["rewards"], -batch["rewards"]),
                 values=np.where(batch["mask"] != 0, batch["values"], 3.0 - batch["values"]))
    again = student.call(FN, *batch_args(moved), **kwargs)
    moved_out = numbers(again.value, FN)
    if moved_out.shape != mine.shape:
        raise Mistake(f"compute_token_gae returned shape {moved_out.shape} for one batch and "
                      f"{mine.shape} for the same batch with other numbers in the padding.")
    real = batch["mask"] != 0
    close = np.isclose(moved_out, mine, atol=1e-4, rtol=1e-5)
    if not close[real].all():   # the claim is about the real tokens: checked on them only
        hint = hints.explain(FN, batch_args(moved), kwargs, again)
        raise Mistake("Changing only the numbers in the padding changed your advantages on the "
                      "real tokens: the values or rewards of padding positions leak into them. "
                      "The value after a row's last real token counts as 0."
                      + (f" {hint}" if hint else ""))
    if not close.all():
        raise Mistake("Your advantages on the padding follow the numbers stored there; the "
                      "padding gets advantage 0.")


def test_bool_and_float_masks(student, reference, hints, rng):
    """A bool mask and a float mask give the same advantages"""
    batch = rlhf_batch(rng, 4, 6)
    want = independent(batch, 1.0, 0.95)
    check(student, reference, hints, "compute_token_gae with a float mask", batch_args(batch),
          fixed=want)
    check(student, reference, hints, "compute_token_gae with a bool mask",
          batch_args(batch, mask="bool"), fixed=want)


def test_float64(student, reference, hints, rng):
    """float64 inputs give the float64 advantages"""
    batch = rlhf_batch(rng, 4, 6)
    check(student, reference, hints, "compute_token_gae with float64 inputs",
          batch_args(batch, np.float64), fixed=independent(batch, 1.0, 0.95, np.float64))


def test_returns_a_tensor_of_shape_b_t(student, hints, rng):
    """The result is a (B, T) torch tensor (float32 and float64 inputs)"""
    batch = rlhf_batch(rng, 3, 5)
    for dtype in (np.float32, np.float64):
        args = batch_args(batch, dtype)
        expect_tensor(student.call(FN, *args), hints, FN, args,
                      contract="a (B, T) torch tensor", shape=(3, 5),
                      on=f"3 rows of 5 {np.dtype(dtype).name} tokens",
                      why=", one advantage per token")


def test_device_follows_rewards(student, hints, rng, device):
    """The result is on the device of rewards"""
    batch = rlhf_batch(rng, 3, 5)
    args = batch_args(batch)
    got = student.call(FN, *args)
    if is_tensor(got) and got.meta.device.split(":")[0] != device:
        hint = hints.explain(FN, args, {}, got, aspect="device")
        raise Mistake(f"compute_token_gae with inputs on {device} returned a tensor on "
                      f"{got.meta.device}." + (f" {hint}" if hint else ""))


def test_inputs_not_modified(student, hints, rng):
    """The inputs are never modified"""
    batch = rlhf_batch(rng, 4, 6)
    for what, args in (("float32 tensors and a float mask", batch_args(batch)),
                       ("float64 tensors and a bool mask", batch_args(batch, np.float64,
                                                                      "bool"))):
        got = student.call(FN, *args, echo_args=True)
        expect_inputs_unchanged(got, FN, args, {}, ("rewards", "values", "mask"), what,
                                lambda: hints.explain(FN, args, {}, got, aspect="mutated"))
