"""The kit's training harnesses. They run inside the worker, next to the student's code.

Contract: a module ``autograder/harness/<name>.py`` defines
``run(namespace: dict, **params) -> dict`` where ``namespace`` holds the student's loaded
definitions and the result is plain data (numbers, lists, numpy arrays). A harness imports only
torch, numpy, the standard library and this package.

The environment and policy classes a harness trains come from the *source* notebook's locked
cells: the parent passes their code in ``params["kit_source"]`` and the harness executes it in a
fresh namespace (``kit_namespace``). The student's namespace is used only for the functions the
student wrote, so redefining a given class in a submission changes nothing.
"""
from __future__ import annotations


class HarnessStop(Exception):
    """The student's function made training impossible; the message says how (student-facing)."""


class Adam:
    """``torch.optim.Adam`` (defaults: betas (0.9, 0.999), eps 1e-8, no weight decay), written
    out step for step like torch's single-tensor CPU path.

    Only because constructing ``torch.optim.Adam`` imports ``torch._dynamo``, about 3.5 s of
    every worker's time; ``tests/test_harness.py`` checks that both give the same parameters.
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


def student_function(namespace: dict, name: str):
    """The student's function ``name``, or HarnessStop saying it is missing."""
    fn = namespace.get(name)
    if not callable(fn):
        raise HarnessStop(f"`{name}` is not defined, so training could not run")
    return fn


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def call_student(fn, name: str, *args, **kwargs):
    """Call a student function; an exception becomes a HarnessStop with a plain message."""
    try:
        out = fn(*args, **kwargs)
    except Exception as exc:  # the student's code raised: say so, training stops
        raise HarnessStop(f"`{name}` raised {describe_error(exc)} during training") from None
    return out


def as_scalar_loss(out, name: str):
    """The 0-dim tensor a loss must be, or HarnessStop saying why it cannot be trained on."""
    import torch

    if not isinstance(out, torch.Tensor):
        raise HarnessStop(f"`{name}` returned {type(out).__name__} during training, not a tensor, "
                          "so no gradient step was possible")
    if out.numel() != 1:
        raise HarnessStop(f"`{name}` returned a tensor of shape {tuple(out.shape)} during "
                          "training, not a single number, so no gradient step was possible")
    if out.grad_fn is None and not out.requires_grad:
        raise HarnessStop(f"`{name}` returned a tensor with no gradient during training, so "
                          "the parameters could not be updated")
    return out.reshape(())
