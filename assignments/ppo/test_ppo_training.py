"""Hidden training test for grade cell ``ppo_training``: PPO with the student's ``compute_gae``
and ``ppo_combined_loss`` learns a contextual bandit whose weights come from the hidden seed.

The trusted worker runs the trainer (``assignments/ppo/trainers/contextual.py``) with the notebook's
own ``ContextualBandit`` and ``PPOPolicy`` (from the source notebook, not the submission); only
the calls of the two functions go to the student's worker, as data (``StudentProxy.train``).
It returns the trained actor's weights; the parent evaluates the greedy policy in numpy on a large
fixed set of states (the same for random, trained and optimal) with the true mean rewards. The
pass mark is calibrated on the answer key (``make calibrate``, docs/calibration.md).
"""
import numpy as np

from autograder.mistakes import Mistake

from . import training as T

GRADE_CELL = "ppo_training"


def test_ppo_closes_gap(student, reference, assignment, training_seed, record_training):
    """PPO with your compute_gae and ppo_combined_loss learns the contextual bandit"""
    threshold = T.load_thresholds()["thresholds"]["ppo_gap_closed"]
    params = T.contextual_params(training_seed,
                                 T.kit_source(assignment, ["ContextualBandit", "PPOPolicy"]))
    n = params["iterations"]
    params["check"] = T.check_params(assignment, training_seed, {
        "compute_gae": n, "ppo_combined_loss": n * params["ppo_epochs"]})
    out = reference.train(T.trainer("contextual"), student, **params)
    if "error" in out:
        raise Mistake(f"PPO training with your functions stopped: {out['error']}.")
    result = T.gap_closed(out["actor"], params["weights"], T.evaluation_states(training_seed))
    score = result["gap_closed"]
    record_training([{"name": "share of the random-to-optimal gap closed", "value": score,
                      "pass_mark": threshold, "pass_if": "above"}])
    if not np.isfinite(score) or not score > threshold:
        raise Mistake(
            f"After PPO training with your compute_gae and ppo_combined_loss, the policy closes "
            f"{score:.0%} of the gap between a random and the optimal policy (mean reward "
            f"{result['trained']:.3f}; random {result['random']:.3f}, optimal "
            f"{result['optimal']:.3f}, on {T.EVAL_STATES:,} evaluation states). The pass mark "
            f"is {threshold:.0%} (the answer key passes on every calibration seed). Check the "
            "signs in both functions and that gradients flow.")
