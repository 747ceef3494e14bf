"""PPO on a contextual bandit with the student's ``compute_gae`` and ``ppo_combined_loss``
(grade cell ``ppo_training``).

The environment and the network are the notebook's own ``ContextualBandit`` and ``PPOPolicy``
(from the source notebook's locked cells, passed in ``kit_source``); the bandit's weights come
from the hidden seed. The loop is the notebook's PPO training loop (``ppo_loop``): the batch is
collected in one forward pass with the notebook's batch methods, every sample is a one-step
episode (``compute_gae([r], [V(s), 0.0])``), the returns are advantages plus values, the
advantages are normalised over the batch, and each batch gets ``ppo_epochs`` steps of Adam on
the student's total loss.

Returns the trained actor as a list of layers (plain arrays); the parent evaluates it on a large
fixed set of states.
"""
from __future__ import annotations

from autograder.harness import (Adam, HarnessStop, as_scalar_loss, call_student,
                                kit_namespace, student_function)


def run(namespace: dict, *, kit_source: str, weights, iterations: int = 200,
        batch_size: int = 64, ppo_epochs: int = 4, lr: float = 3e-4, epsilon: float = 0.2,
        gamma: float = 0.99, lam: float = 0.95, vf_coeff: float = 0.5, seed: int = 0) -> dict:
    import torch
    import torch.nn.functional as F

    kit = kit_namespace(kit_source)
    gae_fn = student_function(namespace, "compute_gae")
    loss_fn = student_function(namespace, "ppo_combined_loss")
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))

    w = torch.as_tensor(weights, dtype=torch.float32)
    state_dim, n_actions = w.shape
    env = kit["ContextualBandit"](n_actions=n_actions, state_dim=state_dim)
    env.weights = w.clone()
    policy = kit["PPOPolicy"](state_dim, n_actions)
    optimizer = Adam(policy.parameters(), lr=lr)

    try:
        for _ in range(iterations):
            # --- collect a batch: one forward pass for all the states (the notebook's loop) ---
            states = env.get_states(batch_size, generator=gen)
            with torch.no_grad():
                actions, log_probs_old, values = policy.get_actions(states)
            rewards = env.step_batch(states, actions)

            # --- advantages with the student's GAE: one-step episodes, bootstrap value 0 ---
            advantages = torch.tensor([
                _first_number(call_student(gae_fn, "compute_gae", [r], [v, 0.0], gamma=gamma,
                                        lam=lam))
                for r, v in zip(rewards.tolist(), values.tolist())], dtype=torch.float32)
            returns = advantages + values
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

            # --- PPO update with the student's combined loss (several epochs, same batch) ---
            for _ in range(ppo_epochs):
                logits, new_values = policy(states)
                log_probs_all = F.log_softmax(logits, dim=-1)
                log_probs_new = log_probs_all.gather(1, actions.unsqueeze(1)).squeeze(1)
                out = call_student(loss_fn, "ppo_combined_loss", log_probs_new, log_probs_old,
                                advantages, new_values, returns, epsilon=epsilon,
                                vf_coeff=vf_coeff)
                if not isinstance(out, (tuple, list)) or len(out) != 3:
                    raise HarnessStop("`ppo_combined_loss` did not return the three losses "
                                      "(total, policy, value) during training")
                loss = as_scalar_loss(out[0], "ppo_combined_loss")
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if not torch.isfinite(loss.detach()):
                raise HarnessStop("the loss became NaN or infinite during training")
    except HarnessStop as stop:
        return {"error": str(stop)}
    return {"actor": actor_layers(policy.actor)}


def _first_number(adv) -> float:
    """The single advantage of a one-step episode, from whatever sequence type came back."""
    import torch

    try:
        t = torch.as_tensor(adv if not isinstance(adv, torch.Tensor) else adv.detach(),
                            dtype=torch.float32).reshape(-1)
        return float(t[0])
    except Exception:
        raise HarnessStop(f"`compute_gae` returned {type(adv).__name__} during training, "
                          "which could not be read as a sequence of advantages") from None


def actor_layers(actor) -> list:
    """The actor network as plain data: [{"type": "linear", "weight", "bias"}, {"type": "relu"}]."""
    import torch.nn as nn

    layers = []
    for module in actor:
        if isinstance(module, nn.Linear):
            layers.append({"type": "linear",
                           "weight": module.weight.detach().cpu().numpy(),
                           "bias": module.bias.detach().cpu().numpy()})
        elif isinstance(module, nn.ReLU):
            layers.append({"type": "relu"})
        elif isinstance(module, nn.Tanh):
            layers.append({"type": "tanh"})
        else:
            raise TypeError(f"the kit cannot export actor layer {type(module).__name__}")
    return layers
