"""Hidden training test for grade cell ``reinforce_training``: REINFORCE with the student's
``reinforce_loss`` finds the best arm of bandits whose arm means come from the hidden seed.

The trusted worker runs the trainer (``assignments/ppo/trainers/bandit.py``) with the notebook's own
``BanditPolicy`` (from the source notebook, not the submission); only each episode's loss call
goes to the student's worker, as data, and its gradient comes back (``StudentProxy.train``).
The parent scores the final logits against the arm means it drew. The pass mark is calibrated on
the answer key (``make calibrate``, docs/calibration.md).
"""
from autograder.mistakes import Mistake

from . import training as T

GRADE_CELL = "reinforce_training"


def test_reinforce_finds_best_arm(student, reference, assignment, training_seed,
                                  record_training):
    """REINFORCE with your loss puts its probability on the best arm"""
    threshold = T.load_thresholds()["thresholds"]["reinforce_best_arm_probability"]
    params = T.bandit_params(training_seed, T.kit_source(assignment, ["BanditPolicy"]))
    params["check"] = T.check_params(assignment, training_seed,
                                     {"reinforce_loss": params["episodes"]})
    out = reference.train(T.trainer("bandit"), student, **params)
    if "error" in out:
        raise Mistake(f"REINFORCE training with your reinforce_loss stopped: {out['error']}.")
    score = T.best_arm_probability(out["logits"], params["arm_means"])
    record_training([{"name": "probability of the best arm", "value": score,
                      "pass_mark": threshold, "pass_if": "above"}])
    if not score > threshold:
        raise Mistake(
            f"After 500 episodes of REINFORCE with your reinforce_loss on {T.BANDIT_RUNS} bandits "
            f"(arm means hidden, the best arm differs between bandits), the best arm has "
            f"probability {score:.3f} on average; the pass mark is {threshold:.2f} (the answer "
            "key reaches it on every calibration seed). Check the sign of the loss and that it "
            "uses the log-probabilities with their gradient.")
