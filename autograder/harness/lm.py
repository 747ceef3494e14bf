"""Token-level PPO (RLHF) on the notebook's tiny language model, with the student's four
functions (grade cell ``lm_ppo_training`` of assignment ``ppo_lm``); and calls of one student
function with the kit's ``masked_mean`` in place of the student's (the unit tests of
``token_ppo_loss``).

``run(namespace, task="train", ...)``: the notebook's own ``make_rlhf_models`` and ``rlhf_train``
(the source notebook's cells ``corpus``, ``lm_model``, ``sampling``, ``reward_fn`` and
``rlhf_loop``, passed in ``kit_source`` and executed in a fresh namespace) run with the student's
``per_token_rewards``, ``compute_token_gae``, ``token_ppo_loss`` and ``masked_mean``. The
pretrained weights arrive as plain arrays in ``weights`` (the worker cannot read ``source/``):
the notebook's ``load_pretrained`` is replaced by one that loads them. Returns the trained
policy's and the reference model's weights as arrays, and the loop's history; the parent scores
the trained policy itself (``autograder/suites/ppo_lm/training.py``).

The reference model must stay frozen. The loop hands the student's functions only detached
log-probabilities, so the only way a function can unfreeze or change the reference model is by
reaching outside its arguments (the caller's frames, the garbage collector). After every call
of a student function the harness checks the reference model: no parameter requires a
gradient, eval mode, every parameter bit for bit as loaded. The first violation stops training
with a message naming the function; the parent also compares the returned reference weights
with the weights it sent.

``torch.optim.Adam`` in the loop is the harness's ``Adam`` (the same update; it saves the
seconds that importing ``torch._dynamo`` costs a fresh worker): the loop sees a view of ``torch``
that differs only in ``optim.Adam``.

``run(namespace, task="call", ...)``: one call of a student function with ``masked_mean`` bound
to the kit's implementation below while it runs, so that ``token_ppo_loss`` is graded on its own
and a mistake in ``masked_mean`` costs points on ``masked_mean`` only. Reports the outputs, their
tensor metadata, the gradients of the requested inputs and whether any input was changed, as
plain data.
"""
from __future__ import annotations

import time
import types

# Imported here, once: the worker executes a harness afresh with its own copy of this package,
# so a later ``from autograder.harness import ...`` inside a function would bind other classes.
from autograder.harness import (Adam, HarnessStop, as_scalar_loss, describe_error, kit_namespace,
                                student_function)

FUNCTIONS = ("per_token_rewards", "compute_token_gae", "token_ppo_loss", "masked_mean")


def run(namespace: dict, *, task: str = "train", **params) -> dict:
    if task == "train":
        return train(namespace, **params)
    if task == "call":
        return isolated_call(namespace, **params)
    raise ValueError(f"unknown task {task!r}")


# --- training ----------------------------------------------------------------------------------

def train(namespace: dict, *, kit_source: str, weights: dict, iterations: int = 30,
          batch_size: int = 64, seed: int = 0, value_seed: int = 0, device: str = "cpu",
          **loop_kwargs) -> dict:
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
    guard = ReferenceGuard(ref_model)
    try:
        functions = {name: _guarded(student_function(namespace, name), name, guard)
                     for name in FUNCTIONS}
        try:
            history = kit["rlhf_train"](policy, ref_model, value_head, **functions,
                                        iterations=int(iterations), batch_size=int(batch_size),
                                        seed=int(seed), device=device, log_every=0,
                                        **loop_kwargs)
        except HarnessStop:
            raise
        except Exception as exc:   # the loop broke on what a student function returned
            raise HarnessStop(_loop_error(exc, policy)) from None
        guard.check("training")
    except HarnessStop as stop:
        return {"error": str(stop), "seconds": time.perf_counter() - started}
    return {"policy": _weights(policy), "reference": _weights(ref_model),
            "history": {k: [float(x) for x in v] for k, v in history.items()},
            "seconds": time.perf_counter() - started}


class ReferenceGuard:
    """Checks that the reference model is still frozen: eval mode, no parameter that requires a
    gradient, every parameter bit for bit as it was loaded."""

    def __init__(self, model):
        self.model = model
        self.snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}

    def check(self, who: str) -> None:
        import torch

        model = self.model
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        changed = [n for n, p in model.named_parameters()
                   if n not in self.snapshot or p.shape != self.snapshot[n].shape
                   or not torch.equal(p.detach(), self.snapshot[n])]
        where = "during training" if who == "training" else f"in `{who}`"
        if trainable:
            raise HarnessStop(
                f"the frozen reference model became trainable {where}: its parameters "
                f"{', '.join(trainable[:3])}{' ...' if len(trainable) > 3 else ''} require "
                "gradients again. The reference must stay frozen (no gradients, never updated), "
                "or the KL penalty no longer measures the distance to the pretrained model")
        if changed:
            raise HarnessStop(
                f"the frozen reference model was changed {where} (its parameters "
                f"{', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}). The reference "
                "must stay exactly the pretrained model")
        if model.training:
            raise HarnessStop(f"the frozen reference model was put in training mode {where}; "
                              "it must stay in eval mode")


def _guarded(fn, name: str, guard: ReferenceGuard):
    """``fn`` as the loop calls it: an exception becomes a HarnessStop naming ``name``; the
    reference model is checked after every call; the output is read as the loop needs it."""
    def call(*args, **kwargs):
        try:
            out = fn(*args, **kwargs)
        except HarnessStop:
            raise
        except Exception as exc:
            raise HarnessStop(f"`{name}` raised {describe_error(exc)} during training") from None
        guard.check(name)
        return _READERS[name](out, args)
    call.__name__ = name
    return call


def _per_token(name: str):
    """per_token_rewards and compute_token_gae: a (B, T) tensor like their first argument;
    lists and arrays are read as numbers (their type costs a unit check only)."""
    def read(out, args):
        import torch

        like = args[0]
        try:
            t = out if isinstance(out, torch.Tensor) else torch.as_tensor(
                _array(out), dtype=like.dtype)
        except Exception:
            raise HarnessStop(f"`{name}` returned {type(out).__name__} during training, which "
                              "could not be read as a (B, T) tensor") from None
        if tuple(t.shape) != tuple(like.shape):
            raise HarnessStop(f"`{name}` returned shape {tuple(t.shape)} during training; the "
                              f"batch is {tuple(like.shape)}")
        return t.to(device=like.device, dtype=like.dtype)
    return read


def _read_mean(out, args):
    import torch

    like = args[0]
    try:
        t = out if isinstance(out, torch.Tensor) else torch.as_tensor(_array(out),
                                                                      dtype=like.dtype)
    except Exception:
        raise HarnessStop(f"`masked_mean` returned {type(out).__name__} during training, not "
                          "a number") from None
    if t.numel() != 1:
        raise HarnessStop(f"`masked_mean` returned shape {tuple(t.shape)} during training, not "
                          "a single number")
    return t.reshape(()).to(device=like.device)


def _read_losses(out, args):
    import torch

    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise HarnessStop("`token_ppo_loss` did not return the three losses (total, policy, "
                          "value) during training")
    total = as_scalar_loss(out[0], "token_ppo_loss")
    rest = []
    for part in out[1:]:
        try:
            rest.append(torch.as_tensor(part.detach() if isinstance(part, torch.Tensor)
                                        else _array(part), dtype=torch.float64).reshape(()))
        except Exception:
            raise HarnessStop("`token_ppo_loss` returned a policy or value loss that is not a "
                              "single number during training") from None
    return total, rest[0], rest[1]


_READERS = {"per_token_rewards": _per_token("per_token_rewards"),
            "compute_token_gae": _per_token("compute_token_gae"),
            "masked_mean": _read_mean, "token_ppo_loss": _read_losses}


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
