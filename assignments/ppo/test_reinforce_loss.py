"""Hidden tests for ``reinforce_loss`` (grade cell ``reinforce_loss``).

Contract: ``reinforce_loss(log_probs, rewards) = -(log_probs * rewards).mean()``, a 0-dim tensor;
``log_probs`` is a 0-dim or 1-D tensor that carries gradients; ``rewards`` is a float or a
tensor. The log-probabilities are built inside the worker from a logits leaf
(``LogSoftmaxGather``), so the gradient with respect to the logits can be compared; they are not
leaves, as in the notebook's loop (``torch.log(prob)``). The inputs are never modified.
"""
import numpy as np
import pytest

from autograder.mistakes import Mistake
from autograder.proxy import Backward, LogSoftmaxGather, Tensor
from autograder.suites.checks import backed_by, describe, expect_values, is_tensor
from autograder.suites.contracts import expect_inputs_unchanged

GRADE_CELL = "reinforce_loss"
FN = "reinforce_loss"

# The documented example (grading-validity): logits, action 1, reward 2.
SEED_LOGITS = [1.0, 2.0, 0.5, -1.0, 0.0]
SEED_LOSS = 1.1488759
SEED_GRAD = [0.4142479, -0.8739575, 0.2512540, 0.0560624, 0.1523933]
GRAD = Backward(output=None, wrt=["logits"])
ARG_NAMES = ("log_probs", "rewards")


def log_prob(logits, index, dtype=np.float32):
    """log_softmax(logits)[index], built in the worker from a logits leaf named 'logits'."""
    leaf = Tensor(np.asarray(logits, dtype=dtype), requires_grad=True, name="logits")
    return LogSoftmaxGather(leaf, index)


def compare(student, reference, hints, what, args, fixed_value=None, fixed_grad=None):
    """Value and gradient w.r.t. the logits, the student's against the reference's."""
    ref = reference.call(FN, *args, backward=GRAD)
    if fixed_value is not None:
        backed_by(ref.value, fixed_value, what)
    if fixed_grad is not None:
        backed_by(ref.grads["logits"], fixed_grad, f"the gradient of {what}")
    got = student.call(FN, *args)
    expect_values(got.value, ref.value, what,
                  lambda: hints.explain(FN, args, {}, got, expected=ref.value))
    if not (is_tensor(got) and got.meta.grad_fn):
        hint = hints.explain(FN, args, {}, got, aspect="graph")
        raise Mistake(f"{what}: the value is right, but no gradient can flow from the loss back "
                      "to the logits. Keep log_probs in the graph: no .detach(), no .item(), no "
                      "new tensor built from its numbers." + (f" {hint}" if hint else ""))
    got = student.call(FN, *args, backward=GRAD)
    grad = (got.grads or {}).get("logits")
    if grad is None:
        raise Mistake(f"{what}: no gradient reached the logits. Keep log_probs in the graph: no "
                      ".detach(), no .item(), no new tensor built from its numbers.")
    expect_values(grad, ref.grads["logits"], f"{what}: the gradient with respect to the logits",
                  lambda: hints.explain(FN, args, {}, got, backward=GRAD, aspect="grad:logits",
                                        expected=ref.grads["logits"]))
    return got


def random_batch(rng, size):
    logits = rng.normal(0.0, 1.0, size=(size, 5))
    actions = rng.integers(0, 5, size=size)
    rewards = rng.normal(0.5, 1.0, size=size)
    return logits, actions.tolist(), rewards


def test_value_one_action(student, reference, hints, rng):
    """One action: the value of -log pi(a) * R"""
    compare(student, reference, hints, "reinforce_loss on logits [1, 2, 0.5, -1, 0], action 1, "
            "reward 2.0", (log_prob(SEED_LOGITS, 1), 2.0), fixed_value=SEED_LOSS)
    logits = rng.normal(0.0, 1.0, size=5)
    action, reward = int(rng.integers(0, 5)), float(rng.normal(0.5, 1.0))
    compare(student, reference, hints, f"reinforce_loss on random logits, action {action}, "
            f"reward {reward:.3f}", (log_prob(logits, action), reward))


def test_gradient_wrt_logits(student, reference, hints):
    """The gradient with respect to the logits"""
    compare(student, reference, hints, "reinforce_loss on logits [1, 2, 0.5, -1, 0], action 1, "
            "reward 2.0", (log_prob(SEED_LOGITS, 1), 2.0),
            fixed_value=SEED_LOSS, fixed_grad=SEED_GRAD)


@pytest.mark.weight(1.5)
def test_batch_mean(student, reference, hints, rng):
    """A batch: the mean over the actions (not the sum), gradients included"""
    logits, actions, rewards = random_batch(rng, int(rng.integers(6, 12)))
    compare(student, reference, hints, f"reinforce_loss on a batch of {len(actions)} actions",
            (log_prob(logits, actions), Tensor(rewards.astype(np.float32))))


def test_rewards_float_or_tensor(student, reference, hints, rng):
    """Rewards as a float and as a tensor give the same loss"""
    logits = rng.normal(0.0, 1.0, size=5)
    action, reward = int(rng.integers(0, 5)), float(np.round(rng.normal(0.5, 1.0), 3))
    for what, r in (("a float", reward),
                    ("a 0-dim tensor", Tensor(np.asarray(reward, dtype=np.float32)))):
        compare(student, reference, hints, f"reinforce_loss with the reward given as {what}",
                (log_prob(logits, action), r))
    logits, actions, rewards = random_batch(rng, 4)
    compare(student, reference, hints, "reinforce_loss on a batch with one float reward for all",
            (log_prob(logits, actions), float(rewards[0])))


def test_returns_0dim_tensor(student, rng):
    """The loss is a 0-dim tensor, for one action and for a batch, float32 and float64"""
    logits, actions, rewards = random_batch(rng, 5)
    cases = [("one action", (log_prob(logits[0], actions[0]), float(rewards[0]))),
             ("a batch of 5 actions", (log_prob(logits, actions),
                                       Tensor(rewards.astype(np.float32)))),
             ("a batch of 5 float64 actions", (log_prob(logits, actions, np.float64),
                                               Tensor(rewards)))]
    for what, args in cases:
        got = student.call(FN, *args)
        if not is_tensor(got):
            raise Mistake(f"reinforce_loss on {what} returned {describe(got.value)}; it must "
                          "return a 0-dim torch tensor (no .item()).")
        if tuple(got.meta.shape) != ():
            raise Mistake(f"reinforce_loss on {what} returned a tensor of shape "
                          f"{tuple(got.meta.shape)}; it must be 0-dim (a single number): "
                          "average over the batch.")


def test_gradient_flows(student, hints, rng):
    """The loss is connected to the graph, so the policy can learn"""
    logits, actions, rewards = random_batch(rng, 3)
    args = (log_prob(logits, actions), Tensor(rewards.astype(np.float32)))
    got = student.call(FN, *args)
    if not (is_tensor(got) and got.meta.grad_fn):
        hint = hints.explain(FN, args, {}, got, aspect="graph")
        raise Mistake("No gradient flows from reinforce_loss back to the log-probabilities: "
                      "keep log_probs in the graph (no .detach(), no .item(), no torch.tensor() "
                      "of its numbers)." + (f" {hint}" if hint else ""))
    got = student.call(FN, *args, backward=GRAD)
    grad = (got.grads or {}).get("logits")
    if grad is None or not np.any(np.abs(grad) > 0):
        raise Mistake("The gradient of reinforce_loss with respect to the logits is zero or "
                      "missing: the loss must depend on log_probs.")


def test_inputs_not_modified(student, hints, rng):
    """The inputs are never modified (as the notebook's loop passes them, float32 and float64)"""
    logits, actions, rewards = random_batch(rng, 5)
    cases = [("one action's log-probability and a float reward, as in the notebook's loop",
              (log_prob(logits[0], actions[0]), float(rewards[0]))),
             ("a batch of float32 log-probabilities and a float32 reward tensor",
              (log_prob(logits, actions), Tensor(rewards.astype(np.float32)))),
             ("a batch of float64 log-probabilities and a float64 reward tensor",
              (log_prob(logits, actions, np.float64), Tensor(rewards)))]
    for what, args in cases:
        got = student.call(FN, *args, echo_args=True)
        expect_inputs_unchanged(got, FN, args, {}, ARG_NAMES, what,
                                lambda: hints.explain(FN, args, {}, got, aspect="mutated"))
