"""What the trainers share, and the relay they reach student functions through.

Trainers are assignment code: ``assignments/<name>/trainers/<trainer>.py`` (e.g.
``assignments/ppo/trainers/bandit.py``), run only in the trusted reference worker, which
imports them through ``autograder.plugins`` (``op: train``; ``autograder.proxy.Trainer``).
Contract: a trainer defines ``train(student, **params) -> dict`` where ``student`` is a
``relay.Student`` (each call of a student function becomes one request to the student's
worker, relayed by the parent) and the result is plain data (numbers, lists, numpy arrays). A
trainer imports only torch, numpy, the standard library and this package.

This package: ``Adam``, ``surrogate``, ``HarnessStop``, ``kit_namespace``, ``describe_error``
(here), ``relay`` (the relay, trusted side), ``local`` (a trainer's student served in this
process, for calibration and tests) and ``isolated`` (the one helper that runs in a student's
worker: one call of a student function with some of its global names bound to the kit's code;
it and this file are all of the package the student's sandbox sees).

The environment and policy classes a trainer trains come from the *source* notebook's locked
cells: the parent passes their code in ``params["kit_source"]`` and the trainer executes it in a
fresh namespace (``kit_namespace``), so redefining a given class in a submission changes
nothing.
"""
from __future__ import annotations


class HarnessStop(Exception):
    """The student's function made training impossible; the message says how (student-facing)."""


class Adam:
    """``torch.optim.Adam`` (defaults: betas (0.9, 0.999), eps 1e-8, no weight decay), written
    out step for step like torch's single-tensor CPU path.

    Only because constructing ``torch.optim.Adam`` imports ``torch._dynamo``, about 3.5 s of
    every worker's time; ``tests/harness/test_harness.py`` checks that both give the same
    parameters.
    """

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        import torch

        self.params = [p for p in params]
        self.lr, (self.beta1, self.beta2), self.eps = float(lr), betas, float(eps)
        self.step_count = 0
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format)
                        for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format)
                           for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        import torch

        self.step_count += 1
        bias_correction1 = 1 - self.beta1 ** self.step_count
        bias_correction2 = 1 - self.beta2 ** self.step_count
        step_size = self.lr / bias_correction1
        bias_correction2_sqrt = bias_correction2 ** 0.5
        with torch.no_grad():
            for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
                if p.grad is None:
                    continue
                grad = p.grad
                m.lerp_(grad, 1 - self.beta1)
                v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
                denom = (v.sqrt() / bias_correction2_sqrt).add_(self.eps)
                p.addcdiv_(m, denom, value=-step_size)


def kit_namespace(kit_source: str) -> dict:
    """Execute the kit's own class definitions (from the source notebook) in a fresh namespace."""
    namespace: dict = {"__name__": "kit"}
    exec(compile(kit_source, "<kit classes>", "exec"), namespace)
    return namespace


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def surrogate(value: float, inputs: list, grads: list):
    """A 0-dim tensor equal to ``value`` whose gradient with respect to each of ``inputs`` is
    the matching array of ``grads``: the student's loss, as the trainer's graph sees it.
    (``x.backward(g)`` would do for one input, but its first call imports torch's symbolic
    shapes, about 0.3 s of CPU in every fresh worker.)"""
    import torch

    total = torch.tensor(value, dtype=inputs[0].dtype, device=inputs[0].device)
    for x, g in zip(inputs, grads):
        term = (x * torch.as_tensor(g, dtype=x.dtype, device=x.device)).sum()
        total = total + term - term.detach()
    return total
