"""One call of a student function with some of its global names bound to the kit's own code
while it runs. Runs in the student's worker (``op: harness``, executed afresh from this file:
``autograder.sandbox.worker.fresh_harness``); generic, so it holds no assignment's code.

``run(namespace, task="call", substitutes={name: source}, ...)``: each ``source`` defines one
function (the kit's correct implementation of ``name``, sent by the hidden suite); it is bound
to ``name`` in the student function's globals for the call and the student's own is restored
afterwards. So a question that calls another (``token_ppo_loss`` calls ``masked_mean``) is
graded on its own, and a mistake in the helper costs points on the helper only. Reports the
outputs, their tensor metadata, the gradients of the requested inputs and whether any input was
changed, as plain data.
"""
from __future__ import annotations

import ast


def run(namespace: dict, *, task: str = "call", **params) -> dict:
    if task == "call":
        return isolated_call(namespace, **params)
    raise ValueError(f"unknown task {task!r}")


def kit_function(source: str):
    """The one function ``source`` defines, executed in a fresh namespace."""
    defined = [n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)]
    if len(defined) != 1:
        raise ValueError("a substitute must define exactly one function")
    scope: dict = {"__name__": "kit"}
    exec(compile(source, "<kit substitute>", "exec"), scope)
    return scope[defined[0]]


def isolated_call(namespace: dict, *, function: str, args: list, names: list,
                  tensors: list, grad: list, kwargs: dict | None = None,
                  backward_output: int | None = None, device: str = "cpu",
                  substitutes: dict | None = None) -> dict:
    """Call the student's ``function`` with the ``substitutes`` bound in its globals.

    ``args[i]`` is sent to the function as a tensor on ``device`` when ``tensors[i]`` (requiring
    a gradient when ``grad[i]``), else as it came. ``names[i]`` names it in the reply. With
    ``backward_output`` set, ``.backward()`` runs on that output and the gradients of the inputs
    with ``grad[i]`` are reported (None where no gradient arrived).
    """
    import torch

    fn = namespace.get(function)
    if not callable(fn):
        return {"error": {"type": "NotDefined", "message": f"{function} is not defined"}}
    kit = {str(k): kit_function(str(v)) for k, v in (substitutes or {}).items()}
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
    swap = isinstance(scope, dict) and bool(kit)
    missing = object()
    saved: dict = {}
    if swap:
        assert isinstance(scope, dict)
        for name, sub in kit.items():
            saved[name] = scope.get(name, missing)
            scope[name] = sub
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
            assert isinstance(scope, dict)
            for name, old in saved.items():
                if old is missing:
                    scope.pop(name, None)
                else:
                    scope[name] = old


def _array(v):
    import numpy as np

    return np.asarray(v)


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
