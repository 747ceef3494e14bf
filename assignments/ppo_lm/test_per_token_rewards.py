"""Hidden tests for ``per_token_rewards`` (grade cell ``per_token_rewards``).

Contract: ``per_token_rewards(logprobs, ref_logprobs, scores, mask, kl_coef=0.1)`` returns a
(B, T) tensor with the dtype and device of ``logprobs``: ``-kl_coef * (logprobs - ref_logprobs)``
on the real tokens, 0 on the padding, and ``scores[b]`` added at the last real token of row b.
``scores`` is a tensor or a list; ``mask`` is float (1/0) or bool; the inputs are never modified.
"""
import numpy as np
import pytest

from autograder.mistakes import Mistake
from autograder.suites.checks import against_reference, expect_tensor, is_tensor, numbers
from autograder.suites.contracts import expect_inputs_unchanged
from .hidden_inputs import (RTOL, bool_mask, mask_of, np_per_token_rewards,
                                             rlhf_batch, tensor, with_junk)

GRADE_CELL = "per_token_rewards"
FN = "per_token_rewards"

# The notebook's example and its documented values (they back the reference up).
SEED_LP = [[-1.0, -0.5, -2.0], [-0.3, -1.2, -0.7]]
SEED_REF = [[-1.2, -0.5, -1.0], [-0.4, -1.0, -5.0]]
SEED_SCORES = [1.0, -0.5]
SEED_MASK = [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
SEED_REWARDS = [[-0.02, 0.0, 1.1], [-0.01, -0.48, 0.0]]
SEED_REWARDS_05 = [[-0.1, 0.0, 1.5], [-0.05, -0.4, 0.0]]


def check(student, reference, hints, what, args, kwargs=None, fixed=None):
    return against_reference(student, reference, hints, FN, what, args, kwargs, fixed=fixed,
                             rtol=RTOL)[0]


def batch_args(batch, dtype=np.float32, mask="float", scores="tensor"):
    m = bool_mask(batch["mask"]) if mask == "bool" else tensor(batch["mask"], dtype)
    s = tensor(batch["scores"], dtype) if scores == "tensor" else \
        [float(x) for x in np.asarray(batch["scores"], dtype=dtype)]
    return (tensor(batch["logprobs"], dtype), tensor(batch["ref_logprobs"], dtype), s, m)


def independent(batch, kl_coef, dtype=np.float32):
    f = lambda k: np.asarray(batch[k], dtype=dtype)  # noqa: E731
    return np_per_token_rewards(f("logprobs"), f("ref_logprobs"), f("scores"), batch["lengths"],
                                kl_coef)


@pytest.mark.weight(2)
def test_seed_example(student, reference, hints):
    """The notebook's example: the KL penalty on every real token, the score at the last one"""
    args = (tensor(SEED_LP), tensor(SEED_REF), tensor(SEED_SCORES), tensor(SEED_MASK))
    check(student, reference, hints, "per_token_rewards on the notebook's example (kl_coef=0.1)",
          args, {"kl_coef": 0.1}, fixed=SEED_REWARDS)
    check(student, reference, hints,
          "per_token_rewards on the notebook's example with kl_coef=0.5 and a bool mask",
          (tensor(SEED_LP), tensor(SEED_REF), tensor(SEED_SCORES), bool_mask(SEED_MASK)),
          {"kl_coef": 0.5}, fixed=SEED_REWARDS_05)


@pytest.mark.weight(2)
def test_random_padded_batch(student, reference, hints, rng):
    """A random batch: rows of different lengths, junk in the padding"""
    batch = rlhf_batch(rng, 6, 9)
    kl = float(np.round(rng.uniform(0.05, 0.4), 3))
    check(student, reference, hints,
          f"per_token_rewards on 6 rows of lengths {batch['lengths'].tolist()} (T = 9, "
          f"kl_coef={kl})", batch_args(batch), {"kl_coef": kl}, fixed=independent(batch, kl))


def test_default_kl_coef(student, reference, hints, rng):
    """kl_coef defaults to 0.1"""
    batch = rlhf_batch(rng, 4, 7)
    check(student, reference, hints,
          f"per_token_rewards without kl_coef on rows of lengths {batch['lengths'].tolist()}",
          batch_args(batch), fixed=independent(batch, 0.1))


def test_last_real_token_gets_the_score(student, reference, hints, rng):
    """The score goes to the last real token of each row, whatever the row's length"""
    lengths = np.asarray([8, 1, 3, 5, 7])
    mask = mask_of(lengths, 8)
    same = with_junk(rng, np.full((5, 8), -1.0), mask, 20.0)   # no KL penalty on real tokens
    batch = {"lengths": lengths, "mask": mask, "logprobs": same, "ref_logprobs": same,
             "scores": rng.uniform(0.2, 1.0, size=5) * rng.choice([-1.0, 1.0], size=5)}
    check(student, reference, hints,
          "per_token_rewards with equal log-probabilities (no penalty) on rows of lengths "
          "[8, 1, 3, 5, 7]", batch_args(batch), {"kl_coef": 0.1}, fixed=independent(batch, 0.1))


def test_bool_and_float_masks(student, reference, hints, rng):
    """A bool mask and a float mask give the same rewards"""
    batch = rlhf_batch(rng, 5, 6)
    check(student, reference, hints, "per_token_rewards with a float mask",
          batch_args(batch, mask="float"), fixed=independent(batch, 0.1))
    check(student, reference, hints, "per_token_rewards with a bool mask",
          batch_args(batch, mask="bool"), fixed=independent(batch, 0.1))


def test_scores_as_list(student, reference, hints, rng):
    """scores given as a list of floats"""
    batch = rlhf_batch(rng, 4, 6)
    check(student, reference, hints, "per_token_rewards with scores as a Python list",
          batch_args(batch, scores="list"), fixed=independent(batch, 0.1))


def test_float64(student, reference, hints, rng):
    """float64 inputs: float64 rewards with the same numbers"""
    batch = rlhf_batch(rng, 4, 7)
    args = batch_args(batch, dtype=np.float64)
    got = check(student, reference, hints, "per_token_rewards with float64 inputs", args,
                fixed=independent(batch, 0.1, np.float64))
    if is_tensor(got) and got.meta.dtype != "float64":
        hint = hints.explain(FN, args, {}, got, aspect="dtype")
        raise Mistake(f"per_token_rewards with float64 log-probabilities returned a "
                      f"{got.meta.dtype} tensor; it must have the dtype of logprobs (float64)."
                      + (f" {hint}" if hint else ""))


def test_returns_a_tensor_of_shape_b_t(student, hints, rng):
    """The result is a (B, T) torch tensor (float32 and float64 inputs)"""
    batch = rlhf_batch(rng, 3, 5)
    for dtype in (np.float32, np.float64):
        args = batch_args(batch, dtype)
        expect_tensor(student.call(FN, *args), hints, FN, args,
                      contract="a (B, T) torch tensor", shape=(3, 5),
                      on=f"a {np.dtype(dtype).name} batch of 3 rows and 5 tokens",
                      why=", one reward per token")


def test_device_follows_logprobs(student, hints, rng, device):
    """The result is on the device of logprobs"""
    batch = rlhf_batch(rng, 3, 5)
    args = batch_args(batch)
    got = student.call(FN, *args)
    if is_tensor(got) and got.meta.device.split(":")[0] != device:
        hint = hints.explain(FN, args, {}, got, aspect="device")
        raise Mistake(f"per_token_rewards with inputs on {device} returned a tensor on "
                      f"{got.meta.device}." + (f" {hint}" if hint else ""))
    numbers(got.value, FN)


def test_inputs_not_modified(student, hints, rng):
    """The inputs are never modified"""
    batch = rlhf_batch(rng, 4, 6)
    for what, args in (("a float mask and scores as a tensor", batch_args(batch)),
                       ("a bool mask and scores as a list", batch_args(batch, mask="bool",
                                                                      scores="list")),
                       ("float64 tensors", batch_args(batch, np.float64))):
        got = student.call(FN, *args, echo_args=True)
        expect_inputs_unchanged(got, FN, args, {}, ("logprobs", "ref_logprobs", "scores",
                                                    "mask"), what,
                                lambda: hints.explain(FN, args, {}, got, aspect="mutated"))
