"""Hidden inputs for the ``ppo`` suites (trusted parent; numpy only). The checks the suites run
on them are shared by every assignment: ``autograder/suites/checks.py``.

``HINT_PROBES``: for each function, new inputs of the same form as a test's (dtype, lists or
tensors, gradient leaves, keyword arguments), on which ``autograder.hints`` confirms a known
mistake before it names it. They are batches, never a single action or a one-step episode, and
one of them is spread wide (large advantages, ratios far outside the clip range).
"""
from __future__ import annotations

import numpy as np


def random_episode(rng: np.random.Generator, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Hidden rewards (T,) and values (T+1,), bootstrap value never 0."""
    rewards = rng.normal(0.5, 1.0, size=steps)
    values = rng.normal(0.0, 1.0, size=steps + 1)
    values[-1] = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 2.0)
    return rewards, values


def random_ppo_batch(rng: np.random.Generator, n: int) -> dict:
    """Hidden PPO inputs: ratios spread on both sides of the clip range, advantages of both
    signs, values and returns that differ everywhere (so broadcasting would show)."""
    lp_old = -rng.uniform(0.2, 3.0, size=n)
    lp_new = lp_old + rng.normal(0.0, 0.35, size=n)
    adv = rng.normal(0.0, 1.0, size=n)
    adv[0], adv[1] = abs(adv[0]) + 0.1, -abs(adv[1]) - 0.1   # both signs, always
    values = rng.normal(0.0, 1.0, size=n)
    returns = values + rng.normal(0.0, 1.0, size=n)
    return {"lp_new": lp_new, "lp_old": lp_old, "adv": adv, "values": values,
            "returns": returns}


# --- hint probes (autograder/hints.py) -----------------------------------------------------------

def _reinforce_probes(rng, args, kwargs):
    from autograder.hints import shaped_like
    from autograder.proxy import LogSoftmaxGather, Tensor

    log_probs, rewards = (tuple(args) + (1.0,))[:2]
    out = []
    for n in (3, 5, 7):
        logits = rng.normal(0.0, 1.0, size=(n, 5))
        actions = rng.integers(0, 5, size=n).tolist()
        r = rng.normal(0.5, 1.0, size=n)
        if isinstance(log_probs, LogSoftmaxGather):
            template = log_probs.logits
            lp = LogSoftmaxGather(shaped_like(template if isinstance(template, Tensor) else
                                              Tensor(np.zeros(5, np.float32)), logits), actions)
        else:
            lp = shaped_like(log_probs, logits[np.arange(n), actions])
        out.append(((lp, shaped_like(rewards, r) if not isinstance(rewards, (int, float))
                     else float(r[0])) + tuple(args[2:]), kwargs))
    return out


def _gae_probes(rng, args, kwargs):
    from autograder.hints import shaped_like

    out = []
    for steps in (4, 6, 8):
        rewards, values = random_episode(rng, steps)
        out.append(((shaped_like(args[0], rewards), shaped_like(args[1], values))
                    + tuple(args[2:]), kwargs))
    return out


PPO_KEYS = ("lp_new", "lp_old", "adv", "values", "returns")


def _combined_probes(rng, args, kwargs):
    from autograder.hints import shaped_like

    out = []
    for n, wide in ((5, False), (7, False), (9, True)):
        batch = random_ppo_batch(rng, n)
        if wide:   # ratios far outside the clip range, large advantages
            batch = dict(batch, lp_new=batch["lp_old"] + 3.0 * (batch["lp_new"] - batch["lp_old"]),
                         adv=5.0 * batch["adv"])
        out.append((tuple(shaped_like(a, batch[k]) for a, k in zip(args, PPO_KEYS))
                    + tuple(args[5:]), kwargs))
    return out


HINT_PROBES = {"reinforce_loss": _reinforce_probes, "compute_gae": _gae_probes,
               "ppo_combined_loss": _combined_probes}
