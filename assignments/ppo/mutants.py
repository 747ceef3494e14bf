"""Realistic wrong implementations (mutants) and correct alternatives for assignment ``ppo``.

Data only. A ``Mutant`` is a textual change to the solution cell of its ``function`` in the
source notebook (``find`` occurs there exactly once; ``tests/assignments/test_mutants.py``
checks it).
The reference worker loads every mutant beside the answer key, and ``autograder.hints`` shows a
mutant's hint when a student's output matches that mutant's output on the same inputs.

The mistakes are those of the grading-validity catalogue: every one must lose points on its own
question (``make mutants`` prints the table). ``CORRECT_VARIANTS`` are whole solution cells
written differently from the answer key; every one must get full marks.

The answer key's ``ppo_combined_loss`` calls the given ``ppo_loss``; the clipped-loss mistakes
replace that call with the student-written clipped loss that contains the mistake.
"""
from autograder.hints import CorrectVariant, Mutant

# --- the lines of the answer key the mutants change --------------------------------------------
RF_RETURN = "return -(log_probs * rewards).mean()"

GAE_ALLOC = "advantages = torch.zeros(len(rewards), dtype=dtype, device=device)"
GAE_LOOP = "for t in reversed(range(len(rewards))):"
GAE_DELTA = "delta = rewards[t] + gamma * values[t + 1] - values[t]"
GAE_RECUR = "next_advantage = delta + gamma * lam * next_advantage"
GAE_STORE = "advantages[t] = next_advantage"
GAE_RETURN = "return advantages\n"
GAE_BLOCK = f"""{GAE_ALLOC}
    next_advantage = 0.0  # A_{{T+1}} = 0
    {GAE_LOOP}
        {GAE_DELTA}"""

PPO_CALL = "policy_loss = ppo_loss(log_probs_new, log_probs_old, advantages, epsilon)"
RATIO = "ratio = torch.exp(log_probs_new - log_probs_old)"
CLIPPED = "torch.clamp(ratio, 1 - epsilon, 1 + epsilon)"
VALUE_LINE = "value_loss = ((values - returns.reshape(values.shape)) ** 2).mean()"
TOTAL_LINE = "total_loss = policy_loss + vf_coeff * value_loss"
RETURN_LINE = "return total_loss, policy_loss, value_loss"


# Overwriting the rewards in place and writing the output into them look the same from outside
# (the caller's rewards change, the numbers are right): one hint, true of both.
GAE_OVERWRITES_REWARDS = ("Your function changes its input: the rewards tensor you were given "
                          "is overwritten (an in-place operation, or the output "
                          "written into it). Work on new tensors and create a new one for the "
                          "output.")


def _policy(objective: str, ratio: str = RATIO, pre: str = "") -> str:
    """The clipped policy loss written out in the combined loss (replacing the ppo_loss call)."""
    return f"{pre}{ratio}\n    policy_loss = {objective}"


_MIN = f"-torch.min(ratio * advantages, {CLIPPED} * advantages).mean()"

MUTANTS = [
    # --- REINFORCE ------------------------------------------------------------------------------
    Mutant("reinforce_sign_flipped", "reinforce_loss", RF_RETURN,
           "return (log_probs * rewards).mean()",
           "The sign is flipped: your loss is the mean of log-probability times reward. An "
           "optimizer minimizes the loss, so the loss must be the negative of that mean, or the "
           "policy learns to avoid rewarded actions."),
    Mutant("reinforce_probability", "reinforce_loss", RF_RETURN,
           "return -(log_probs.exp() * rewards).mean()",
           "Your loss uses the probability of each action where the log-probability belongs. "
           "The policy gradient weights the gradient of log pi(a), not of pi(a)."),
    Mutant("reinforce_renormalised_logits", "reinforce_loss", RF_RETURN,
           "return -(torch.log_softmax(log_probs, dim=-1) * rewards).mean()",
           "Your loss treats its input as raw logits and normalises them again with a "
           "log-softmax. The input is already the log-probability of each action taken: use it "
           "as it is."),
    Mutant("reinforce_sum", "reinforce_loss", RF_RETURN,
           "return -(log_probs * rewards).sum()",
           "Your loss adds up the batch instead of averaging it: it grows with the batch size. "
           "Take the mean over the actions in the batch."),
    Mutant("reinforce_negates_rewards_in_place", "reinforce_loss", RF_RETURN,
           "return (log_probs * rewards.neg_()).mean()",
           "Your loss negates the rewards tensor it was given in place, so the caller's rewards "
           "change sign. The loss is right, but a function must leave its inputs as they were: "
           "negate a new tensor, not the input."),
    Mutant("reinforce_detached", "reinforce_loss", RF_RETURN,
           "return -(log_probs.detach() * rewards).mean()",
           "No gradient flows from your loss back to the policy: the log-probabilities are cut "
           "off from the graph (detached, or turned into plain numbers). Keep them as they are."),

    # --- GAE --------------------------------------------------------------------------------
    Mutant("gae_forward", "compute_gae", GAE_LOOP, "for t in range(len(rewards)):",
           "Your advantages match a recursion that runs forward in time, from the first step. "
           "GAE accumulates from the last step backwards: A_t uses A_(t+1), which must already "
           "be known."),
    Mutant("gae_current_value_for_next", "compute_gae", GAE_DELTA,
           "delta = rewards[t] + gamma * values[t] - values[t]",
           "Your TD residuals use V(s_t) where the value of the next state, V(s_(t+1)), belongs."),
    Mutant("gae_no_gamma_in_delta", "compute_gae", GAE_DELTA,
           "delta = rewards[t] + values[t + 1] - values[t]",
           "Your TD residuals do not discount the next state's value: it must be multiplied by "
           "gamma. (The difference is small, about 1% of V(s_(t+1)) per step, but it is there.)"),
    Mutant("gae_lambda_twice", "compute_gae", GAE_RECUR,
           "next_advantage = delta + gamma * lam * lam * next_advantage",
           "Lambda is applied twice per step: each step back should weigh the later advantage by "
           "gamma times lambda, once."),
    Mutant("gae_lambda_without_gamma", "compute_gae", GAE_RECUR,
           "next_advantage = delta + lam * next_advantage",
           "Your recursion weighs the later advantage by lambda alone; it must be gamma times "
           "lambda."),
    Mutant("gae_lambda_ignored", "compute_gae", GAE_RECUR,
           "next_advantage = delta + gamma * next_advantage",
           "Lambda is ignored: your advantages match discounting by gamma only. Each step back "
           "weighs the later advantage by gamma times lambda."),
    Mutant("gae_returns_deltas", "compute_gae", GAE_STORE, "advantages[t] = delta",
           "Your output equals the one-step TD residuals delta_t. The advantage adds the "
           "discounted, lambda-weighted residuals of the later steps to delta_t."),
    Mutant("gae_returns_returns", "compute_gae", GAE_RETURN,
           "return advantages + values[:-1]\n",
           "Your output equals the advantages plus V(s_t), that is the returns. compute_gae "
           "returns the advantages themselves; the training loop adds the values back."),
    Mutant("gae_ignores_bootstrap", "compute_gae", GAE_DELTA,
           "delta = rewards[t] + gamma * (values[t + 1] if t + 1 < len(rewards) else 0.0) "
           "- values[t]",
           "The last value V(s_(T+1)), the bootstrap value, is ignored. It is the value of the "
           "state after the last step and counts in the last step's TD residual (it is 0 only "
           "when the episode ended there)."),
    Mutant("gae_normalised", "compute_gae", GAE_RETURN,
           "return (advantages - advantages.mean()) / (advantages.std() + 1e-8)\n",
           "Your advantages are normalised (mean 0, standard deviation 1). compute_gae returns "
           "the raw advantages; normalising is the training loop's job."),
    Mutant("gae_delta_sign_flipped", "compute_gae", GAE_DELTA,
           "delta = values[t] - rewards[t] - gamma * values[t + 1]",
           "The sign of your TD residual is flipped: it is the reward plus the discounted next "
           "value, minus the current value."),
    Mutant("gae_length_t_plus_1", "compute_gae", GAE_ALLOC,
           "advantages = torch.zeros(len(values), dtype=dtype, device=device)",
           "Your output has one entry per value (T+1). There is one advantage per reward (T): "
           "the last value is only the bootstrap."),
    Mutant("gae_off_by_one", "compute_gae", GAE_LOOP,
           "for t in reversed(range(len(rewards) - 1)):",
           "Your loop skips the last step: its advantage stays 0 and is missing from all the "
           "earlier ones. The backward loop starts at the last reward."),
    Mutant("gae_returns_list", "compute_gae", GAE_RETURN, "return advantages.tolist()\n",
           "Your function returns a Python list (or a numpy array); the contract asks for a "
           "torch tensor."),
    Mutant("gae_float32_output", "compute_gae", GAE_ALLOC,
           "advantages = torch.zeros(len(rewards), device=device)",
           "Your output is float32 even when the values are float64: create it with the dtype "
           "of values."),
    Mutant("gae_wrong_device", "compute_gae", GAE_RETURN, "return advantages.cpu()\n",
           "Your output is on the CPU although the values are on the GPU: keep it on the device "
           "of values.", needs="cuda"),
    Mutant("gae_mutates_rewards", "compute_gae", GAE_BLOCK,
           f"""rewards += gamma * values[1:] - values[:-1]  # TD residuals, in place
    {GAE_ALLOC}
    next_advantage = 0.0
    {GAE_LOOP}
        delta = rewards[t]""",
           GAE_OVERWRITES_REWARDS),
    Mutant("gae_aliases_rewards", "compute_gae", GAE_ALLOC,
           "advantages = rewards  # reuse the rewards tensor for the output",
           GAE_OVERWRITES_REWARDS),

    # --- the clipped policy loss, inside ppo_combined_loss ----------------------------------
    Mutant("clip_max_not_min", "ppo_combined_loss", PPO_CALL,
           _policy(f"-torch.max(ratio * advantages, {CLIPPED} * advantages).mean()"),
           "Your policy loss takes the maximum of the unclipped and clipped objectives. PPO "
           "takes the minimum, the pessimistic bound."),
    Mutant("clip_none", "ppo_combined_loss", PPO_CALL,
           _policy("-(ratio * advantages).mean()"),
           "Your policy loss is not clipped: it matches the plain ratio times advantage."),
    Mutant("clip_ratio_of_log_probs", "ppo_combined_loss", PPO_CALL,
           _policy(_MIN, ratio="ratio = log_probs_new / log_probs_old"),
           "Your ratio divides the log-probabilities. The ratio of the probabilities is the "
           "exponential of the difference of the log-probabilities (new minus old)."),
    Mutant("clip_ratio_inverted", "ppo_combined_loss", PPO_CALL,
           _policy(_MIN, ratio="ratio = torch.exp(log_probs_old - log_probs_new)"),
           "Your ratio is upside down: old policy over new. It is new over old, the exponential "
           "of the new log-probability minus the old one."),
    Mutant("clip_bounds_swapped", "ppo_combined_loss", PPO_CALL,
           _policy("-torch.min(ratio * advantages, torch.clamp(ratio, 1 + epsilon, 1 - epsilon)"
                   " * advantages).mean()"),
           "Your clip range is upside down: the lower bound is 1 - epsilon and the upper bound "
           "1 + epsilon. With them swapped every clipped ratio becomes 1 - epsilon."),
    Mutant("clip_advantages", "ppo_combined_loss", PPO_CALL,
           _policy("-torch.min(ratio * advantages, ratio * torch.clamp(advantages, 1 - epsilon, "
                   "1 + epsilon)).mean()"),
           "Your loss clips the advantages instead of the ratio. The ratio is clipped to "
           "[1 - epsilon, 1 + epsilon]; the advantages are used as they are."),
    Mutant("clip_min_before_advantage", "ppo_combined_loss", PPO_CALL,
           _policy(f"-(torch.min(ratio, {CLIPPED}) * advantages).mean()"),
           "Your loss takes the minimum of the ratios before multiplying by the advantage. The "
           "minimum is over the two products (ratio times advantage); with a negative advantage "
           "the order matters."),
    Mutant("clip_upper_only", "ppo_combined_loss", PPO_CALL,
           _policy("-torch.min(ratio * advantages, torch.clamp(ratio, max=1 + epsilon) "
                   "* advantages).mean()"),
           "Your loss clips the ratio only from above; it is clipped to [1 - epsilon, "
           "1 + epsilon], from below too."),
    Mutant("clip_sum", "ppo_combined_loss", PPO_CALL,
           _policy(f"-torch.min(ratio * advantages, {CLIPPED} * advantages).sum()"),
           "Your policy loss adds up the batch instead of averaging it: take the mean."),
    Mutant("clip_sign_flipped", "ppo_combined_loss", PPO_CALL,
           _policy(f"torch.min(ratio * advantages, {CLIPPED} * advantages).mean()"),
           "The sign of your policy loss is flipped: the loss is the negative of the clipped "
           "objective, because optimizers minimize."),
    Mutant("clip_normalises_advantages", "ppo_combined_loss", PPO_CALL,
           _policy(_MIN, pre="advantages = (advantages - advantages.mean()) / "
                             "(advantages.std() + 1e-8)\n    "),
           "Your loss normalises the advantages it is given. Use them as they are; the training "
           "loop already normalises them."),
    Mutant("clip_detached", "ppo_combined_loss", PPO_CALL,
           _policy(_MIN, ratio="ratio = torch.exp(log_probs_new.detach() - log_probs_old)"),
           "No gradient reaches log_probs_new: it is detached (or turned into numbers) inside "
           "your loss, so the policy cannot learn. Keep it in the graph."),
    Mutant("clip_item", "ppo_combined_loss", PPO_CALL, PPO_CALL + ".item()",
           "Your policy loss was turned into a plain Python number, so no gradient reaches "
           "log_probs_new and the returned policy loss is not a tensor."),
    Mutant("clip_default_epsilon", "ppo_combined_loss", PPO_CALL,
           "policy_loss = ppo_loss(log_probs_new, log_probs_old, advantages)",
           "Your loss ignores the epsilon it is given and always clips with the default 0.2."),

    # --- the combined loss ------------------------------------------------------------------
    Mutant("combined_no_vf_coeff", "ppo_combined_loss", TOTAL_LINE,
           "total_loss = policy_loss + value_loss",
           "Your total loss adds the value loss without its coefficient vf_coeff."),
    Mutant("combined_half_mse", "ppo_combined_loss", VALUE_LINE,
           "value_loss = 0.5 * ((values - returns.reshape(values.shape)) ** 2).mean()",
           "Your value loss is half the mean squared error. The contract asks for the plain "
           "mean squared error, with no factor 0.5."),
    Mutant("combined_advantages_as_target", "ppo_combined_loss", VALUE_LINE,
           "value_loss = ((values - advantages.reshape(values.shape)) ** 2).mean()",
           "Your value loss compares the values with the advantages. The critic's targets are "
           "the returns."),
    Mutant("combined_broadcast", "ppo_combined_loss", VALUE_LINE,
           "value_loss = ((values.reshape(-1, 1) - returns) ** 2).mean()",
           "Your value loss compares every value with every return: one of them has shape "
           "(N, 1) and the other (N,), so they broadcast to an N x N matrix. Compare them "
           "element by element, with the same shape."),
    Mutant("combined_vf_in_value_loss", "ppo_combined_loss", TOTAL_LINE,
           "value_loss = vf_coeff * value_loss\n    total_loss = policy_loss + value_loss",
           "The value loss you return already includes vf_coeff. Return the plain mean squared "
           "error as value_loss and apply vf_coeff only in the total."),
    Mutant("combined_minus_value", "ppo_combined_loss", TOTAL_LINE,
           "total_loss = policy_loss - vf_coeff * value_loss",
           "Your total loss subtracts the value loss. Both are minimized: add vf_coeff times the "
           "value loss."),
    Mutant("combined_subtracts_returns_in_place", "ppo_combined_loss", VALUE_LINE,
           "value_loss = (returns.reshape(values.shape).sub_(values) ** 2).mean()",
           "Your value loss subtracts the values from the returns tensor it was given, in "
           "place: the caller's returns change, and the training loop, which reuses them in "
           "every epoch, breaks. Compute the difference as a new tensor."),
    Mutant("combined_floats", "ppo_combined_loss", RETURN_LINE,
           "return total_loss.item(), policy_loss.item(), value_loss.item()",
           "Your function returns plain Python numbers. It must return tensors, so that the "
           "total loss can be back-propagated."),
    Mutant("combined_wrong_order", "ppo_combined_loss", RETURN_LINE,
           "return policy_loss, value_loss, total_loss",
           "Your outputs are in the wrong order: they must come as total_loss, policy_loss, "
           "value_loss."),
]


# --- correct alternatives: whole solution cells ----------------------------------------------
CORRECT_VARIANTS = [
    CorrectVariant("reinforce_torch_mean", "reinforce_loss", '''\
import torch

def reinforce_loss(log_probs, rewards):
    if not torch.is_tensor(rewards):
        rewards = torch.tensor(rewards, dtype=log_probs.dtype, device=log_probs.device)
    return torch.mean(-log_probs * rewards.to(log_probs.device))
'''),
    CorrectVariant("reinforce_sum_over_count", "reinforce_loss", '''\
def reinforce_loss(log_probs, rewards):
    weighted = log_probs * rewards          # a float broadcasts; a tensor multiplies elementwise
    return -weighted.sum() / weighted.numel()
'''),
    CorrectVariant("gae_python_floats", "compute_gae", '''\
import torch

def compute_gae(rewards, values, gamma=0.99, lam=0.95):
    like = values if torch.is_tensor(values) else None
    r = [float(x) for x in rewards]
    v = [float(x) for x in values]
    out = []
    running = 0.0
    for t in range(len(r) - 1, -1, -1):
        delta = r[t] + gamma * v[t + 1] - v[t]
        running = delta + gamma * lam * running
        out.append(running)
    out.reverse()
    if like is not None:
        return torch.tensor(out, dtype=like.dtype, device=like.device)
    return torch.tensor(out, dtype=torch.float32)
'''),
    CorrectVariant("gae_discount_matrix", "compute_gae", '''\
import torch

def compute_gae(rewards, values, gamma=0.99, lam=0.95):
    """Vectorised: A = W @ delta with W[t, k] = (gamma * lam) ** (k - t) for k >= t."""
    if torch.is_tensor(values):
        values = values.clone()
    else:
        values = torch.tensor(values, dtype=torch.float32)
    rewards = torch.as_tensor(rewards).to(dtype=values.dtype, device=values.device)
    deltas = rewards + gamma * values[1:] - values[:-1]
    T = deltas.shape[0]
    idx = torch.arange(T, device=values.device)
    power = (idx[None, :] - idx[:, None]).to(values.dtype)
    weights = torch.where(power >= 0, (gamma * lam) ** power.clamp(min=0),
                          torch.zeros((), dtype=values.dtype, device=values.device))
    return weights @ deltas
'''),
    CorrectVariant("gae_numpy_inside", "compute_gae", '''\
import numpy as np
import torch

def compute_gae(rewards, values, gamma=0.99, lam=0.95):
    dtype = values.dtype if torch.is_tensor(values) else torch.float32
    device = values.device if torch.is_tensor(values) else "cpu"
    r = np.array(torch.as_tensor(rewards).detach().cpu(), dtype=np.float64)
    v = np.array(torch.as_tensor(values).detach().cpu(), dtype=np.float64)
    deltas = r + gamma * v[1:] - v[:-1]
    adv = np.zeros_like(deltas)
    acc = 0.0
    for t in reversed(range(len(deltas))):
        acc = deltas[t] + gamma * lam * acc
        adv[t] = acc
    return torch.from_numpy(adv).to(dtype=dtype, device=device)
'''),
    CorrectVariant("gae_float64_then_cast", "compute_gae", '''\
import torch

def compute_gae(rewards, values, gamma=0.99, lam=0.95):
    out_dtype = values.dtype if torch.is_tensor(values) else torch.float32
    device = values.device if torch.is_tensor(values) else torch.device("cpu")
    r = torch.as_tensor(rewards, dtype=torch.float64, device=device)
    v = torch.as_tensor(values, dtype=torch.float64, device=device)
    deltas = r + gamma * v[1:] - v[:-1]
    advantages = torch.empty_like(deltas)
    gae = torch.zeros((), dtype=torch.float64, device=device)
    for t in range(deltas.numel() - 1, -1, -1):
        gae = deltas[t] + gamma * lam * gae
        advantages[t] = gae
    return advantages.to(out_dtype)
'''),
    CorrectVariant("gae_reversed_cumulative", "compute_gae", '''\
import torch

def compute_gae(rewards, values, gamma=0.99, lam=0.95):
    """Deltas first, then a running sum over the reversed sequence, flipped back."""
    v = torch.as_tensor(values)
    if not v.is_floating_point():
        v = v.float()
    r = torch.as_tensor(rewards, dtype=v.dtype, device=v.device)
    deltas = r + gamma * v[1:] - v[:-1]
    running, acc = [], torch.zeros((), dtype=v.dtype, device=v.device)
    for d in torch.flip(deltas, dims=[0]):
        acc = d + gamma * lam * acc
        running.append(acc)
    if not running:
        return deltas
    return torch.flip(torch.stack(running), dims=[0])
'''),
    CorrectVariant("gae_recursive", "compute_gae", '''\
import torch

def _gae_from(t, deltas, discount):
    if t == len(deltas):
        return []
    rest = _gae_from(t + 1, deltas, discount)
    head = deltas[t] + (discount * rest[0] if rest else 0.0)
    return [head] + rest

def compute_gae(rewards, values, gamma=0.99, lam=0.95):
    v = values if torch.is_tensor(values) else torch.tensor(values, dtype=torch.float32)
    r = torch.as_tensor(rewards, dtype=v.dtype).to(v.device)
    deltas = r + gamma * v[1:] - v[:-1]
    return torch.stack(_gae_from(0, deltas, gamma * lam)).to(v.dtype)
'''),
    CorrectVariant("combined_torch_where", "ppo_combined_loss", '''\
import torch
import torch.nn.functional as F

def ppo_combined_loss(log_probs_new, log_probs_old, advantages,
                      values, returns, epsilon=0.2, vf_coeff=0.5):
    ratio = (log_probs_new - log_probs_old).exp()
    # the pessimistic bound, written per sign of the advantage
    objective = torch.where(advantages >= 0,
                            torch.clamp(ratio, max=1 + epsilon) * advantages,
                            torch.clamp(ratio, min=1 - epsilon) * advantages)
    policy_loss = -objective.mean()
    value_loss = F.mse_loss(values, returns.view_as(values))
    return policy_loss + vf_coeff * value_loss, policy_loss, value_loss
'''),
    CorrectVariant("combined_inline_minimum", "ppo_combined_loss", '''\
import torch

def ppo_combined_loss(log_probs_new, log_probs_old, advantages,
                      values, returns, epsilon=0.2, vf_coeff=0.5):
    ratio = torch.exp(log_probs_new - log_probs_old.detach())
    surrogate = torch.minimum(ratio * advantages,
                              ratio.clamp(1.0 - epsilon, 1.0 + epsilon) * advantages)
    policy_loss = -surrogate.sum() / surrogate.numel()
    value_loss = (values - returns).pow(2).mean()
    total_loss = policy_loss + vf_coeff * value_loss
    return (total_loss, policy_loss, value_loss)
'''),
    CorrectVariant("combined_reuses_ppo_loss", "ppo_combined_loss", '''\
import torch.nn.functional as F

def ppo_combined_loss(log_probs_new, log_probs_old, advantages,
                      values, returns, epsilon=0.2, vf_coeff=0.5):
    policy_loss = ppo_loss(log_probs_new, log_probs_old, advantages, epsilon=epsilon)
    value_loss = F.mse_loss(values.flatten(), returns.flatten(), reduction="mean")
    total = policy_loss + value_loss * vf_coeff
    return total, policy_loss, value_loss
'''),
]
