"""Training-test helpers, used in the trusted parent (numpy only, no torch).

The hidden seed decides each student's environments. The trainer runs in the trusted worker
(``StudentProxy.train``; ``autograder/harness/relay.py``): the ground truth (arm means, bandit
weights) goes there and never to the student's worker; the parent scores the plain arrays the
trainer returns, with evaluation states it keeps to itself.
``calibration.py`` (in this folder) uses the very same functions, so the calibrated thresholds
measure exactly what the suites measure.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from autograder import training_support
from autograder.proxy import Trainer
from autograder.training_support import generator as _generator
from autograder.training_support import torch_seed

FOLDER = Path(__file__).resolve().parent
ASSIGNMENT = FOLDER.name
THRESHOLDS_FILE = training_support.thresholds_file(FOLDER)

# The notebook's bandit: five arms with these mean rewards (SimpleBandit), noise sd 0.1.
BANDIT_LEVELS = (0.2, 0.5, 0.8, 0.3, 0.1)
BANDIT_RUNS = 64            # independent bandits per student, trained at once
BANDIT_JITTER = 0.05        # each arm mean moves by at most this; the best arm stays best
EVAL_STATES = 20_000        # contextual-bandit evaluation states (same for random/trained/optimal)


def load_thresholds() -> dict:
    """The calibrated pass marks (written by ``make calibrate``; docs/calibration.md)."""
    return training_support.load_thresholds(FOLDER)


def check_params(assignment, hidden_seed: int, calls: dict[str, int]) -> dict:
    """What the trusted trainer needs to check the student's replies (``relay.Student``)."""
    return training_support.check_params(assignment, hidden_seed, calls)


# --- REINFORCE on bandits --------------------------------------------------------------------
def bandit_arm_means(hidden_seed: int, runs: int = BANDIT_RUNS) -> np.ndarray:
    """(runs, 5) arm means: the notebook's levels, shuffled per run, each jittered slightly.
    Which arm is best differs between runs and students, so no fixed arm can pass."""
    rng = _generator(hidden_seed)
    levels = np.asarray(BANDIT_LEVELS, dtype=np.float64)
    means = np.stack([rng.permutation(levels) for _ in range(runs)])
    means += rng.uniform(-BANDIT_JITTER, BANDIT_JITTER, size=means.shape)
    return means


def bandit_params(hidden_seed: int, kit_source: str, runs: int = BANDIT_RUNS) -> dict:
    """The bandit trainer's parameters (the arm means stay in the trusted worker)."""
    return {"kit_source": kit_source, "arm_means": bandit_arm_means(hidden_seed, runs).tolist(),
            "episodes": 500, "lr": 0.05, "noise": 0.1, "seed": torch_seed(hidden_seed ^ 0x5EED)}


def best_arm_probability(logits, arm_means) -> float:
    """Mean over runs of the final policy's probability of that run's best arm."""
    logits = np.asarray(logits, dtype=np.float64)
    means = np.asarray(arm_means, dtype=np.float64)
    if logits.shape != means.shape or not np.all(np.isfinite(logits)):
        return float("nan")
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return float(p[np.arange(len(means)), means.argmax(axis=1)].mean())


# --- PPO on the contextual bandit ------------------------------------------------------------
def contextual_weights(hidden_seed: int, state_dim: int = 4, n_actions: int = 5) -> np.ndarray:
    """The bandit's (state_dim, n_actions) weights, drawn like the notebook's (N(0, 0.5^2))."""
    return _generator(hidden_seed).standard_normal((state_dim, n_actions)) * 0.5


def evaluation_states(hidden_seed: int, state_dim: int = 4, n: int = EVAL_STATES) -> np.ndarray:
    """The fixed evaluation states (N(0, I), like the notebook's get_state)."""
    return _generator(hidden_seed ^ 0xE7A1).standard_normal((n, state_dim))


def contextual_params(hidden_seed: int, kit_source: str, iterations: int = 200) -> dict:
    return {"kit_source": kit_source, "weights": contextual_weights(hidden_seed).tolist(),
            "iterations": iterations, "batch_size": 64, "ppo_epochs": 4, "lr": 3e-4,
            "epsilon": 0.2, "gamma": 0.99, "lam": 0.95, "vf_coeff": 0.5,
            "seed": torch_seed(hidden_seed ^ 0x990)}


def actor_logits(layers, states: np.ndarray) -> np.ndarray:
    """The actor network's forward pass in numpy (float64)."""
    x = np.asarray(states, dtype=np.float64)
    for layer in layers:
        kind = layer["type"]
        if kind == "linear":
            x = x @ np.asarray(layer["weight"], dtype=np.float64).T \
                + np.asarray(layer["bias"], dtype=np.float64)
        elif kind == "relu":
            x = np.maximum(x, 0.0)
        elif kind == "tanh":
            x = np.tanh(x)
        else:
            raise ValueError(f"unknown layer type {kind!r}")
    return x


def gap_closed(layers, weights, states) -> dict:
    """Expected (noise-free) reward of the greedy trained policy, a uniformly random policy and
    the optimal policy on the same states, and the fraction of the random-to-optimal gap the
    trained policy closes (1 = optimal, 0 = random, negative = worse than random)."""
    true_values = np.asarray(states, dtype=np.float64) @ np.asarray(weights, dtype=np.float64)
    logits = actor_logits(layers, states)
    if not np.all(np.isfinite(logits)):
        return {"gap_closed": float("nan"), "trained": float("nan"),
                "random": float(true_values.mean()), "optimal": float(true_values.max(1).mean())}
    chosen = true_values[np.arange(len(true_values)), logits.argmax(axis=1)]
    random, optimal, trained = true_values.mean(), true_values.max(axis=1).mean(), chosen.mean()
    return {"gap_closed": float((trained - random) / (optimal - random)),
            "trained": float(trained), "random": float(random), "optimal": float(optimal)}


# --- the kit's classes, from the source notebook ---------------------------------------------
def kit_source(assignment, class_names) -> str:
    """Import lines and the named class definitions from the source notebook's given (locked)
    cells, as one block of code for a trainer to execute in a fresh namespace."""
    return training_support.kit_classes(assignment, class_names)


def trainer(name: str):
    """The trusted trainer ``trainers/<name>.py`` of this folder (``StudentProxy.train``)."""
    return Trainer(ASSIGNMENT, FOLDER, f"trainers/{name}.py")
