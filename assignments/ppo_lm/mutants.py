"""Realistic wrong implementations (mutants) and correct alternatives for assignment ``ppo_lm``.

Data only. A ``Mutant`` is a textual change to the solution cell of its ``function`` in the
source notebook (``find`` occurs there exactly once), or a whole replacement cell
(``find=None``). The reference worker loads every mutant beside the answer key, and
``autograder.hints`` shows a mutant's hint when a student's output matches that mutant's output
on the same inputs. Every mutant must lose points on its own question (``QUESTION``: the grade
cell of its function unless listed there) and on no other unit question; the training question
``lm_ppo_training`` runs all four functions and may lose points too.
``tests/assignments/test_ppo_lm_grading.py`` checks both; ``make mutants`` prints the table.

``CORRECT_VARIANTS`` are whole solution cells written differently from the answer key; every
one must get full marks.

A reference model left trainable is no longer a mistake a submission can make: the models live
in the trusted trainer (``assignments/ppo_lm/trainers/lm.py``), and the student's functions see only
their arguments, as data, in another process (``tests/harness/test_trusted_training.py`` tries).
"""
from autograder.hints import CorrectVariant, Mutant

# --- the lines of the answer key the mutants change -------------------------------------------
PTR_PENALTY = "penalty = -kl_coef * (logprobs - ref_logprobs.to(dtype))"
PTR_MASKED = "rewards = torch.where(real, penalty, zero)"
PTR_LAST = "last = real & ~next_real"
PTR_FIRST_LINE = "real = torch.as_tensor(mask, device=logprobs.device) != 0"

MM_RETURN = "return total / real.sum().clamp(min=1)"

GAE_LOOP_DELTA = "delta = rewards[:, t] + gamma * next_value - values[:, t]"
GAE_RECUR = "advantage = torch.where(real[:, t], delta + gamma * lam * next_advantage, zero)"
GAE_NEXT_VALUE = "next_value = torch.where(real[:, t], values[:, t], zero)"

PPO_SURROGATE = ("surrogate = torch.min(ratio * adv, torch.clamp(ratio, 1 - epsilon, 1 + epsilon)"
                 " * adv)")
PPO_POLICY = "policy_loss = -masked_mean(surrogate, real)"
PPO_VALUE = "value_loss = masked_mean(error ** 2, real)"
PPO_LOG_RATIO = "log_ratio = torch.where(real, logprobs_new - logprobs_old, zero)"
PPO_RATIO = "ratio = torch.exp(log_ratio)"

GAE_FLATTENED = '''\
import torch

def compute_token_gae(rewards, values, mask, gamma=1.0, lam=0.95):
    real = (torch.as_tensor(mask, device=rewards.device) != 0).reshape(-1)
    dtype = torch.result_type(rewards, values)
    r = rewards.to(dtype).reshape(-1)
    v = values.to(device=rewards.device, dtype=dtype).reshape(-1)
    zero = torch.zeros((), dtype=dtype, device=rewards.device)
    advantages = torch.zeros_like(r)
    next_value, next_advantage = zero, zero
    for i in reversed(range(r.shape[0])):   # the whole batch as one long sequence
        delta = r[i] + gamma * next_value - v[i]
        advantage = torch.where(real[i], delta + gamma * lam * next_advantage, zero)
        next_value = torch.where(real[i], v[i], zero)
        next_advantage = advantage
        advantages[i] = advantage
    return advantages.reshape(rewards.shape)
'''

MUTANTS = [
    # --- per_token_rewards ------------------------------------------------------------------
    Mutant("rewards_kl_sign_flipped", "per_token_rewards", PTR_PENALTY,
           "penalty = kl_coef * (logprobs - ref_logprobs.to(dtype))",
           "The KL penalty has the wrong sign: your rewards pay the policy for moving away from "
           "the reference model. The penalty is minus kl_coef times (log pi - log pi_ref), so "
           "drifting away from the reference costs reward."),
    Mutant("rewards_kl_coef_missing", "per_token_rewards", PTR_PENALTY,
           "penalty = -(logprobs - ref_logprobs.to(dtype))",
           "The KL penalty is not weighted by kl_coef: every token pays the full log-ratio. "
           "Multiply the log-ratio by kl_coef (beta)."),
    Mutant("rewards_padding_penalised", "per_token_rewards", PTR_MASKED, "rewards = penalty",
           "Your rewards are not 0 on the padding: the KL penalty is computed at every position, "
           "including those after a row's end. Only real tokens (mask 1) get a reward."),
    Mutant("rewards_score_at_last_padded_position", "per_token_rewards", PTR_LAST,
           "last = torch.zeros_like(real)\n    last[:, -1] = True",
           "The score lands in the last column of the padded batch, not at the last real token "
           "of each row. A row that ends early has its last real token before the padding: "
           "find it from the row's mask (number of real tokens minus one)."),
    Mutant("rewards_score_at_first_token", "per_token_rewards", PTR_LAST,
           "last = torch.zeros_like(real)\n    last[:, 0] = True",
           "The score is added at the first token of each row. The score of a completion is "
           "known only when it is finished: it belongs to the last real token."),
    Mutant("rewards_score_one_past_the_end", "per_token_rewards", PTR_LAST,
           "last = ~real & torch.cat([torch.ones_like(real[:, :1]), real[:, :-1]], dim=1)",
           "The score lands one position too far, on the first padding position after a row's "
           "end (and is lost for a row without padding). The last real token is at the number "
           "of real tokens minus one."),

    # --- masked_mean ------------------------------------------------------------------------
    Mutant("mean_includes_padding", "masked_mean", MM_RETURN, "return x.mean()",
           "Your mean includes the padding: it averages every position of the batch. Sum over "
           "the real tokens only and divide by their number."),
    Mutant("mean_divides_by_all_tokens", "masked_mean", MM_RETURN,
           "return total / real.numel()",
           "You sum over the real tokens but divide by the size of the whole padded batch, so "
           "the padding still dilutes the mean. Divide by the number of real tokens."),
    Mutant("mean_sum_not_mean", "masked_mean", MM_RETURN, "return total",
           "Your result is the sum over the real tokens, not their mean: divide by the number of "
           "real tokens."),
    Mutant("mean_item", "masked_mean", MM_RETURN,
           "return (total / real.sum().clamp(min=1)).item()",
           "Your result is a plain Python number: it is cut off from the graph, so no gradient "
           "reaches the inputs. Return the 0-dim tensor itself."),

    # --- compute_token_gae ------------------------------------------------------------------
    Mutant("gae_leaks_across_rows", "compute_token_gae", None, GAE_FLATTENED,
           "Your advantages run the recursion over the whole batch as one long sequence: the end "
           "of a row without padding takes the value and advantage of the next row's first "
           "token. Every row is its own episode; restart the recursion at 0 for each row."),
    Mutant("gae_leaks_through_padding", "compute_token_gae", GAE_NEXT_VALUE,
           "next_value = values[:, t]",
           "After a row's last real token your recursion uses the value stored in the padding. "
           "The episode ends there: the value after the last real token counts as 0, whatever "
           "the padding holds."),
    Mutant("gae_padding_not_zeroed", "compute_token_gae", GAE_RECUR,
           "advantage = delta + gamma * lam * next_advantage",
           "Your advantages are not 0 on the padding, and the padding's numbers flow back into "
           "the real tokens. Padding positions get advantage 0 and must not feed the recursion."),
    Mutant("gae_lambda_without_gamma", "compute_token_gae", GAE_RECUR,
           "advantage = torch.where(real[:, t], delta + lam * next_advantage, zero)",
           "Your recursion multiplies the next advantage by lambda only. GAE discounts it by "
           "gamma times lambda."),
    Mutant("gae_lambda_ignored", "compute_token_gae", GAE_RECUR,
           "advantage = torch.where(real[:, t], delta + gamma * next_advantage, zero)",
           "Your recursion ignores lambda: it discounts the next advantage by gamma only. GAE "
           "uses gamma times lambda."),
    Mutant("gae_lambda_in_delta", "compute_token_gae", GAE_LOOP_DELTA,
           "delta = rewards[:, t] + lam * next_value - values[:, t]",
           "Your TD residual discounts the next value by lambda. The TD residual uses gamma; "
           "lambda only weighs the later residuals in the recursion."),

    # --- token_ppo_loss ---------------------------------------------------------------------
    Mutant("ppo_unmasked_value_loss", "token_ppo_loss", PPO_VALUE,
           "value_loss = ((values - returns) ** 2).mean()",
           "Your value loss averages the squared error over every position, padding included, "
           "so whatever the padding holds changes it. Average over the real tokens only."),
    Mutant("ppo_policy_mean_over_padding", "token_ppo_loss", PPO_POLICY,
           "policy_loss = -surrogate.mean()",
           "Your policy loss averages over every position of the padded batch, so the padding "
           "dilutes it. Average over the real tokens only."),
    Mutant("ppo_no_clipping", "token_ppo_loss", PPO_SURROGATE, "surrogate = ratio * adv",
           "Your policy loss does not clip the ratio: it is the plain ratio times the advantage. "
           "PPO takes the minimum of that and the clipped ratio times the advantage."),
    Mutant("ppo_sum_not_mean", "token_ppo_loss", PPO_POLICY,
           "policy_loss = -torch.where(real, surrogate, zero).sum()",
           "Your policy loss adds up the real tokens instead of averaging them: it grows with "
           "the batch. Take the mean over the real tokens."),
    Mutant("ppo_max_not_min", "token_ppo_loss", PPO_SURROGATE,
           "surrogate = torch.max(ratio * adv, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) "
           "* adv)",
           "Your clipped objective takes the maximum of the two terms. PPO takes the minimum, a "
           "pessimistic bound on the improvement."),
    Mutant("ppo_ratio_inverted", "token_ppo_loss", PPO_LOG_RATIO,
           "log_ratio = torch.where(real, logprobs_old - logprobs_new, zero)",
           "Your ratio is inverted: it is the old probability over the new one. The ratio is "
           "the new policy's probability over the old one."),
    Mutant("ppo_ratio_detached", "token_ppo_loss", PPO_RATIO,
           "ratio = torch.exp(log_ratio).detach()",
           "No gradient of the policy loss reaches the new log-probabilities: the ratio is cut "
           "off from the graph. Keep it connected."),
]

# The question each mutant must lose points on, where it is not its function's own grade cell.
QUESTION: dict[str, str] = {}

CORRECT_VARIANTS = [
    CorrectVariant("rewards_python_loop", "per_token_rewards", '''\
import torch

def per_token_rewards(logprobs, ref_logprobs, scores, mask, kl_coef=0.1):
    rewards = torch.zeros_like(logprobs)
    lengths = [int(n) for n in torch.as_tensor(mask).float().sum(dim=1).tolist()]
    score_list = [float(s) for s in scores]
    for b, n in enumerate(lengths):
        for t in range(n):
            rewards[b, t] = -kl_coef * (logprobs[b, t] - ref_logprobs[b, t])
        if n > 0:
            rewards[b, n - 1] = rewards[b, n - 1] + score_list[b]
    return rewards
'''),
    CorrectVariant("rewards_scatter", "per_token_rewards", '''\
import torch

def per_token_rewards(logprobs, ref_logprobs, scores, mask, kl_coef=0.1):
    m = torch.as_tensor(mask, device=logprobs.device).to(logprobs.dtype)
    kl = (logprobs - ref_logprobs) * m          # the padding holds finite numbers
    last = (m.sum(dim=1).long() - 1).clamp(min=0).unsqueeze(1)
    s = torch.as_tensor(scores, dtype=logprobs.dtype, device=logprobs.device).unsqueeze(1)
    return (-kl_coef * kl).scatter_add(1, last, s)
'''),
    CorrectVariant("mean_multiply_by_mask", "masked_mean", '''\
def masked_mean(x, mask):
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum()
'''),
    CorrectVariant("mean_boolean_index", "masked_mean", '''\
def masked_mean(x, mask):
    return x[mask.bool()].mean()
'''),
    CorrectVariant("gae_rows_in_python", "compute_token_gae", '''\
import torch

def compute_token_gae(rewards, values, mask, gamma=1.0, lam=0.95):
    advantages = torch.zeros_like(rewards)
    lengths = torch.as_tensor(mask).float().sum(dim=1).long().tolist()
    r, v = rewards.tolist(), values.tolist()
    for b, n in enumerate(lengths):
        running, next_v = 0.0, 0.0
        for t in reversed(range(n)):
            delta = r[b][t] + gamma * next_v - v[b][t]
            running = delta + gamma * lam * running
            advantages[b, t] = running
            next_v = v[b][t]
    return advantages
'''),
    CorrectVariant("gae_mask_arithmetic", "compute_token_gae", '''\
import torch

def compute_token_gae(rewards, values, mask, gamma=1.0, lam=0.95):
    m = torch.as_tensor(mask, device=rewards.device).to(rewards.dtype)
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    last_adv = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in range(T - 1, -1, -1):
        if t + 1 < T:
            next_v = values[:, t + 1].to(rewards.dtype) * m[:, t + 1]
        else:
            next_v = torch.zeros_like(last_adv)
        delta = rewards[:, t] + gamma * next_v - values[:, t].to(rewards.dtype)
        last_adv = (delta + gamma * lam * last_adv) * m[:, t]
        advantages[:, t] = last_adv
    return advantages
'''),
    CorrectVariant("ppo_multiply_by_mask", "token_ppo_loss", '''\
import torch

def token_ppo_loss(logprobs_new, logprobs_old, advantages, values, returns, mask,
                   epsilon=0.2, vf_coeff=0.5):
    m = torch.as_tensor(mask).to(logprobs_new.dtype)
    n = m.sum()
    ratio = torch.exp(logprobs_new - logprobs_old)
    clipped = ratio.clamp(1.0 - epsilon, 1.0 + epsilon)
    objective = torch.minimum(ratio * advantages, clipped * advantages)
    policy_loss = -(objective * m).sum() / n
    value_loss = (((values - returns) ** 2) * m).sum() / n
    return policy_loss + vf_coeff * value_loss, policy_loss, value_loss
'''),
    CorrectVariant("ppo_select_real_tokens", "token_ppo_loss", '''\
import torch

def token_ppo_loss(logprobs_new, logprobs_old, advantages, values, returns, mask,
                   epsilon=0.2, vf_coeff=0.5):
    real = mask.bool()
    ratio = (logprobs_new[real] - logprobs_old[real]).exp()
    adv = advantages[real]
    policy_loss = -torch.min(ratio * adv, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * adv).mean()
    value_loss = torch.nn.functional.mse_loss(values[real], returns[real])
    total_loss = policy_loss + vf_coeff * value_loss
    return total_loss, policy_loss, value_loss
'''),
]
