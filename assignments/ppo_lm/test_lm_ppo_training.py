"""Hidden training test for grade cell ``lm_ppo_training``: the notebook's RLHF loop with the
student's four functions makes the language model more positive while staying close to the
pretrained model.

The trusted worker runs the trainer (``assignments/ppo_lm/trainers/lm.py``): the notebook's own
``make_rlhf_models`` and ``rlhf_train`` (from the source notebook, not the submission), 30
iterations, the loop's seed and the critic's initialisation from the hidden seed. The models,
the reward and the optimizer stay there; each call of the student's four functions goes to the
student's worker as data, and the gradients of ``token_ppo_loss`` come back
(``StudentProxy.train``). It returns the trained policy's weights. The parent then checks,
itself, against the pretrained weights it sent:

- sampling completions from the trained policy and from the pretrained model with the same
  hidden random numbers, the mean score rises by at least the calibrated pass mark;
- the KL from the trained policy to the pretrained model is at most the calibrated bound.

The pass marks are calibrated on the answer key (``make calibrate``, docs/calibration.md).
"""
import numpy as np

from autograder.mistakes import Mistake

from . import training as T

GRADE_CELL = "lm_ppo_training"


def test_rlhf_raises_reward_within_kl(student, reference, assignment, training_seed, device,
                                     record_training):
    """RLHF with your functions raises the reward and stays close to the pretrained model"""
    thresholds = T.load_thresholds()["thresholds"]
    rise_min, kl_max = thresholds["reward_rise_min"], thresholds["kl_max"]
    params = T.lm_params(training_seed, assignment, device)
    params["check"] = T.check_params(assignment, training_seed, params["iterations"])
    out = reference.train(T.trainer("lm"), student, **params)
    if "error" in out:
        raise Mistake(f"RLHF training with your functions stopped: {out['error']}.")
    result = T.evaluate(out["policy"], params["weights"], training_seed, T.eval_kit(assignment))
    history = out.get("history") or {}
    during = ""
    if history.get("reward") and history.get("kl"):
        during = (f" During training (measured by the loop on its own samples) the reward went "
                  f"from {np.mean(history['reward'][:5]):+.3f} (first 5 iterations) to "
                  f"{np.mean(history['reward'][-10:]):+.3f} (last 10), with a KL of "
                  f"{np.mean(history['kl'][-10:]):.2f} nats.")
    record_training([{"name": "rise of the mean score", "value": result["rise"],
                      "pass_mark": rise_min, "pass_if": "above"},
                     {"name": "KL to the pretrained model (nats)", "value": result["kl"],
                      "pass_mark": kl_max, "pass_if": "below"}],
                    [{"name": "reward during training", "y": history.get("reward") or []},
                     {"name": "KL during training (nats)", "y": history.get("kl") or []}])
    if not result["finite"]:
        raise Mistake("After RLHF training with your functions the policy's parameters are NaN "
                      "or infinite." + during)
    measured = (f"On {T.EVAL_SAMPLES} completions sampled with the same hidden random numbers, "
                f"the mean score went from {result['score_before']:+.3f} (pretrained model) to "
                f"{result['score_after']:+.3f} (after {T.ITERATIONS} iterations of RLHF with "
                f"your functions), a rise of {result['rise']:+.3f}; the KL to the pretrained "
                f"model is {result['kl']:.2f} nats per completion.")
    problems = []
    if not result["rise"] >= rise_min:
        problems.append(f"the rise must be at least {rise_min:.2f}: check the signs in "
                        "per_token_rewards and token_ppo_loss, where the score is added, and "
                        "that the advantages carry it back to every token")
    if not result["kl"] <= kl_max:
        problems.append(f"the KL must stay at most {kl_max:.1f} nats: check the KL penalty in "
                        "per_token_rewards, its sign, and that kl_coef is used")
    if problems:
        text = "; and ".join(problems)
        raise Mistake(f"{measured} {text[0].upper()}{text[1:]} (the answer key passes "
                      f"on every calibration seed).{during}")
