"""The trusted trainer's view of the student's functions (runs in the trusted reference worker).

A trainer (``bandit``, ``contextual``, ``lm``) owns the environment, its ground truth, the
parameters, the optimizer and the evaluation. Whenever it needs a student function it calls
``Student.call`` (or ``Student.map`` for many one-step episodes at once). That turns the call's
inputs into one ``call`` (or ``map``) request of the wire protocol: tensors as data, a leaf
requiring a gradient for every input whose gradient the trainer needs. ``ask`` carries the
request to the student's worker (the parent relays it) and returns the worker's raw reply.

Invariants:

- Nothing but the call's own inputs leaves this process: no parameters, no arm means, no bandit
  weights, no reward model, no reference model.
- Everything in a reply is a claim. It is decoded with ``protocol.decode`` (bounded, validated),
  checked for shape and finiteness, and only then used: values as numbers, gradients pushed
  into the trainer's own graph with ``torch.autograd.backward``. A forged gradient therefore only
  moves the forger's own training run.
- Every reply is a claim about a function of its inputs. On a random sample of calls (drawn from
  the run's hidden seed, at least ``MIN_CHECKS`` per function) the trusted side recomputes the
  reply with the answer key, and with the catalogued mistakes of that function (``mutants``),
  on the same inputs. All checked replies of one run must agree with one and the same of these
  candidates; otherwise training stops, naming the function. A function that keeps statistics
  across calls and steers its gradient (towards the best arm seen so far, say) fails here.
- Every failure is a ``HarnessStop`` with a student-facing message that names the student's
  function and the likely cause, never a name of the kit.
"""
from __future__ import annotations

import hashlib
import random
import threading

import numpy as np

from autograder.harness import HarnessStop
from autograder.sandbox import protocol

CHECK_FRACTION = 0.1     # share of a run's calls recomputed on the trusted side
MIN_CHECKS = 8           # ... but at least this many per function (the first call always)
RTOL, ATOL = 1e-3, 1e-5  # agreement with a candidate, relative to the candidate's scale


class Student:
    """The student's functions as a trainer calls them. ``ask(msg) -> reply`` relays one
    request; ``ns`` is the trusted namespace with the answer key (and the mutants named in
    ``mutants``: {function: [names in ns]})."""

    def __init__(self, ask, ns: dict | None, *, seed: int, mutants: dict | None = None,
                 calls_expected: dict | None = None, check_fraction: float = CHECK_FRACTION):
        self.ask, self.ns = ask, ns
        self.rng = random.Random(derive(seed, "which calls are checked"))
        self.mutants = {k: list(v) for k, v in (mutants or {}).items()}
        self.expected = dict(calls_expected or {})
        self.fraction = float(check_fraction)
        self.counts: dict[str, int] = {}
        self.checked: dict[str, int] = {}
        self.alive: dict[str, list[str]] = {}     # function -> candidates still consistent
        self.round_trips = 0
        self.seed = int(seed)

    # --- calls -----------------------------------------------------------------------------------
    def call(self, fn: str, args: list, kwargs: dict | None = None, *, grad: tuple = (),
             output: int | None = None, outputs: int | None = None):
        """Call ``fn(*args, **kwargs)`` in the student's worker. ``args`` may hold torch
        tensors; those at the positions in ``grad`` travel as leaves requiring a gradient, and
        ``.backward()`` runs there on output ``output`` (None: the value itself). Returns
        ``(values, grads)``: the returned numbers as a tuple of float64 arrays (``outputs`` of
        them, or one), and one gradient array per position in ``grad`` (zeros where none
        arrived)."""
        kwargs = dict(kwargs or {})
        leaves, wire_args = {}, []
        for i, a in enumerate(args):
            if i in grad:
                name = f"arg{i}"
                leaves[name] = protocol.tensor_arg(_numpy(a), requires_grad=True)
                wire_args.append({"$leaf": name})
            else:
                wire_args.append(_wire(a))
        msg = {"op": "call", "fn": fn, "args": wire_args,
               "kwargs": {k: _wire(v) for k, v in kwargs.items()}, "leaves": leaves,
               "seed": self._next_seed(fn),
               "backward": {"output": output, "wrt": sorted(leaves)} if grad else None}
        reply = self._ask(fn, msg)
        values = self._values(fn, reply.get("value"), outputs)
        grads = self._grads(fn, reply.get("grads"), args, grad) if grad else []
        if self._sampled(fn):
            self._check(fn, args, kwargs, grad, output, outputs, values, grads)
        return values, grads

    def map(self, fn: str, columns: list, kwargs: dict | None = None) -> list:
        """Call ``fn`` once per row of ``columns`` (float arrays, one row per call, each row
        passed as a plain list) with the shared ``kwargs``, all in one request, no gradients.
        Returns one float64 1-D array per call."""
        columns = [np.asarray(c, dtype=np.float64) for c in columns]
        kwargs = dict(kwargs or {})
        msg = {"op": "map", "fn": fn, "seed": self._next_seed(fn),
               "columns": [protocol.encode(c) for c in columns],
               "kwargs": {k: _wire(v) for k, v in kwargs.items()}}
        reply = self._ask(fn, msg)
        n = columns[0].shape[0]
        raw = reply.get("values")
        if type(raw) is list and len(raw) == n:
            out = [self._values(fn, v, None)[0].reshape(-1) for v in raw]
        else:
            arr = self._values(fn, raw, None)[0]
            if arr.ndim != 2 or arr.shape[0] != n:
                raise HarnessStop(f"`{fn}` sent back an answer that is not in the expected "
                                  "format during training")
            out = list(arr)
        if self._sampled(fn):
            calls = [([c[i].tolist() for c in columns], kwargs) for i in range(n)]
            self._check_map(fn, calls, out)
        return out

    # --- replies -------------------------------------------------------------------------------
    def _ask(self, fn: str, msg: dict) -> dict:
        self.counts[fn] = self.counts.get(fn, 0) + 1
        self.round_trips += 1
        reply = self.ask(msg)
        if type(reply) is not dict:
            raise HarnessStop(f"`{fn}` could not be run during training")
        if not reply.get("ok"):
            raise HarnessStop(describe_failure(fn, reply.get("error")))
        mutated = reply.get("mutated")
        if type(mutated) is dict:
            changed = [str(k)[:40] for k, v in mutated.items() if v is True]
            if changed:
                raise HarnessStop(
                    f"`{fn}` changed one of its inputs in place ({', '.join(changed[:3])}) "
                    "during training. The training loop uses its inputs again after the call, "
                    "so a function must leave them unchanged (work on a copy, or use "
                    "out-of-place operations such as `x = x - y` instead of `x -= y`)")
        return reply

    def _values(self, fn: str, raw, outputs: int | None) -> tuple:
        try:
            value, _ = protocol.decode(raw)
        except protocol.ProtocolError:
            raise HarnessStop(f"`{fn}` sent back an answer that is not in the expected format "
                              "during training") from None
        items = value if outputs is not None else (value,)
        if outputs is not None and (type(value) not in (tuple, list) or len(value) != outputs):
            raise HarnessStop(f"`{fn}` did not return the {outputs} values it should "
                              f"({_what(value)}) during training")
        arrays = []
        for item in items:
            arr = _numbers(item)
            if arr is None:
                raise HarnessStop(f"`{fn}` returned {_what(item)} during training, which could "
                                  "not be read as numbers")
            if not np.all(np.isfinite(arr)):
                raise HarnessStop(f"`{fn}` returned NaN or infinite values during training; "
                                  "look for a division by zero, a log of 0, or a loss that "
                                  "grows without bound")
            arrays.append(arr)
        return tuple(arrays)

    def _grads(self, fn: str, raw, args, grad) -> list:
        raw = raw if type(raw) is dict else {}
        out, arrived = [], False
        for i in grad:
            g = raw.get(f"arg{i}")
            shape = tuple(args[i].shape)
            if g is None:
                out.append(np.zeros(shape))
                continue
            arr = self._values(fn, g, None)[0]
            if arr.shape != shape:
                raise HarnessStop(f"`{fn}` produced a gradient of shape {arr.shape} for an input "
                                  f"of shape {shape} during training")
            arrived = True
            out.append(arr)
        if not arrived:
            raise HarnessStop(f"`{fn}` returned a loss with no gradient during training (it is "
                              "cut off from the inputs, e.g. by `.item()`, `.detach()`, "
                              "`torch.tensor(...)` or numpy), so the parameters could not be "
                              "updated")
        return out

    # --- the trusted comparison ----------------------------------------------------------------
    def _sampled(self, fn: str) -> bool:
        if self.ns is None:
            return False
        n = self.counts.get(fn, 0)
        if n == 1:
            return True
        expected = self.expected.get(fn, 0)
        fraction = max(self.fraction, MIN_CHECKS / expected) if expected else self.fraction
        return self.rng.random() < fraction

    def _candidates(self, fn: str) -> list[str]:
        if fn not in self.alive:
            self.alive[fn] = [fn] + [m for m in self.mutants.get(fn, [])
                                     if callable(self.ns.get(m))]
        return self.alive[fn]

    def _check(self, fn, args, kwargs, grad, output, outputs, values, grads) -> None:
        self.checked[fn] = self.checked.get(fn, 0) + 1
        keep = []
        for name in self._candidates(fn):
            expect = _run_trusted(self.ns[name], args, kwargs, grad, output, outputs)
            if expect is not None and _agree(expect[0], values) and _agree(expect[1], grads):
                keep.append(name)
            if name == fn and keep:   # the answer key agrees: no need to try the mutants
                break
        self._narrow(fn, keep)

    def _check_map(self, fn, calls, out) -> None:
        self.checked[fn] = self.checked.get(fn, 0) + 1
        keep = []
        for name in self._candidates(fn):
            ok = True
            for (args, kw), got in zip(calls, out):
                expect = _run_trusted(self.ns[name], args, kw, (), None, None)
                if expect is None or not _agree((expect[0][0].reshape(-1),), (got,)):
                    ok = False
                    break
            if ok:
                keep.append(name)
                if name == fn:
                    break
        self._narrow(fn, keep)

    def _narrow(self, fn: str, keep: list[str]) -> None:
        if fn in keep:          # the answer key agrees: the others are not ruled out yet
            return
        self.alive[fn] = [k for k in self.alive[fn] if k in keep]
        if not self.alive[fn]:
            raise HarnessStop(
                f"`{fn}` did not give the same result during training as it does as a function "
                "of its inputs alone: recomputed on the same inputs, its loss or gradient "
                "differs. Training must use exactly what your function computes; a function "
                "must not keep state between calls or depend on anything but its arguments")

    def _next_seed(self, fn: str) -> int:
        return derive(self.seed, "call seed", fn, self.counts.get(fn, 0))


def derive(seed: int, label: str, *parts) -> int:
    """A 62-bit number from sha256(seed, label, parts): one-way, so a call's seed, which the
    student's worker sees (``torch.initial_seed()``), reveals neither ``seed`` nor any other
    number derived from it with another label (which calls are checked, the run's own seeds)."""
    text = "\0".join([str(int(seed)), label] + [str(p) for p in parts])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") % (1 << 62)


# --- the relay: a trainer in a thread, its student calls handed to the caller ------------------

class Relay:
    """Runs ``target(ask)`` in a thread. Each ``ask(msg)`` of the trainer becomes an event of
    ``start``/``resume``: ``("need", msg)``; the trainer waits until ``resume(reply)`` hands it
    the reply. The run ends with ``("done", result)`` or ``("failed", exception)``.
    ``resume(None)`` aborts a waiting trainer (it stops with a HarnessStop)."""

    def __init__(self, target):
        import queue

        self._to_main, self._to_trainer = queue.SimpleQueue(), queue.SimpleQueue()
        self._target = target
        self.finished = False
        self._thread = threading.Thread(target=self._run, name="trainer", daemon=True)

    def _ask(self, msg: dict) -> dict:
        self._to_main.put(("need", msg))
        reply = self._to_trainer.get()
        if reply is None:
            raise _Aborted()
        return reply

    def _run(self) -> None:
        try:
            result = self._target(self._ask)
        except _Aborted:
            self._to_main.put(("done", {"error": "training was stopped"}))
        except HarnessStop as stop:
            self._to_main.put(("done", {"error": str(stop)}))
        except BaseException as exc:   # a kit bug: the caller reports it
            self._to_main.put(("failed", exc))
        else:
            self._to_main.put(("done", result))

    def _next(self):
        event = self._to_main.get()
        if event[0] != "need":
            self.finished = True
        return event

    def start(self):
        self._thread.start()
        return self._next()

    def resume(self, reply: dict | None):
        if self.finished:
            raise RuntimeError("the training run has already finished")
        self._to_trainer.put(reply)
        return self._next()

    def abort(self) -> None:
        if not self.finished and self._thread.is_alive():
            self._to_trainer.put(None)
            self._to_main.get()
            self.finished = True


class _Aborted(BaseException):
    """The parent stopped the run (the student's worker failed)."""


# --- helpers --------------------------------------------------------------------------------------

def describe_failure(fn: str, error) -> str:
    """A failed reply as the student reads it: the function, what it raised, its own lines."""
    try:
        err = protocol.decode_error(error)
    except protocol.ProtocolError:
        return f"`{fn}` failed during training"
    text = err["message"].strip().splitlines()
    what = f"{err['type']}: {text[0][:300]}" if text else err["type"]
    if err["stage"] == "backward" and err["type"] == "TypeError" and not err["trace"] and \
            err["message"].startswith(("the output is a", "expected a tuple of outputs")):
        head = (f"`{fn}` did not return a loss tensor during training ({text[0][:200]}), so "
                "no gradient step was possible")
    elif err["stage"] == "backward":
        head = f"calling .backward() on what `{fn}` returned raised {what} during training"
    elif err["stage"] == "worker":
        head = f"`{fn}` could not be called during training ({what})"
    else:
        head = f"`{fn}` raised {what} during training"
    hint = likely_cause(err["message"])
    trace = f"\n{err['trace']}" if err["trace"] else ""
    return f"{head}{hint}{trace}"


def likely_cause(message: str) -> str:
    """One sentence on what an autograd error usually means in these functions, or ''."""
    m = message.lower()
    if "backward through the graph a second time" in m:
        return (" (a likely cause: the function changes one of its inputs in place, or keeps a "
                "tensor from an earlier call)")
    if "does not require grad and does not have a grad_fn" in m:
        return (" (a likely cause: the loss is cut off from its inputs by `.item()`, "
                "`.detach()`, `torch.tensor(...)` or numpy)")
    if "grad can be implicitly created only for scalar outputs" in m:
        return " (a likely cause: the loss is not reduced to a single number with `.mean()`)"
    if "modified by an inplace operation" in m or "leaf variable" in m:
        return " (a likely cause: an in-place operation such as `+=` or `.sub_()` on an input)"
    return ""


def _what(value) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    if isinstance(value, protocol.Other):
        return f"a {value.type}"
    return f"a {type(value).__name__}"


def _numbers(value):
    """A float64 array of a decoded value (array, number), or None."""
    if isinstance(value, (protocol.Other, protocol.TooLarge, dict, str)) or value is None:
        return None
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.dtype == np.float64 else None


def _numpy(t) -> np.ndarray:
    import torch

    if isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    return np.asarray(t)


def _wire(v):
    """A trusted input as a request value (tensors as data, on the student's device)."""
    import torch

    if isinstance(v, torch.Tensor):
        return protocol.tensor_arg(v.detach().cpu().numpy())
    return protocol.encode(v)


def _agree(expected, got) -> bool:
    if len(expected) != len(got):
        return False
    for e, g in zip(expected, got):
        e, g = np.asarray(e, dtype=np.float64), np.asarray(g, dtype=np.float64)
        if e.size != g.size:
            return False
        e, g = e.reshape(-1), g.reshape(-1)
        scale = float(np.max(np.abs(e))) if e.size else 0.0
        if not np.all(np.abs(e - g) <= ATOL + RTOL * max(scale, 1e-12) + RTOL * np.abs(e)):
            return False
    return True


def _run_trusted(fn, args, kwargs, grad, output, outputs):
    """(values, grads) of a trusted function (the answer key or a mutant) on copies of the same
    inputs, computed the way the student's worker computes them; None if it raises."""
    import torch

    try:
        built = []
        leaves = []
        for i, a in enumerate(args):
            if isinstance(a, torch.Tensor):
                t = torch.from_numpy(a.detach().cpu().numpy().copy())
                if i in grad:
                    t.requires_grad_(True)
                    leaves.append(t)
                built.append(t)
            else:
                built.append(_copy(a))
        with torch.enable_grad():
            value = fn(*built, **{k: _copy(v) for k, v in kwargs.items()})
            items = (value,) if outputs is None else tuple(value)
            if grad:
                out = value[output] if output is not None else value
                out.backward()
        vals = tuple(np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x,
                                dtype=np.float64) for x in items)
        grads = tuple(np.zeros(tuple(t.shape)) if t.grad is None
                      else t.grad.detach().cpu().numpy().astype(np.float64) for t in leaves)
        return vals, grads
    except Exception:
        return None


def _copy(v):
    if isinstance(v, list):
        return [_copy(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.copy()
    return v
