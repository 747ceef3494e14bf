"""REINFORCE on multi-armed bandits with the student's ``reinforce_loss`` (grade cell
``reinforce_training``).

``R`` independent bandit runs train at once: the notebook's ``BanditPolicy`` holds a ``(K, R)``
logits parameter (its ``forward`` is a softmax over dim 0, so each column is one run's policy),
every episode samples one arm per run, and the student's loss is called once on the ``(R,)``
log-probabilities and rewards. The batch mean only scales each run's gradient by ``1/R``, and
Adam normalises every logit separately, so the runs do not couple: ``tests/test_harness.py``
checks that a batched run matches the same runs trained one at a time.

Returns the final logits as an ``(R, K)`` array; the parent turns them into best-arm
probabilities with the arm means it drew from the hidden seed.
"""
from __future__ import annotations

from autograder.harness import (Adam, HarnessStop, as_scalar_loss, call_student,
                                kit_namespace, student_function)


def run(namespace: dict, *, kit_source: str, arm_means, episodes: int = 500, lr: float = 0.05,
        noise: float = 0.1, seed: int = 0) -> dict:
    import torch

    kit = kit_namespace(kit_source)
    loss_fn = student_function(namespace, "reinforce_loss")
    means = torch.as_tensor(arm_means, dtype=torch.float32)           # (R, K)
    runs, arms = means.shape
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))

    policy = kit["BanditPolicy"](arms)
    start = policy.logits.detach().reshape(arms, 1)
    policy.logits = torch.nn.Parameter(start.repeat(1, runs).contiguous())   # (K, R)
    optimizer = Adam(policy.parameters(), lr=lr)
    cols = torch.arange(runs)
    try:
        for _ in range(episodes):
            probs = policy()                                               # (K, R)
            actions = torch.multinomial(probs.detach().T, 1, generator=gen).squeeze(1)
            rewards = means[cols, actions] + noise * torch.randn(runs, generator=gen)
            log_probs = torch.log(probs[actions, cols])                    # (R,)
            loss = as_scalar_loss(call_student(loss_fn, "reinforce_loss", log_probs, rewards),
                                  "reinforce_loss")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    except HarnessStop as stop:
        return {"error": str(stop)}
    return {"logits": policy.logits.detach().T.contiguous().cpu().numpy()}
