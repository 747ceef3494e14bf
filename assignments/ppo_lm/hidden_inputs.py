"""Hidden padded batches and checks for the ``ppo_lm`` suites (trusted parent; numpy only); the
checks every suite shares live in ``autograder/suites/checks.py``.

Expected values always come from the reference worker (the source notebook's solution cells)
called on the very same inputs. Fixed values (the notebook's examples) and independent numpy
computations back the reference up: if the reference disagrees with one, that is a grader error
(``GraderError``), never the student's fault.

Hidden batches are padded the way the RLHF loop pads them: every row's real tokens come first,
the row lengths vary (one row is full, one has a single real token), and the padding holds junk
(large finite numbers) that a correct function never looks at.
"""
from __future__ import annotations

import inspect
import weakref

import numpy as np

from autograder.proxy import (NotDefined, Returned, StudentError, Tensor, TensorMeta, WorkerDied,
                              WorkerTimeout)
from autograder.suites import checks
from autograder.suites.checks import ATOL

RTOL = 1e-5


def expect_values(got, want, what: str, explain=lambda: "", atol: float = ATOL) -> None:
    """``got`` (the student's, any numeric form) must match ``want`` (the reference's) within
    ``atol + RTOL * |want|``."""
    checks.expect_values(got, want, what, explain, atol=atol, rtol=RTOL)


# --- hidden padded batches -----------------------------------------------------------------------

def row_lengths(rng: np.random.Generator, rows: int, steps: int) -> np.ndarray:
    """Real tokens per row: one full row, one row of a single token, the rest random."""
    lengths = rng.integers(1, steps + 1, size=rows)
    lengths[0], lengths[1] = steps, 1
    return rng.permutation(lengths)


def mask_of(lengths: np.ndarray, steps: int) -> np.ndarray:
    """The (B, T) float mask: 1 on each row's first ``lengths[b]`` tokens."""
    return (np.arange(steps)[None, :] < np.asarray(lengths)[:, None]).astype(np.float64)


def with_junk(rng: np.random.Generator, x: np.ndarray, mask: np.ndarray,
              scale: float) -> np.ndarray:
    """``x`` with the padding replaced by junk of magnitude up to ``scale`` (finite)."""
    junk = rng.choice([-1.0, 1.0], size=x.shape) * rng.uniform(0.5 * scale, scale, size=x.shape)
    return np.where(mask != 0, x, junk)


def rlhf_batch(rng: np.random.Generator, rows: int, steps: int) -> dict:
    """A padded batch as the RLHF loop sees it: log-probabilities under the policy and the
    reference, scores in [-1, 1], values, rewards; junk in every padding position."""
    lengths = row_lengths(rng, rows, steps)
    mask = mask_of(lengths, steps)
    logprobs = -rng.uniform(0.05, 4.0, size=(rows, steps))
    ref = logprobs + rng.normal(0.0, 0.5, size=(rows, steps))
    return {
        "lengths": lengths, "mask": mask,
        "logprobs": with_junk(rng, logprobs, mask, 20.0),
        "ref_logprobs": with_junk(rng, ref, mask, 20.0),
        "scores": rng.uniform(-1.0, 1.0, size=rows),
        "rewards": with_junk(rng, rng.normal(0.0, 0.5, size=(rows, steps)), mask, 30.0),
        "values": with_junk(rng, rng.normal(0.0, 1.0, size=(rows, steps)), mask, 30.0),
    }


def ppo_batch(rng: np.random.Generator, rows: int, steps: int) -> dict:
    """Inputs of token_ppo_loss: ratios on both sides of the clip range, advantages of both
    signs, values and returns that differ; junk in the padding of every input."""
    lengths = row_lengths(rng, rows, steps)
    mask = mask_of(lengths, steps)
    lp_old = -rng.uniform(0.2, 3.0, size=(rows, steps))
    lp_new = lp_old + rng.normal(0.0, 0.35, size=(rows, steps))
    adv = rng.normal(0.0, 1.0, size=(rows, steps))
    values = rng.normal(0.0, 1.0, size=(rows, steps))
    returns = values + rng.normal(0.0, 1.0, size=(rows, steps))
    return {"lengths": lengths, "mask": mask,
            "lp_new": with_junk(rng, lp_new, mask, 6.0),
            "lp_old": with_junk(rng, lp_old, mask, 6.0),
            "adv": with_junk(rng, adv, mask, 10.0),
            "values": with_junk(rng, values, mask, 30.0),
            "returns": with_junk(rng, returns, mask, 30.0)}


def tensor(x, dtype=np.float32, **kw) -> Tensor:
    return Tensor(np.asarray(x, dtype=dtype), **kw)


def bool_mask(mask) -> Tensor:
    return Tensor(np.asarray(mask) != 0)


# --- hint probes (autograder/hints.py) -----------------------------------------------------------
# For each function, new padded batches in the form of a test's inputs (dtype, float or bool mask,
# scores as a list or a tensor, gradient leaves, keyword arguments), on which autograder.hints
# confirms a known mistake before it names it; the last one has every number three times larger.

def _probes(make, keys):
    def probes(rng, args, kwargs):
        from autograder.hints import shaped_like

        out = []
        for rows, steps, wide in ((4, 6, False), (5, 7, False), (3, 8, True)):
            batch = make(rng, rows, steps)
            if wide:   # every number spread wider: large advantages, ratios far from 1
                batch = {k: 3.0 * v if k not in ("mask", "lengths") else v
                         for k, v in batch.items()}
            out.append((tuple(shaped_like(a, batch[k]) for a, k in zip(args, keys))
                        + tuple(args[len(keys):]), kwargs))
        return out
    return probes


HINT_PROBES = {
    "per_token_rewards": _probes(rlhf_batch, ("logprobs", "ref_logprobs", "scores", "mask")),
    "masked_mean": _probes(rlhf_batch, ("values", "mask")),
    "compute_token_gae": _probes(rlhf_batch, ("rewards", "values", "mask")),
    "token_ppo_loss": _probes(ppo_batch, ("lp_new", "lp_old", "adv", "values", "returns",
                                          "mask")),
}


# --- independent numpy computations (to back the reference up) ----------------------------------

def np_per_token_rewards(logprobs, ref_logprobs, scores, lengths, kl_coef):
    lp, ref = np.asarray(logprobs, np.float64), np.asarray(ref_logprobs, np.float64)
    out = np.zeros_like(lp)
    for b, n in enumerate(lengths):
        out[b, :n] = -kl_coef * (lp[b, :n] - ref[b, :n])
        out[b, n - 1] += scores[b]
    return out


def np_masked_mean(x, lengths):
    x = np.asarray(x, np.float64)
    return sum(x[b, :n].sum() for b, n in enumerate(lengths)) / sum(lengths)


def np_token_gae(rewards, values, lengths, gamma, lam):
    """Part 1's GAE on each row's real tokens, the value after the last one 0."""
    r, v = np.asarray(rewards, np.float64), np.asarray(values, np.float64)
    out = np.zeros_like(r)
    for b, n in enumerate(lengths):
        a, nxt = 0.0, 0.0
        for t in reversed(range(n)):
            delta = r[b, t] + gamma * nxt - v[b, t]
            a = delta + gamma * lam * a
            out[b, t], nxt = a, v[b, t]
    return out


def np_ppo_losses(batch, epsilon=0.2, vf_coeff=0.5, dtype=np.float32):
    real = [(b, t) for b, n in enumerate(batch["lengths"]) for t in range(n)]
    f = lambda k: np.asarray(batch[k], dtype=dtype).astype(np.float64)  # noqa: E731
    lp_new, lp_old, adv, values, returns = (f(k) for k in ("lp_new", "lp_old", "adv", "values",
                                                          "returns"))
    surr, err = [], []
    for b, t in real:
        r = np.exp(lp_new[b, t] - lp_old[b, t])
        surr.append(min(r * adv[b, t], np.clip(r, 1 - epsilon, 1 + epsilon) * adv[b, t]))
        err.append((values[b, t] - returns[b, t]) ** 2)
    policy, value = -np.mean(surr), np.mean(err)
    return policy + vf_coeff * value, policy, value


# --- token_ppo_loss graded on its own -------------------------------------------------------------

def kit_masked_mean(x, mask):
    """The mean of ``x`` over the entries where ``mask`` is nonzero (0-dim, dtype of x)."""
    import torch

    real = torch.as_tensor(mask, device=x.device) != 0
    x, real = torch.broadcast_tensors(x, real)
    total = torch.where(real, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum()
    return total / real.sum().clamp(min=1)


KIT_MASKED_MEAN = inspect.getsource(kit_masked_mean)   # sent to the student's worker
_FAILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
CALL_TIMEOUT = 30.0


def call_with_kit_masked_mean(student, function: str, args: list, names: list[str], *,
                              kwargs: dict | None = None, backward_output: int | None = None,
                              device: str = "cpu") -> Returned:
    """Call the student's ``function`` in the worker with ``masked_mean`` bound to the kit's own
    correct implementation ``kit_masked_mean`` while it runs (``autograder/harness/isolated.py``
    in the student's worker), so that a mistake in the student's masked_mean costs points on
    masked_mean only. ``args`` are ``Tensor``s (a named one with ``requires_grad`` is a
    gradient leaf) or plain values; returns a proxy ``Returned`` like ``student.call`` does.
    Raises StudentError for an exception in the student's code, and the proxy's errors for a
    dead or stuck worker (one per function)."""
    failed = _FAILED.setdefault(student, {})
    if function in failed:
        earlier = failed[function]
        raise type(earlier)(f"{earlier}; {function} was not called again after that")
    if function not in student.defined:
        raise NotDefined(function, student.why_not_defined(function))
    plain = [a.data if isinstance(a, Tensor) else a for a in args]
    try:
        out = student.harness("isolated", task="call", function=function, args=plain,
                              names=names, substitutes={"masked_mean": KIT_MASKED_MEAN},
                              tensors=[isinstance(a, Tensor) for a in args],
                              grad=[isinstance(a, Tensor) and a.requires_grad for a in args],
                              kwargs=kwargs or {}, backward_output=backward_output,
                              device=device, timeout=CALL_TIMEOUT)
    except (WorkerTimeout, WorkerDied) as exc:
        failed[function] = exc
        raise
    if "error" in out:
        err = out["error"]
        raise StudentError(str(err.get("type", "Exception")), str(err.get("message", "")),
                           trace=str(err.get("trace", "")), stage=str(err.get("stage", "call")),
                           function=function)
    return Returned(value=out.get("value"), meta=_metas(out.get("meta")),
                    grads=dict(out.get("grads") or {}),
                    mutated={k: bool(v) for k, v in (out.get("mutated") or {}).items()},
                    seconds=0.0)


def _metas(meta):
    if isinstance(meta, dict):
        return TensorMeta(dtype=str(meta["dtype"]), shape=tuple(meta["shape"]),
                          device=str(meta["device"]), requires_grad=bool(meta["requires_grad"]),
                          grad_fn=bool(meta["grad_fn"]), is_exact_tensor=True)
    if isinstance(meta, (list, tuple)):
        return tuple(_metas(m) for m in meta)
    return None
