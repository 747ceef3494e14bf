"""REINFORCE on multi-armed bandits with the student's ``reinforce_loss`` (grade cell
``reinforce_training``). Runs in the trusted worker; only the loss calls go to the student.

``R`` independent bandit runs train at once: the notebook's ``BanditPolicy`` holds a ``(K, R)``
logits parameter (its ``forward`` is a softmax over dim 0, so each column is one run's policy),
every episode samples one arm per run, and the student's loss is called once on the ``(R,)``
log-probabilities and rewards. The batch mean only scales each run's gradient by ``1/R``, and
Adam normalises every logit separately, so the runs do not couple: ``tests/harness/test_harness.py``
checks that a batched run matches the same runs trained one at a time.

The student's worker receives, per episode, the log-probabilities (a leaf that requires a
gradient) and the rewards, as data; it returns the loss and its gradient with respect to the
log-probabilities, which the trainer pushes back through its own policy. The arm means, the
policy and the optimizer never leave this process. Returns the final logits as an ``(R, K)``
array; the parent turns them into best-arm probabilities with the arm means it drew.
"""
from __future__ import annotations

from autograder.harness import Adam, HarnessStop, kit_namespace, surrogate


def train(student, *, kit_source: str, arm_means, episodes: int = 500, lr: float = 0.05,
          noise: float = 0.1, seed: int = 0) -> dict:
    """``student`` is a ``relay.Student``; the result is plain data."""
    import torch

    kit = kit_namespace(kit_source)
    means = torch.as_tensor(arm_means, dtype=torch.float32)           # (R, K)
    runs, arms = means.shape
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))

    policy = kit["BanditPolicy"](arms)
    start = policy.logits.detach().reshape(arms, 1)
    policy.logits = torch.nn.Parameter(start.repeat(1, runs).contiguous())   # (K, R)
    optimizer = Adam(policy.parameters(), lr=lr)
    cols = torch.arange(runs)
    for _ in range(episodes):
        probs = policy()                                               # (K, R)
        actions = torch.multinomial(probs.detach().T, 1, generator=gen).squeeze(1)
        rewards = means[cols, actions] + noise * torch.randn(runs, generator=gen)
        log_probs = torch.log(probs[actions, cols])                    # (R,)
        (loss,), (grad,) = student.call("reinforce_loss", [log_probs, rewards], grad=(0,))
        if loss.size != 1:
            raise HarnessStop(f"`reinforce_loss` returned {loss.size} numbers (shape "
                              f"{loss.shape}) during training, not a single loss; reduce it "
                              "with .mean()")
        optimizer.zero_grad()
        surrogate(float(loss.reshape(())), [log_probs], [grad]).backward()
        optimizer.step()
    return {"logits": policy.logits.detach().T.contiguous().cpu().numpy(),
            "round_trips": student.round_trips, "checked": sum(student.checked.values())}
