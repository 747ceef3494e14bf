"""Hidden inputs for the ``ppo`` suites (trusted parent; numpy only). The checks the suites run
on them are shared by every assignment: ``autograder/suites/checks.py``.
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
