"""Hidden tests for ``compute_gae`` (grade cell ``compute_gae``).

Contract: ``compute_gae(rewards, values, gamma=0.99, lam=0.95)`` returns a 1-D tensor of length
T; ``values`` has T+1 entries (the last is the bootstrap value V(s_{T+1})); backward recursion
A_t = delta_t + gamma*lam*A_{t+1}, delta_t = r_t + gamma*V(s_{t+1}) - V(s_t); lists or tensors
in; the dtype and device of ``values`` when it is a tensor; the inputs are never modified.

Only ``test_returns_a_tensor`` deducts for a list or array output: every other test reads the
numbers out of whatever came back and judges them.
"""
import numpy as np
import pytest

from autograder.mistakes import Mistake
from autograder.proxy import Tensor
from autograder.suites.checks import against_reference, describe, is_tensor, numbers
from autograder.suites.contracts import expect_inputs_unchanged
from .hidden_inputs import random_episode

GRADE_CELL = "compute_gae"
FN = "compute_gae"

# The seed example and the documented values that back the reference up (grading-validity).
SEED_REWARDS = [1.0, 0.5, 2.0, 0.0, 1.0]
SEED_VALUES = [0.5, 0.6, 0.4, 0.8, 0.3, 0.0]
SEED_ADVANTAGES = [3.6174455, 2.6830893, 2.5381067, 0.15535, 0.7]
SEED_DELTAS = [1.094, 0.296, 2.392, -0.503, 0.700]
BOOTSTRAP_VALUES = [0.5, 0.6, 0.4, 0.8, 0.3, 1.0]
BOOTSTRAP_ADVANTAGES = [4.3920329, 3.5066803, 3.4138015, 1.086445, 1.69]


def f32(x):
    return Tensor(np.asarray(x, dtype=np.float32))


def f64(x):
    return Tensor(np.asarray(x, dtype=np.float64))


def check(student, reference, hints, what, args, kwargs=None, fixed=None):
    """The student's output on ``args`` must match the reference's (backed by ``fixed``)."""
    return against_reference(student, reference, hints, FN, what, args, kwargs, fixed=fixed)[0]


def discounted_return_minus_value(rewards, values, gamma):
    """Independent check of the lam = 1 property (float64 numpy)."""
    out, g = np.zeros(len(rewards)), float(values[-1])
    for t in reversed(range(len(rewards))):
        g = rewards[t] + gamma * g
        out[t] = g - values[t]
    return out


@pytest.mark.weight(2)
def test_seed_example(student, reference, hints):
    """The notebook's example (lists in)"""
    check(student, reference, hints, "compute_gae on the notebook's example",
          (SEED_REWARDS, SEED_VALUES), fixed=SEED_ADVANTAGES)


@pytest.mark.weight(2)
def test_bootstrap_value(student, reference, hints, rng):
    """The bootstrap value V(s_{T+1}) counts"""
    check(student, reference, hints,
          "compute_gae on the notebook's example with bootstrap value V(s_T+1) = 1.0",
          (f32(SEED_REWARDS), f32(BOOTSTRAP_VALUES)), fixed=BOOTSTRAP_ADVANTAGES)
    rewards, values = random_episode(rng, 6)
    check(student, reference, hints,
          f"compute_gae on a 6-step episode with bootstrap value {values[-1]:.3f}",
          (f32(rewards), f32(values)))


def test_lambda_zero_gives_deltas(student, reference, hints, rng):
    """lam = 0 gives the one-step TD residuals"""
    check(student, reference, hints, "compute_gae with lam=0 on the notebook's example",
          (SEED_REWARDS, SEED_VALUES), {"lam": 0.0}, fixed=SEED_DELTAS)
    rewards, values = random_episode(rng, 8)
    gamma = float(rng.uniform(0.8, 0.99))
    deltas = rewards + gamma * values[1:] - values[:-1]
    check(student, reference, hints, f"compute_gae with lam=0, gamma={gamma:.3f}, 8 steps",
          (f32(rewards), f32(values)), {"gamma": gamma, "lam": 0.0}, fixed=deltas)


def test_lambda_one_gives_returns_minus_values(student, reference, hints, rng):
    """lam = 1 gives the bootstrapped discounted return minus V(s_t)"""
    rewards, values = random_episode(rng, 10)
    gamma = float(rng.uniform(0.8, 0.99))
    check(student, reference, hints, f"compute_gae with lam=1, gamma={gamma:.3f}, 10 steps",
          (f32(rewards), f32(values)), {"gamma": gamma, "lam": 1.0},
          fixed=discounted_return_minus_value(rewards, values, gamma))


def test_single_step(student, reference, hints, rng):
    """A one-step episode (T = 1)"""
    check(student, reference, hints, "compute_gae([1.0], [0.5, 2.0])",
          ([1.0], [0.5, 2.0]), fixed=[2.48])
    r, v0, v1 = (float(x) for x in rng.normal(0.0, 1.0, size=3))
    check(student, reference, hints, "compute_gae on a one-step episode (tensors)",
          (f32([r]), f32([v0, v1])), fixed=[r + 0.99 * v1 - v0])


@pytest.mark.weight(2)
def test_long_random_episode(student, reference, hints, rng):
    """A random 50-step episode with random gamma and lambda"""
    rewards, values = random_episode(rng, 50)
    gamma, lam = float(rng.uniform(0.9, 0.999)), float(rng.uniform(0.8, 0.99))
    check(student, reference, hints,
          f"compute_gae on a 50-step episode (gamma={gamma:.3f}, lam={lam:.3f})",
          (f32(rewards), f32(values)), {"gamma": gamma, "lam": lam})


def test_lists_and_tensors_in(student, reference, hints, rng):
    """Lists in and tensors in give the same advantages"""
    rewards, values = random_episode(rng, 7)
    rewards, values = np.round(rewards, 3), np.round(values, 3)
    check(student, reference, hints, "compute_gae with Python lists in",
          (rewards.tolist(), values.tolist()))
    check(student, reference, hints, "compute_gae with float32 tensors in",
          (f32(rewards), f32(values)))


def test_output_length(student, reference, hints, rng):
    """One advantage per reward (length T, not T+1)"""
    steps = int(rng.integers(3, 12))
    rewards, values = random_episode(rng, steps)
    args = (f32(rewards), f32(values))
    got = student.call(FN, *args)
    shape = got.meta.shape if is_tensor(got) else np.shape(numbers(got.value, FN))
    if tuple(shape) != (steps,):
        hint = hints.explain(FN, args, {}, got, aspect="shape")
        raise Mistake(f"compute_gae on {steps} rewards ({steps + 1} values) returned shape "
                      f"{tuple(shape)}; expected ({steps},), one advantage per reward."
                      + (f" {hint}" if hint else ""))


def test_returns_a_tensor(student, hints, rng):
    """The result is a torch tensor (lists, float32 and float64 tensors in)"""
    rewards, values = random_episode(rng, 4)
    for args in ((rewards.tolist(), values.tolist()), (f32(rewards), f32(values)),
                 (f64(rewards), f64(values))):
        got = student.call(FN, *args)
        if not is_tensor(got):
            hint = hints.explain(FN, args, {}, got, aspect="type")
            raise Mistake(f"compute_gae returned {describe(got.value)}; the contract asks for a "
                          "1-D torch tensor." + (f" {hint}" if hint else ""))


def test_dtype_follows_values(student, hints, rng):
    """float64 values in give float64 out (and float32 gives float32)"""
    rewards, values = random_episode(rng, 5)
    for dtype, make in (("float64", f64), ("float32", f32)):
        args = (make(rewards), make(values))
        got = student.call(FN, *args)
        if not is_tensor(got):
            continue  # not a tensor: only test_returns_a_tensor deducts for that
        if got.meta.dtype != dtype:
            hint = hints.explain(FN, args, {}, got, aspect="dtype")
            raise Mistake(f"compute_gae with {dtype} tensors in returned a {got.meta.dtype} "
                          f"tensor; it must have the dtype of values ({dtype})."
                          + (f" {hint}" if hint else ""))


def test_device_follows_values(student, hints, rng, device):
    """The result is on the device of values"""
    rewards, values = random_episode(rng, 5)
    args = (f32(rewards), f32(values))
    got = student.call(FN, *args)
    if not is_tensor(got):
        return  # not a tensor: only test_returns_a_tensor deducts for that
    if got.meta.device.split(":")[0] != device:
        hint = hints.explain(FN, args, {}, got, aspect="device")
        raise Mistake(f"compute_gae with inputs on {device} returned a tensor on "
                      f"{got.meta.device}; keep the result on the device of values."
                      + (f" {hint}" if hint else ""))


def test_inputs_not_modified(student, hints, rng):
    """The inputs are never modified (no in-place changes, no writing into them)"""
    rewards, values = random_episode(rng, 6)
    r, v = rng.normal(0.5, 1.0), rng.normal(0.0, 1.0)
    cases = [("float32 tensors", (f32(rewards), f32(values))),
             ("float64 tensors", (f64(rewards), f64(values))),
             ("lists", (rewards.tolist(), values.tolist())),
             ("one-step lists, as in the notebook's loop", ([float(r)], [float(v), 0.0]))]
    for what, args in cases:
        got = student.call(FN, *args, echo_args=True)
        expect_inputs_unchanged(got, FN, args, {}, ("rewards", "values"), what,
                                lambda: hints.explain(FN, args, {}, got, aspect="mutated"))
