"""PPO on a contextual bandit with the student's ``compute_gae`` and ``ppo_combined_loss``
(grade cell ``ppo_training``). Runs in the trusted worker; only the two functions' calls go to
the student.

The environment and the network are the notebook's own ``ContextualBandit`` and ``PPOPolicy``
(from the source notebook's locked cells, passed in ``kit_source``); the bandit's weights come
from the hidden seed and never leave this process. The loop is the notebook's PPO training loop
(``ppo_loop``): the batch is collected in one forward pass with the notebook's batch methods,
every sample is a one-step episode (``compute_gae([r], [V(s), 0.0])``, all of a batch in one
``map`` request), the returns are advantages plus values, the advantages are normalised over
the batch, and each batch gets ``ppo_epochs`` steps of Adam on the student's total loss: the
student's worker gets the new log-probabilities and the values as leaves, returns the three
losses and the gradients of the total with respect to both leaves, and the trainer pushes
those gradients through its own network.

Returns the trained actor as a list of layers (plain arrays); the parent evaluates it on a large
fixed set of states.
"""
from __future__ import annotations

from autograder.harness import Adam, HarnessStop, kit_namespace, surrogate


def train(student, *, kit_source: str, weights, iterations: int = 200,
          batch_size: int = 64, ppo_epochs: int = 4, lr: float = 3e-4, epsilon: float = 0.2,
          gamma: float = 0.99, lam: float = 0.95, vf_coeff: float = 0.5, seed: int = 0) -> dict:
    """``student`` is a ``relay.Student``; the result is plain data."""
    import torch
    import torch.nn.functional as F

    kit = kit_namespace(kit_source)
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))

    w = torch.as_tensor(weights, dtype=torch.float32)
    state_dim, n_actions = w.shape
    env = kit["ContextualBandit"](n_actions=n_actions, state_dim=state_dim)
    env.weights = w.clone()
    policy = kit["PPOPolicy"](state_dim, n_actions)
    optimizer = Adam(policy.parameters(), lr=lr)

    for _ in range(iterations):
        # --- collect a batch: one forward pass for all the states (the notebook's loop) ---
        states = env.get_states(batch_size, generator=gen)
        with torch.no_grad():
            actions, log_probs_old, values = policy.get_actions(states)
        rewards = env.step_batch(states, actions)

        # --- advantages with the student's GAE: one-step episodes, bootstrap value 0 ---
        episodes = [rewards.reshape(-1, 1).numpy(),                  # [r]
                    torch.stack([values, torch.zeros_like(values)], 1).numpy()]   # [v, 0.0]
        gae = student.map("compute_gae", episodes, {"gamma": gamma, "lam": lam})
        if any(a.size < 1 for a in gae):
            raise HarnessStop("`compute_gae` returned no advantage for a one-step episode "
                              "during training")
        advantages = torch.tensor([float(a[0]) for a in gae], dtype=torch.float32)
        returns = advantages + values
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

        # --- PPO update with the student's combined loss (several epochs, same batch) ---
        for _ in range(ppo_epochs):
            logits, new_values = policy(states)
            log_probs_all = F.log_softmax(logits, dim=-1)
            log_probs_new = log_probs_all.gather(1, actions.unsqueeze(1)).squeeze(1)
            (total, _, _), (g_new, g_values) = student.call(
                "ppo_combined_loss", [log_probs_new, log_probs_old, advantages, new_values,
                                      returns], {"epsilon": epsilon, "vf_coeff": vf_coeff},
                grad=(0, 3), output=0, outputs=3)
            if total.size != 1:
                raise HarnessStop(f"`ppo_combined_loss` returned a total loss of shape "
                                  f"{total.shape} during training, not a single number")
            optimizer.zero_grad()
            surrogate(float(total.reshape(())), [log_probs_new, new_values],
                      [g_new, g_values]).backward()
            optimizer.step()
    return {"actor": actor_layers(policy.actor), "round_trips": student.round_trips,
            "checked": sum(student.checked.values())}


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
