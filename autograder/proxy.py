"""What the hidden suites call: ``student.compute_gae(...)`` runs in the worker, returns data.

Invariants:

- Only plain data crosses: inputs are numbers, lists, numpy arrays and ``Tensor`` /
  ``LogSoftmaxGather`` descriptions; outputs are numbers and numpy arrays with a ``TensorMeta``.
  Nothing is pickled and no torch is imported here.
- A call of a name the load reply did not define raises ``NotDefined`` without asking the worker;
  the student's exception becomes ``StudentError``; a dead or stuck worker raises ``WorkerDied``
  / ``WorkerTimeout`` (the next call restarts it). ``str()`` of each is student-facing.
- ``backward``, ``seed`` and ``timeout`` are the proxy's own keyword arguments, never passed to
  the student's function. Every call is seeded (``default_seed`` unless given), so a regrade
  repeats any randomness in the student's code exactly.
- A function whose call timed out or ended the worker process is not called again through this
  proxy: later calls raise the same kind of error at once, and a harness run gets a stand-in
  that raises instead of it. One hanging function therefore costs one timeout, not one per
  test, and cannot use up the time budget of the functions that work.
"""
from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autograder.sandbox import protocol
from autograder.sandbox.client import Worker, WorkerDied, WorkerError, WorkerTimeout
from autograder.sandbox.failure_text import limit_note, limit_of
from autograder.sandbox.protocol import Other, ProtocolError, TensorMeta, TooLarge

__all__ = ["StudentProxy", "Tensor", "LogSoftmaxGather", "Backward", "Returned", "TensorMeta",
           "Other", "TooLarge", "StudentError", "ReferenceFailed", "NotDefined", "WorkerDied",
           "WorkerTimeout", "WorkerError", "Computed"]


class StudentError(Exception):
    """The student's code raised. ``type``/``message`` are the exception's; ``trace`` lists the
    student's frames only; ``stage`` is "call", "backward" or "harness"."""

    def __init__(self, type: str, message: str, *, trace: str = "", stage: str = "call",
                 function: str = ""):
        super().__init__(type, message)
        self.type, self.message, self.trace = type, message, trace
        self.stage, self.function = stage, function

    def __str__(self) -> str:
        where = {"backward": f"Calling .backward() on the result of {self.function}",
                 "harness": "Your code"}.get(
            self.stage, f"{self.function}" if self.function else "Your code")
        text = f"{where} raised {self.type}: {self.message}"
        return f"{text}\n{self.trace}" if self.trace else text


class ReferenceFailed(StudentError):
    """A call on the trusted reference worker (the answer key) failed: a kit problem, never the
    student's. A StudentError, so that code tolerating failing mutants keeps doing so; the plugin
    reports it as a grader error."""


class NotDefined(Exception):
    """The function is not in the student's namespace; ``why`` says what happened instead."""

    def __init__(self, name: str, why: str):
        super().__init__(name, why)
        self.name, self.why = name, why

    def __str__(self) -> str:
        return f"{self.name} could not be called: {self.why}."


class _TrustedLost(Exception):
    """The trusted worker died during a training run with a direct line (``train``)."""


MALFORMED = "the process running your code sent back an answer that is not in the expected format"
MALFORMED_REPLY = {"ok": False, "error": {"type": "MalformedReply", "message": MALFORMED,
                                          "trace": "", "stage": "call"}}


@dataclass
class Tensor:
    """An input tensor: numpy data sent as raw bytes, built on the worker's device.

    ``name`` makes it a leaf whose gradient can be asked for with ``Backward(wrt=[name])``
    (give ``requires_grad=True`` too). One name is one tensor object in the worker, however
    often it appears in the arguments.
    """
    data: Any                       # array-like; an ndarray after __post_init__
    requires_grad: bool = False
    name: str | None = None

    def __post_init__(self):
        self.data = np.asarray(self.data)


@dataclass
class LogSoftmaxGather:
    """Log-probabilities built in the worker: ``log_softmax(logits, -1)[index]`` for 1-D logits
    ([K], ``index`` an int or a list of ints), or one entry per row for [B, K] logits (``index``
    a list of B ints). Gradients can then be reported with respect to the logits leaf."""
    logits: Tensor
    index: object


@dataclass
class Computed:
    """A tensor computed in the worker from the leaf ``of`` (``of * 1``): it carries gradients
    but is not a leaf, like a network's output in a training loop, so an in-place change to it
    does not raise at once. Gradients are reported with respect to the leaf."""
    of: Tensor


@dataclass
class Backward:
    """After the call, run ``.backward()`` on output ``output`` (None: the whole return value)
    and report the gradients of the named leaves."""
    output: int | None = None
    wrt: list[str] = field(default_factory=list)


@dataclass
class Returned:
    """One call's result. ``value`` is decoded (numpy arrays for tensors); ``meta`` mirrors it
    (TensorMeta for a tensor, a tuple of metas for a tuple, None for a non-tensor);
    ``grads[leaf]`` is None when no gradient reached the leaf; ``mutated[arg]`` says whether an
    argument's contents changed (keys: parameter names, or ``args[i]``); ``seconds`` is the
    call's wall time in the worker."""
    value: object
    meta: object
    grads: dict[str, np.ndarray | None]
    mutated: dict[str, bool]
    seconds: float
    args_after: dict | None = None   # with echo_args: {"args": [...], "kwargs": {...}} decoded


@dataclass(frozen=True)
class Trainer:
    """A trusted trainer: the file ``file`` (``trainers/<name>.py``, relative to the folder) of
    assignment ``assignment``'s folder ``folder``. Only the trusted reference worker imports it
    (``autograder.plugins``); the student's worker never sees the folder."""
    assignment: str
    folder: str | os.PathLike
    file: str

    def request(self) -> dict:
        return {"assignment": self.assignment, "folder": os.fspath(self.folder),
                "file": self.file}


class StudentProxy:
    """Calls the functions a worker loaded. ``proxy.name(*args, **kw)`` or ``proxy.call(...)``."""

    _auto = itertools.count(1)

    def __init__(self, worker: Worker, *, default_seed: int = 0,
                 problems: dict[str, str] | None = None):
        self._worker = worker
        self._default_seed = default_seed
        self._problems = dict(problems or {})        # function -> why its cell was not run
        self._failed: dict[str, WorkerError] = {}    # function -> how its call failed

    # -- what was loaded ----------------------------------------------------------------------
    @property
    def defined(self) -> dict[str, str]:
        """{function name: signature text} from the load reply."""
        return dict((self._worker.load_reply or {}).get("defined") or {})

    @property
    def cell_errors(self) -> list[dict]:
        return list((self._worker.load_reply or {}).get("cell_errors") or [])

    @property
    def device(self) -> str:
        return (self._worker.load_reply or {}).get("device", self._worker.device)

    def why_not_defined(self, name: str) -> str:
        """The student-facing reason ``name`` is missing."""
        if name in self._problems:
            return self._problems[name]
        errors = self.cell_errors
        for err in errors:
            if name in (err.get("names") or []) or err.get("cell") == f"{name}_answer":
                return _describe_cell_error(err)
        for err in errors:
            if err.get("type") in ("WorkerTimeout", "WorkerDied"):
                return f"your notebook's code could not be loaded ({err.get('message')})"
        return "it is not defined in your notebook"

    # -- calls --------------------------------------------------------------------------------
    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args, **kwargs):
            return self.call(name, *args, **kwargs)
        call.__name__ = name
        return call

    def call(self, fn: str, *args, backward: Backward | None = None, seed: int | None = None,
             timeout: float | None = None, echo_args: bool = False, **kwargs) -> Returned:
        """Call the student's ``fn`` in the worker. Raises NotDefined, StudentError,
        WorkerDied, WorkerTimeout. ``echo_args``: the worker also sends back the arguments'
        contents after the call (``Returned.args_after``), for the parent to compare with what
        it sent."""
        if fn not in self.defined:
            raise NotDefined(fn, self.why_not_defined(fn))
        if fn in self._failed:
            earlier = self._failed[fn]
            raise type(earlier)(f"{earlier}; {fn} was not called again after that")
        leaves: dict[str, dict] = {}
        owners: dict[str, Tensor] = {}

        def encode(v):
            return protocol.encode(v, default=lambda x: self._input(x, leaves, owners))

        msg = {"op": "call", "fn": fn, "args": [encode(a) for a in args],
               "kwargs": {k: encode(v) for k, v in kwargs.items()}, "leaves": leaves,
               "seed": self._default_seed if seed is None else int(seed), "backward": None}
        if echo_args:
            msg["echo_args"] = True
        if backward is not None:
            unknown = [w for w in backward.wrt if w not in leaves]
            if unknown:
                raise ValueError(f"Backward(wrt=...) names no input leaf: {unknown}")
            msg["backward"] = {"output": backward.output, "wrt": list(backward.wrt)}
        try:
            reply = self._worker.request(msg, timeout or self._worker.limits.call_timeout_seconds)
        except WorkerError as exc:
            if self._worker.trusted:
                raise ReferenceFailed(type(exc).__name__, str(exc), function=fn) from None
            if not self._worker.out_of_wall_time:   # the function's own fault, not the budget's
                self._failed[fn] = exc
            raise
        if not reply.get("ok"):
            raise self._error(reply, fn)
        try:
            value, meta = protocol.decode(reply.get("value"))
            grads = {}
            for leaf, g in (reply.get("grads") or {}).items():
                grads[leaf] = None if g is None else protocol.decode(g)[0]
            mutated = {str(k): v is True for k, v in (reply.get("mutated") or {}).items()}
            seconds = float(reply.get("seconds", 0.0))
            after = reply.get("args_after") if echo_args else None
            if after is not None:
                after = {"args": [protocol.decode(a)[0] for a in after.get("args") or []],
                         "kwargs": {str(k): protocol.decode(v)[0]
                                    for k, v in (after.get("kwargs") or {}).items()}}
        except (ProtocolError, TypeError, ValueError, AttributeError) as exc:
            raise self._malformed(fn, exc) from None
        return Returned(value=value, meta=meta, grads=grads, mutated=mutated, seconds=seconds,
                        args_after=after)

    def harness(self, name: str, *, seed: int | None = None, timeout: float | None = None,
                **params):
        """Run the kit's training harness ``autograder/harness/<name>.py`` with the student's
        functions; returns its result as plain data (tensors as numpy arrays)."""
        msg: dict[str, Any] = {"op": "harness", "name": name,
                               "params": {k: protocol.encode(v) for k, v in params.items()}}
        if self._failed:
            msg["unavailable"] = {fn: _how_it_failed(exc) for fn, exc in self._failed.items()}
        if seed is not None:
            msg["seed"] = int(seed)
        reply = self._worker.request(msg, timeout or self._worker.limits.harness_timeout_seconds)
        return self._value_of(reply, name)

    def train(self, trainer: Trainer, student: "StudentProxy", *, timeout: float | None = None,
              **params) -> dict:
        """On the trusted proxy: run the ``trainer`` (a file of the assignment's folder, e.g.
        ``assignments/ppo/trainers/bandit.py``) in the trusted worker, each student call it
        makes going to ``student``'s worker and the raw reply back (one round trip each; the
        parent decodes nothing). Returns the trainer's result (``{"error": message}`` when the
        student's functions stopped training). A student function that is not defined, hangs
        or ends its process raises as in ``call``.

        When both are real workers, the trusted worker gets the student worker's pipe ends
        and sends the calls itself (``sandbox/direct.py``); this process drains the student's
        output meanwhile and handles what the trusted worker sends up: calls it may not make
        directly (``forward``) and replies that are not ordinary (``_direct``). Otherwise each
        call is relayed through this process."""
        if not self._worker.trusted:
            raise RuntimeError("training runs in the trusted worker only")
        limit = timeout or self._worker.limits.harness_timeout_seconds
        if not isinstance(trainer, Trainer):
            raise TypeError(f"not a Trainer: {trainer!r}")
        msg = {"op": "train", "trainer": trainer.request(),
               "params": {k: protocol.encode(v) for k, v in params.items()}}
        try:
            return self._train_once(msg, trainer.file, student, limit)
        except _TrustedLost:
            # The trusted worker died in a run with a direct line: the student's worker may
            # hold a call of that run, so it is restarted too, and the run starts again once
            # (as a relayed run always was), on both fresh processes.
            student._worker.reset()
            return self._train_once(msg, trainer.file, student, limit, retried=True)

    def _train_once(self, msg: dict, name: str, student: "StudentProxy", limit: float, *,
                    retried: bool = False):
        deadline = time.monotonic() + limit
        ends, spec = student._direct_spec(self._worker)
        wait = limit
        if ends:   # the trainer sends calls until the run's time is up, the last one may run on
            msg = dict(msg, direct=dict(spec, train_left=limit))
            wait = limit + student._worker.limits.call_timeout_seconds + 5

        def ask_trusted(request: dict, fds: tuple = ()) -> dict:
            if not ends:
                return self._worker.request(request, wait)
            try:
                return self._worker.request(request, wait, fds=fds, retry=False,
                                            drain=(student._worker,))
            except WorkerDied:
                if retried:
                    student._worker.reset()
                    raise
                raise _TrustedLost() from None
            except WorkerTimeout:
                student._worker.reset()     # it may hold a call of the run that was stopped
                raise

        reply = ask_trusted(msg, ends)
        while reply.get("ok") and "need" in reply:
            try:
                if time.monotonic() > deadline:
                    raise WorkerTimeout(f"the training run did not finish within {limit:g} s")
                need = reply["need"]
                answer = student._direct(need) if need.get("op") == "direct" \
                    else student.forward(need)
            except BaseException:
                try:    # stop the trainer; the student's failure is what the test reports
                    self._worker.request({"op": "train_reply", "abort": True}, limit)
                except WorkerError:
                    pass
                raise
            try:
                reply = ask_trusted({"op": "train_reply", "reply": answer})
            except ProtocolError:      # a reply that cannot be sent on (1e999 read as inf)
                reply = ask_trusted({"op": "train_reply", "reply": MALFORMED_REPLY})
        if ends and isinstance(reply.get("junk"), int):
            student._worker.note_junk(reply["junk"])
        return self._value_of(reply, name)

    def _direct_spec(self, trusted) -> tuple[tuple, dict]:
        """The pipe ends of this (student) proxy's worker for ``trusted``'s direct line, and
        the line's spec; ``((), {})`` when a direct line is not possible (a fake worker, a
        worker that is not running, a trusted worker whose channel cannot take descriptors)."""
        ends_of = getattr(self._worker, "direct_ends", None)
        if ends_of is None or not hasattr(trusted, "ensure_running"):
            return (), {}
        try:
            trusted.ensure_running()
            self._worker.ensure_running()
        except WorkerError:
            return (), {}          # the request, or the first call relayed, reports it
        chan = getattr(trusted, "_chan", None)
        if chan is None or not chan.passes_fds:
            return (), {}
        ends = ends_of()
        if ends is None:
            return (), {}
        deadline = self._worker._wall_deadline
        return ends, {"fns": sorted(n for n in self.defined if n not in self._failed),
                      "call_timeout": self._worker.limits.call_timeout_seconds,
                      "wall_left": None if deadline is None
                      else max(0.0, deadline - time.monotonic())}

    def _direct(self, need: dict) -> dict:
        """What the trusted worker sent up from its direct line (``sandbox/direct.py``): the
        lines it skipped, and a reply that reports an error (returned with this proxy's notes
        on limits, as ``forward`` returns one) or no reply (raised as ``forward`` raises)."""
        fn = need.get("fn")
        if not isinstance(fn, str) or fn not in self.defined:
            raise RuntimeError(f"a trainer sent up {need.get('outcome')!r} for {fn!r}")
        if isinstance(need.get("junk"), int):
            self._worker.note_junk(need["junk"])
        outcome = need.get("outcome")
        if outcome == "error" and type(need.get("reply")) is dict:
            reply = need["reply"]
            if isinstance(reply.get("error"), dict):
                self._worker._note_limit(reply["error"])
            return self._with_limit_note(reply)
        if outcome not in ("expired", "closed"):
            raise RuntimeError(f"a trainer sent up {outcome!r}")
        exc = self._worker.direct_outcome(outcome)
        if not self._worker.out_of_wall_time:
            self._failed[fn] = exc
        raise exc

    def _value_of(self, reply: dict, name: str):
        """The decoded ``value`` of a reply, or the student's error / a malformed-reply error."""
        if not reply.get("ok"):
            raise self._error(reply, name)
        try:
            return protocol.decode(reply.get("value"))[0]
        except ProtocolError as exc:
            raise self._malformed(name, exc) from None

    def forward(self, msg: dict) -> dict:
        """Send a trainer's ``call`` or ``map`` request to this worker; the raw reply (a claim,
        checked by the trainer). Raises NotDefined, WorkerDied, WorkerTimeout like ``call``."""
        fn = msg.get("fn")
        if msg.get("op") not in ("call", "map") or not isinstance(fn, str):
            raise RuntimeError(f"a trainer asked for {msg.get('op')!r}")
        if fn not in self.defined:
            raise NotDefined(fn, self.why_not_defined(fn))
        if fn in self._failed:
            earlier = self._failed[fn]
            raise type(earlier)(f"{earlier}; {fn} was not called again after that")
        try:
            reply = self._worker.request(msg, self._worker.limits.call_timeout_seconds)
        except WorkerError as exc:
            if not self._worker.out_of_wall_time:
                self._failed[fn] = exc
            raise
        return self._with_limit_note(reply)

    def _with_limit_note(self, reply: dict) -> dict:
        """A failed reply whose error comes from one of the worker's limits says which."""
        if not reply.get("ok"):
            limit = limit_of(reply.get("error") or {}) if isinstance(reply.get("error"),
                                                                    dict) else None
            if limit is not None and limit != "call_timeout":
                reply["error"]["message"] = (f"{reply['error'].get('message', '')} "
                                             f"({limit_note(limit, self._worker.limits)})")
        return reply

    # -- helpers ------------------------------------------------------------------------------
    def _input(self, x, leaves: dict, owners: dict):
        if isinstance(x, Tensor):
            if x.name is None:
                return protocol.tensor_arg(x.data, x.requires_grad)
            self._leaf(x, leaves, owners)
            return {"$leaf": x.name}
        if isinstance(x, LogSoftmaxGather):
            logits = x.logits if isinstance(x.logits, Tensor) else Tensor(x.logits)
            if logits.name is None:
                logits = Tensor(logits.data, logits.requires_grad, f"_logits{next(self._auto)}")
            self._leaf(logits, leaves, owners)
            index = np.asarray(x.index).tolist()
            return {"$expr": {"op": "log_softmax_gather", "logits": logits.name, "index": index}}
        if isinstance(x, Computed):
            self._leaf(x.of, leaves, owners)
            return {"$expr": {"op": "computed", "of": x.of.name}}
        return NotImplemented

    @staticmethod
    def _leaf(t: Tensor, leaves: dict, owners: dict) -> None:
        if t.name in owners and owners[t.name] is not t:
            raise ValueError(f"two different Tensors are named {t.name!r}")
        owners[t.name] = t
        leaves[t.name] = protocol.tensor_arg(t.data, t.requires_grad)

    def _error(self, reply: dict, fn: str) -> Exception:
        try:
            err = protocol.decode_error(reply.get("error"))
        except ProtocolError as exc:
            return self._malformed(fn, exc)
        if err["type"] == "NotDefined" and err["stage"] == "call":
            return NotDefined(fn, "it is not defined in your notebook")
        # The worker rejected the request: a kit bug, not the student's.
        if err["stage"] == "worker":
            return RuntimeError(f"the worker rejected the request: {err['type']}: "
                                f"{err['message']}\n{err['trace']}")
        if self._worker.trusted:
            return ReferenceFailed(err["type"], err["message"], trace=err["trace"],
                                   stage=err["stage"], function=fn)
        message = err["message"]
        limit = limit_of(err)
        if limit is not None and limit != "call_timeout":   # say which limit it ran into
            message = f"{message} ({limit_note(limit, self._worker.limits)})"
        return StudentError(err["type"], message, trace=err["trace"], stage=err["stage"],
                            function=fn)

    def _malformed(self, fn: str, exc: Exception) -> StudentError:
        self._worker.events.append({"code": "protocol_junk", "message":
                                    f"a malformed reply to a call of {fn}: {exc}"})
        return StudentError("MalformedReply", MALFORMED, function=fn)


def _how_it_failed(exc: WorkerError) -> str:
    if isinstance(exc, WorkerTimeout):
        return f"did not finish in time ({exc})"
    return f"stopped the process running it ({exc})"


def _describe_cell_error(err: dict) -> str:
    cell, kind = err.get("cell", "?"), err.get("type", "an error")
    line = f" at line {err['line']}" if err.get("line") else ""
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    return f"the cell {cell} has {article} {kind}{line}: {err.get('message', '')}".rstrip(": ")
