"""Hidden tests for ``masked_mean`` (grade cell ``masked_mean``).

Contract: ``masked_mean(x, mask)`` returns a 0-dim tensor with the dtype of ``x``: the sum of
``x`` over the real tokens divided by their number, on the device of ``x``; whatever the padding
holds does not matter; gradients flow to ``x``; ``mask`` is float (1/0) or bool; the inputs are
never modified.
"""
import numpy as np
import pytest

from autograder.mistakes import Mistake
from autograder.proxy import Backward, Computed, StudentError
from autograder.suites.checks import against_reference, backed_by, describe, is_tensor, numbers
from autograder.suites.contracts import expect_inputs_unchanged
from .hidden_inputs import (RTOL, bool_mask, expect_values, mask_of,
                                             np_masked_mean, row_lengths, tensor, with_junk)

GRADE_CELL = "masked_mean"
FN = "masked_mean"

SEED_X = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
SEED_MASK = [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
HUGE_X = [[0.5, -1.5, 1e30], [2.0, 1e30, 1e30]]


def check(student, reference, hints, what, args, fixed=None, backward=None):
    return against_reference(student, reference, hints, FN, what, args, fixed=fixed,
                             backward=backward, rtol=RTOL)


def random_x(rng, rows, steps, scale=30.0):
    lengths = row_lengths(rng, rows, steps)
    mask = mask_of(lengths, steps)
    x = with_junk(rng, rng.normal(0.0, 1.0, size=(rows, steps)), mask, scale)
    return x, mask, lengths


@pytest.mark.weight(2)
def test_seed_example(student, reference, hints):
    """The notebook's example: (1 + 2 + 4) / 3, not the plain mean"""
    check(student, reference, hints, "masked_mean on the notebook's example",
          (tensor(SEED_X), tensor(SEED_MASK)), fixed=7 / 3)
    check(student, reference, hints,
          "masked_mean of float64 x with 1e30 in the padding and a bool mask",
          (tensor(HUGE_X, np.float64), bool_mask(SEED_MASK)), fixed=1 / 3)


@pytest.mark.weight(2)
def test_random_padded_batch(student, reference, hints, rng):
    """A random batch: rows of different lengths, junk in the padding"""
    x, mask, lengths = random_x(rng, 7, 10)
    check(student, reference, hints,
          f"masked_mean on 7 rows of lengths {lengths.tolist()} (T = 10)",
          (tensor(x), tensor(mask)), fixed=np_masked_mean(np.float32(x), lengths))


def test_bool_and_float_masks(student, reference, hints, rng):
    """A bool mask and a float mask give the same mean"""
    x, mask, lengths = random_x(rng, 5, 6)
    want = np_masked_mean(np.float32(x), lengths)
    check(student, reference, hints, "masked_mean with a float mask",
          (tensor(x), tensor(mask)), fixed=want)
    check(student, reference, hints, "masked_mean with a bool mask",
          (tensor(x), bool_mask(mask)), fixed=want)


def test_no_padding(student, reference, hints, rng):
    """Without padding it is the plain mean"""
    x = rng.normal(0.0, 1.0, size=(3, 4))
    check(student, reference, hints, "masked_mean with a mask of all ones",
          (tensor(x), tensor(np.ones((3, 4)))), fixed=float(np.float32(x).astype(float).mean()))


def test_gradient_flows_to_x(student, reference, hints, rng):
    """The gradient reaches x: 1 / (number of real tokens) on each, 0 on the padding"""
    x, mask, lengths = random_x(rng, 4, 6, scale=5.0)
    args = (tensor(x, requires_grad=True, name="x"), tensor(mask))
    backward = Backward(output=None, wrt=["x"])
    ref = reference.call(FN, *args, backward=backward)
    backed_by(ref.grads["x"], mask / mask.sum(), "the gradient of masked_mean")
    try:
        got = student.call(FN, *args, backward=backward)
    except StudentError as exc:
        if exc.stage != "backward":
            raise
        raise Mistake(f"masked_mean's result cannot be back-propagated ({exc.type}: "
                      f"{exc.message}); keep it a tensor computed from x (no .item(), no "
                      "float()).") from None
    grad = (got.grads or {}).get("x")
    if grad is None:
        raise Mistake("No gradient of masked_mean reaches x: keep the computation in torch, "
                      "connected to x (no .detach(), no .item(), no new tensor from its numbers).")
    expect_values(grad, ref.grads["x"], "the gradient of masked_mean with respect to x",
                  lambda: hints.explain(FN, args, {}, got, backward=backward, aspect="grad:x",
                                        expected=ref.grads["x"]))


def test_returns_a_0dim_tensor(student, hints, rng):
    """The result is a 0-dim tensor (float32 and float64 x)"""
    x, mask, _ = random_x(rng, 3, 5)
    for dtype in (np.float32, np.float64):
        returns_a_0dim_tensor(student, hints, (tensor(x, dtype), tensor(mask)))


def returns_a_0dim_tensor(student, hints, args):
    got = student.call(FN, *args)
    if not is_tensor(got):
        hint = hints.explain(FN, args, {}, got, aspect="type")
        raise Mistake(f"masked_mean returned {describe(got.value)}; it must return a 0-dim "
                      "torch tensor (no .item(), no float())." + (f" {hint}" if hint else ""))
    if tuple(got.meta.shape) != ():
        hint = hints.explain(FN, args, {}, got, aspect="shape")
        raise Mistake(f"masked_mean returned a tensor of shape {tuple(got.meta.shape)}; it must "
                      "be 0-dim (one mean over the whole batch)." + (f" {hint}" if hint else ""))


def test_dtype_follows_x(student, hints, rng):
    """float64 x gives a float64 mean, float32 gives float32"""
    x, mask, _ = random_x(rng, 3, 5)
    for dtype in (np.float64, np.float32):
        args = (tensor(x, dtype), tensor(mask, np.float32))
        got = student.call(FN, *args)
        if is_tensor(got) and got.meta.dtype != np.dtype(dtype).name:
            hint = hints.explain(FN, args, {}, got, aspect="dtype")
            raise Mistake(f"masked_mean of a {np.dtype(dtype).name} x (float32 mask) returned a "
                          f"{got.meta.dtype} tensor; it must have the dtype of x."
                          + (f" {hint}" if hint else ""))
        numbers(got.value, FN)


def test_device_follows_x(student, hints, rng, device):
    """The result is on the device of x"""
    x, mask, _ = random_x(rng, 3, 5)
    args = (tensor(x), tensor(mask))
    got = student.call(FN, *args)
    if is_tensor(got) and got.meta.device.split(":")[0] != device:
        hint = hints.explain(FN, args, {}, got, aspect="device")
        raise Mistake(f"masked_mean with inputs on {device} returned a tensor on "
                      f"{got.meta.device}." + (f" {hint}" if hint else ""))


def test_inputs_not_modified(student, hints, rng):
    """The inputs are never modified (x with gradients as in the RLHF loop; float and bool masks)"""
    x, mask, _ = random_x(rng, 4, 5)
    for what, args in (("a float mask", (tensor(x), tensor(mask))),
                       ("a bool mask", (tensor(x, np.float64), bool_mask(mask))),
                       ("an x that carries gradients", (Computed(tensor(x, requires_grad=True,
                                                                         name="x")),
                                                        tensor(mask)))):
        got = student.call(FN, *args, echo_args=True)
        expect_inputs_unchanged(got, FN, args, {}, ("x", "mask"), what,
                                lambda: hints.explain(FN, args, {}, got, aspect="mutated"))
