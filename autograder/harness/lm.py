"""Token-level PPO (RLHF) on the notebook's tiny language model, with the student's four
functions (grade cell ``lm_ppo_training`` of assignment ``ppo_lm``); and calls of one student
function with the kit's ``masked_mean`` in place of the student's (the unit tests of
``token_ppo_loss``).

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
policy itself (``autograder/suites/ppo_lm/training.py``).

``torch.optim.Adam`` in the loop is the harness's ``Adam`` (the same update; it saves the
seconds that importing ``torch._dynamo`` costs a fresh worker): the loop sees a view of ``torch``
that differs only in ``optim.Adam``.

``run(namespace, task="call", ...)`` runs in the student's worker: one call of a student
function with ``masked_mean`` bound to the kit's implementation below while it runs, so that
``token_ppo_loss`` is graded on its own and a mistake in ``masked_mean`` costs points on
``masked_mean`` only. Reports the outputs, their tensor metadata, the gradients of the requested
inputs and whether any input was changed, as plain data.
"""
from __future__ import annotations

import time
import types

# Imported here, once: the worker executes a harness afresh with its own copy of this package,
# so a later ``from autograder.harness import ...`` inside a function would bind other classes.
from autograder.harness import Adam, HarnessStop, describe_error, kit_namespace, surrogate

FUNCTIONS = ("per_token_rewards", "compute_token_gae", "token_ppo_loss", "masked_mean")


def run(namespace: dict, *, task: str = "call", **params) -> dict:
    if task == "call":
        return isolated_call(namespace, **params)
    raise ValueError(f"unknown task {task!r}")


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


# --- one call with the kit's masked_mean -------------------------------------------------------

def kit_masked_mean(x, mask):
    """The mean of ``x`` over the entries where ``mask`` is nonzero (0-dim, dtype of x)."""
    import torch

    real = torch.as_tensor(mask, device=x.device) != 0
    x, real = torch.broadcast_tensors(x, real)
    total = torch.where(real, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum()
    return total / real.sum().clamp(min=1)


def isolated_call(namespace: dict, *, function: str, args: list, names: list,
                  tensors: list, grad: list, kwargs: dict | None = None,
                  backward_output: int | None = None, device: str = "cpu") -> dict:
    """Call the student's ``function`` with ``masked_mean`` bound to ``kit_masked_mean``.

    ``args[i]`` is sent to the function as a tensor on ``device`` when ``tensors[i]`` (requiring
    a gradient when ``grad[i]``), else as it came. ``names[i]`` names it in the reply. With
    ``backward_output`` set, ``.backward()`` runs on that output and the gradients of the inputs
    with ``grad[i]`` are reported (None where no gradient arrived).
    """
    import torch

    fn = namespace.get(function)
    if not callable(fn):
        return {"error": {"type": "NotDefined", "message": f"{function} is not defined"}}
    built = []
    for a, is_tensor, needs_grad in zip(args, tensors, grad):
        if is_tensor:
            t = torch.as_tensor(_array(a)).to(device)
            if needs_grad:
                t.requires_grad_(True)
            built.append(t)
        else:
            built.append(a)
    before = [_snapshot(a) for a in built]
    scope = getattr(fn, "__globals__", None)
    swap = isinstance(scope, dict)
    if swap:
        missing = object()
        saved = scope.get("masked_mean", missing)
        scope["masked_mean"] = kit_masked_mean
    try:
        try:
            value = fn(*built, **(kwargs or {}))
        except Exception as exc:
            return {"error": _student_error(exc, "call")}
        mutated = {n: _snapshot(a) != b for n, a, b in zip(names, built, before)}
        reply = {"value": _plain(value), "meta": _meta(value), "mutated": mutated, "grads": {}}
        if backward_output is not None:
            try:
                out = value[backward_output] if isinstance(value, (tuple, list)) else value
                if not isinstance(out, torch.Tensor):
                    raise TypeError(f"the output is a {type(out).__name__}, not a tensor, so "
                                    "no gradient can flow through it")
                out.backward()
            except Exception as exc:
                return {"error": _student_error(exc, "backward")}
            reply["grads"] = {n: (None if a.grad is None else a.grad.detach().cpu().numpy())
                              for n, a, g in zip(names, built, grad) if g}
        return reply
    finally:
        if swap:
            if saved is missing:
                scope.pop("masked_mean", None)
            else:
                scope["masked_mean"] = saved


def _student_error(exc: BaseException, stage: str) -> dict:
    """The exception as the worker reports one: type, message, the student's frames only."""
    import linecache
    import traceback

    lines = []
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        name = frame.f_code.co_filename
        if not name.startswith("<cell "):
            continue
        lines.append(f'  File "{name}", line {lineno}, in {frame.f_code.co_name}')
        source = linecache.getline(name, lineno).strip()
        if source:
            lines.append(f"    {source[:200]}")
    try:
        message = str(exc)[:2000]
    except Exception:
        message = ""
    return {"type": type(exc).__name__[:200], "message": message, "stage": stage,
            "trace": "\n".join(lines[-16:])}


def _snapshot(v):
    import torch

    if isinstance(v, torch.Tensor):
        return (str(v.dtype), tuple(v.shape), v.detach().cpu().numpy().tobytes())
    return repr(v)


def _plain(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return repr(value)[:200]


def _meta(value):
    import torch

    if isinstance(value, torch.Tensor):
        return {"dtype": str(value.dtype).replace("torch.", ""), "shape": list(value.shape),
                "device": str(value.device), "requires_grad": bool(value.requires_grad),
                "grad_fn": value.grad_fn is not None}
    if isinstance(value, (tuple, list)):
        return [_meta(v) for v in value]
    return None
