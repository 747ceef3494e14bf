"""Token-level PPO (RLHF) on the notebook's tiny language model, with the student's four
functions (grade cell ``lm_ppo_training`` of assignment ``ppo_lm``).

``train(student, ...)`` runs in the trusted worker: the notebook's own ``make_rlhf_models`` and
``rlhf_train`` (the source notebook's cells ``corpus``, ``lm_model``, ``sampling``, ``reward_fn``
and ``rlhf_loop``, passed in ``kit_source`` and executed in a fresh namespace), with stand-ins
for the student's ``per_token_rewards``, ``compute_token_gae``, ``token_ppo_loss`` and
``masked_mean`` that send each call's inputs to the student's worker as data
(``relay.Student``). The policy, the frozen reference model, the critic, the reward and the
optimizer stay in this process: a student function sees only its arguments (log-probabilities,
scores, masks, values), so it cannot reach, unfreeze or change any model. ``token_ppo_loss``
gets the new log-probabilities and the values as leaves; the gradients of its total loss come
back and are pushed through the trainer's own policy and critic. The pretrained weights arrive
as plain arrays in ``weights``: the notebook's ``load_pretrained`` is replaced by one that
loads them. Returns the trained policy's weights and the loop's history; the parent scores the
policy itself (``assignments/ppo_lm/training.py``).

``torch.optim.Adam`` in the loop is the harness's ``Adam`` (the same update; it saves the
seconds that importing ``torch._dynamo`` costs a fresh worker): the loop sees a view of ``torch``
that differs only in ``optim.Adam``.
"""
from __future__ import annotations

import time
import types

from autograder.harness import Adam, HarnessStop, describe_error, kit_namespace, surrogate

FUNCTIONS = ("per_token_rewards", "compute_token_gae", "token_ppo_loss", "masked_mean")


# --- training (trusted worker) -------------------------------------------------------------------

def train(student, *, kit_source: str, weights: dict, iterations: int = 30,
          batch_size: int = 64, seed: int = 0, value_seed: int = 0, device: str = "cpu",
          **loop_kwargs) -> dict:
    """``student`` is a ``relay.Student``; the result is plain data."""
    import torch

    torch.set_num_threads(1)   # as in the notebook: the model is tiny, one thread is fastest
    torch.manual_seed(int(seed))
    started = time.perf_counter()
    kit = kit_namespace(kit_source)
    state = {k: torch.from_numpy(_array(v).copy()) for k, v in weights.items()}

    def load_pretrained(path=None, device="cpu"):
        model = kit["TinyLM"]()
        model.load_state_dict(state)          # strict: the notebook's architecture
        return model.to(device)

    kit["load_pretrained"] = load_pretrained
    kit["torch"] = _torch_with_harness_adam(torch)
    policy, ref_model, value_head = kit["make_rlhf_models"](None, device, seed=int(value_seed))
    functions = stand_ins(student)
    try:
        history = kit["rlhf_train"](policy, ref_model, value_head, **functions,
                                    iterations=int(iterations), batch_size=int(batch_size),
                                    seed=int(seed), device=device, log_every=0, **loop_kwargs)
    except HarnessStop:
        raise
    except Exception as exc:   # the loop broke on what a student function returned
        raise HarnessStop(_loop_error(exc, policy)) from None
    return {"policy": _weights(policy),
            "history": {k: [float(x) for x in v] for k, v in history.items()},
            "seconds": time.perf_counter() - started, "round_trips": student.round_trips,
            "checked": sum(student.checked.values())}


def stand_ins(student) -> dict:
    """The four functions as the notebook's loop calls them, each relayed to the student."""
    import torch

    def like(arr, ref, name):
        t = torch.as_tensor(arr, dtype=ref.dtype, device=ref.device)
        if tuple(t.shape) != tuple(ref.shape):
            raise HarnessStop(f"`{name}` returned shape {tuple(t.shape)} during training; the "
                              f"batch is {tuple(ref.shape)}")
        return t

    def per_token_rewards(logprobs, ref_logprobs, scores, mask, kl_coef=0.1):
        (out,), _ = student.call("per_token_rewards", [logprobs, ref_logprobs, scores, mask],
                                 {"kl_coef": kl_coef})
        return like(out, logprobs, "per_token_rewards")

    def compute_token_gae(rewards, values, mask, gamma=1.0, lam=0.95):
        (out,), _ = student.call("compute_token_gae", [rewards, values, mask],
                                 {"gamma": gamma, "lam": lam})
        return like(out, rewards, "compute_token_gae")

    def masked_mean(x, mask):
        (out,), _ = student.call("masked_mean", [x, mask])
        if out.size != 1:
            raise HarnessStop(f"`masked_mean` returned shape {out.shape} during training, not "
                              "a single number")
        return torch.as_tensor(out.reshape(()), dtype=x.dtype, device=x.device)

    def token_ppo_loss(logprobs_new, logprobs_old, advantages, values, returns, mask,
                       epsilon=0.2, vf_coeff=0.5):
        (total, policy_loss, value_loss), (g_new, g_values) = student.call(
            "token_ppo_loss", [logprobs_new, logprobs_old, advantages, values, returns, mask],
            {"epsilon": epsilon, "vf_coeff": vf_coeff}, grad=(0, 3), output=0, outputs=3)
        for name, part in (("total", total), ("policy", policy_loss), ("value", value_loss)):
            if part.size != 1:
                raise HarnessStop(f"`token_ppo_loss` returned a {name} loss of shape "
                                  f"{part.shape} during training, not a single number")
        return (surrogate(float(total.reshape(())), [logprobs_new, values], [g_new, g_values]),
                torch.tensor(float(policy_loss.reshape(()))),
                torch.tensor(float(value_loss.reshape(()))))

    return {"per_token_rewards": per_token_rewards, "compute_token_gae": compute_token_gae,
            "masked_mean": masked_mean, "token_ppo_loss": token_ppo_loss}


def _loop_error(exc: BaseException, policy) -> str:
    import torch

    if not all(torch.isfinite(p).all() for p in policy.parameters()):
        return ("the policy's parameters became NaN or infinite during training; look for a "
                "loss that can explode (a sign, a missing mean, the padding not masked)")
    return f"training stopped with {describe_error(exc)}"


def _weights(model) -> dict:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def _array(v):
    import numpy as np

    return np.asarray(v)


def _torch_with_harness_adam(torch):
    """A view of the torch module whose ``optim.Adam`` is the harness's ``Adam``."""
    class TorchView(types.ModuleType):
        def __getattr__(self, name):
            return getattr(torch, name)

    view = TorchView("torch")
    view.optim = types.SimpleNamespace(Adam=Adam)
    return view
