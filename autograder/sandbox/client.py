"""The parent's handles on worker processes: ``Worker`` (spawn, load, request, restart, kill)
and ``ZygoteHandle`` (one process that imported torch, forking a worker per submission). Imports
no torch.

Invariants:

- A worker talks on three pipes: requests (parent -> worker fd 3), replies (worker fd 4 ->
  parent) and output (worker fd 1 and 2 -> parent), held by a ``channel.Channel``. The output
  pipe is drained into a capped tail (``Limits.max_output_kb``) whenever the parent waits, so
  student prints never block the protocol or corrupt it; ``Worker.captured_output()`` returns
  the tail.
- Every wait has a deadline. A request past its timeout, or past the worker's wall-clock budget
  (``Limits.wall_seconds`` from the first spawn, for sandboxed workers), kills the whole process
  tree and raises ``WorkerTimeout``; a worker that exits or closes its reply pipe raises
  ``WorkerDied`` (its reason from ``failure_text.describe_end``). Both are recorded in
  ``Worker.events``; the next request restarts the worker and reloads the same cells.
- Replies are untrusted: a line that is not JSON, or does not carry the pending request's id, is
  skipped and counted (flag ``protocol_junk``).
- Loading recovers: a cell that hangs past its limit or ends the worker is left out and the
  rest loaded again on a fresh process (at most ``MAX_CELLS_LEFT_OUT`` cells).
- ``ZygoteHandle`` keeps one worker that has imported torch and forks a fresh child per
  submission from it (one live child at a time), so a submission does not pay for
  ``import torch``. (Its counterpart inside the sandbox is ``worker.Zygote``.)
"""
from __future__ import annotations

import itertools
import os
import secrets
import shutil
import signal
import socket
import sys
import time
import weakref

from autograder.sandbox import backends, cleanup, protocol
from autograder.sandbox.channel import (Channel, ChannelClosed, ChannelExpired, OutputTail,
                                        close_fds)
from autograder.sandbox.devices import worker_device
from autograder.sandbox.failure_text import describe_end, limit_note, limit_of
from autograder.sandbox.launch import DirectProcess, popen_worker, worker_args
from autograder.sandbox.limits import Limits
from autograder.sandbox.process_tree import host_pid, proc_state

START_TIMEOUT = 120.0     # seconds for a new worker to import torch and say hello
LOAD_GRACE = 3.0          # seconds past a cell's own time limit before the parent stops it
MAX_CELLS_LEFT_OUT = 5    # cells that hang or end the worker at load, left out one by one
CONTROL_TIMEOUT = 15.0    # seconds for a zygote to answer fork/kill/status
CONTROL_POLL = 0.2        # seconds between checks that the zygote is neither stopped nor gone


class WorkerError(Exception):
    """The worker process failed (not the student's function): it died or timed out."""


class WorkerDied(WorkerError):
    """The worker exited, was killed, or closed its reply pipe. ``str()`` says why."""

    def __init__(self, reason: str, *, signal_name: str | None = None, code: int | None = None,
                 zygote_lost: bool = False):
        super().__init__(reason)
        self.signal_name, self.code = signal_name, code
        self.zygote_lost = zygote_lost     # it died with the zygote it was forked from


class WorkerTimeout(WorkerError):
    """No reply within the request's timeout (or the worker's wall-clock budget ran out)."""


def _defined_names(source: str) -> list[str]:
    """The top-level names a cell defines (as the worker reports them in a cell error)."""
    import re

    return re.findall(r"^\s*(?:async\s+def|def|class)\s+([A-Za-z_]\w*)", source, re.M)


class _Reload(Exception):
    """The worker died with its zygote while loading: load again from the start."""


class _CellStopped(Exception):
    """A cell hung past its limit or ended the worker while the notebook was loaded."""

    def __init__(self, error: dict):
        super().__init__(error["message"])
        self.error = error


# --- the worker handle -------------------------------------------------------------------------

class Worker:
    """The parent's handle on one worker process (see the module docstring).

    ``backend`` is "bwrap" | "fallback" | "unsafe" (or "auto", resolved here) or, with
    ``trusted=True``, "trusted": the reference runs without confinement (rlimits only) and
    without a wall-clock budget, in its own process; being long-lived, a request it dies in is
    retried once on a fresh process. ``device`` is "cpu" | "cuda" | "auto"; the load reply says
    which device the worker actually uses. ``limits``: the kernel limits of a process it starts
    (a forked worker keeps its zygote's) and the limits the parent enforces (timeouts,
    ``wall_seconds``, ``max_output_kb``).
    """

    _ids = itertools.count(1)

    def __init__(self, limits: Limits, *, backend: str, device: str, trusted: bool = False,
                 python: str | None = None, zygote: "ZygoteHandle | None" = None):
        self.limits: Limits = limits
        self.backend = "trusted" if trusted else backends.resolve_backend(backend)
        self.device, self.trusted = device, trusted
        self.python = python or sys.executable
        self.events: list[dict] = []
        self.load_reply: dict | None = None
        self.spawn_seconds: float | None = None
        self._zygote = zygote
        self._cells: list[dict] | None = None
        self._seed = 0
        self._proc: DirectProcess | _Forked | None = None
        self._ready = False                 # the running process said hello
        self._spawned_at = 0.0
        self._chan: Channel | None = None
        self._tail = OutputTail(self.limits.max_output_kb * 1024)
        self._wall_deadline: float | None = None
        self._load_failure: WorkerError | None = None
        self._left_out: list[dict] = []     # cell errors of cells left out at load
        self._closed = False
        self._finalizer: weakref.finalize | None = None

    # -- life cycle ---------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._proc is not None

    @property
    def out_of_wall_time(self) -> bool:
        """True once the wall-clock budget (``Limits.wall_seconds``) is used up."""
        return self._wall_deadline is not None and time.monotonic() >= self._wall_deadline

    @property
    def pid(self) -> int | None:
        """The worker's pid (for a forked worker: as its zygote sees it); None when stopped."""
        return self._proc.pid if self._proc is not None else None

    def spawn(self) -> None:
        """Spawn the worker process without waiting for it to be ready (``start`` waits), so
        that two workers can import torch at the same time. No-op when it is running."""
        if self._closed:
            raise WorkerDied("this worker was closed")
        if self._proc is not None:
            return
        self._spawned_at = time.monotonic()
        if self._zygote is not None:
            self._proc, self._chan = self._zygote._fork_worker(self._tail)
        else:
            self._proc, self._chan = self._spawn_direct()
        self._ready = False
        if self._wall_deadline is None and not self.trusted:  # from the first spawn on
            self._wall_deadline = time.monotonic() + self.limits.wall_seconds
        self._finalizer = weakref.finalize(self, _finalize, self._proc, self._chan)

    def start(self) -> None:
        """Spawn the worker (unless ``spawn`` did) and wait for its hello (no-op when it is
        running and ready)."""
        self.spawn()
        if self._ready:
            return
        try:
            self._exchange(None, "hello", START_TIMEOUT)
        except WorkerError as exc:
            raise WorkerDied(f"the worker did not start: {exc}\n{self.captured_output()[-2000:]}",
                             signal_name=getattr(exc, "signal_name", None)) from None
        self._ready = True
        self.spawn_seconds = time.monotonic() - self._spawned_at

    def _spawn_direct(self):
        if self.trusted:   # a stream socket: it can carry descriptors (``direct_ends``) too
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            req_r, req_w = b.detach(), a.detach()
        else:
            req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        out_r, out_w = os.pipe()
        scratch = cleanup.make_scratch("worker", sweep_uids=self.backend == "fallback")
        try:
            spec = backends.launch_spec(self.backend, python=self.python, worker_args=worker_args(),
                                        limits=self.limits, device=worker_device(self.device),
                                        fds=(req_r, rep_w), scratch_dir=scratch)
            popen = popen_worker(spec, out_w)
        except BaseException:
            close_fds(req_r, req_w, rep_r, rep_w, out_r, out_w)
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        finally:
            close_fds(req_r, rep_w, out_w)
        return (DirectProcess(popen, scratch, self.backend),
                Channel(rep_r, out_r, self._tail, req_w=req_w))

    def restart(self) -> None:
        """A fresh worker process; the cells given to ``load`` are loaded again."""
        self._stop()
        self.events.append({"code": "restart", "message": "the worker was restarted"})
        self.start()
        if self._cells is not None:
            self._load(self._cells)

    def close(self) -> None:
        """Kill the whole process tree and free everything. The handle cannot be used again."""
        self._stop()
        self._closed = True

    def _stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._proc is not None:
            _finalize(self._proc, self._chan)
        self._proc, self._chan, self._ready = None, None, False

    def __enter__(self) -> "Worker":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- requests -----------------------------------------------------------------------------
    def load(self, cells: list[dict], *, seed: int = 0) -> dict:
        """Execute the cells (``{"id", "source"}``) in a fresh namespace; returns the load reply.

        Never raises for student code. A cell that runs past its time limit although the
        worker's alarm fired (it caught the alarm, or loops inside C code), or that ends the
        worker process, is left out: the worker is restarted and the other cells are loaded
        again without it (at most ``MAX_CELLS_LEFT_OUT`` cells); the reply lists it in
        ``cell_errors``. If loading still fails, the reply says so (``"load_failed": true``)
        and later requests raise at once.
        """
        self._cells = [{"id": str(c["id"]), "source": str(c["source"])} for c in cells]
        self._left_out = []
        self._seed = seed
        self._load_failure = None
        self.start()
        return self._load(self._cells)

    def _load(self, cells: list[dict]) -> dict:
        while True:
            try:
                reply = self._load_once(cells)
                if not reply.get("ok"):
                    raise WorkerDied(f"the worker could not load the notebook: "
                                     f"{protocol.decode_error(reply.get('error')).get('message')}")
                break
            except _Reload:          # the zygote died: load again, on a worker of its own
                try:
                    self._stop()
                    self.start()
                    continue
                except WorkerError as exc:
                    failure = exc
            except _CellStopped as stop:
                self._left_out.append(stop.error)
                cells = self._cells = [c for c in cells if c["id"] != stop.error["cell"]]
                if len(self._left_out) <= MAX_CELLS_LEFT_OUT:
                    try:
                        self._stop()
                        self.start()
                        continue
                    except WorkerError as exc:
                        failure = exc
                else:
                    failure = WorkerDied(f"{len(self._left_out)} cells hung or ended the process "
                                         "while the notebook was loaded")
            except WorkerError as exc:
                failure = exc
            self._load_failure = failure
            reply = {"ok": True, "defined": {}, "device": self.device, "load_failed": True,
                     "cell_errors": [{"cell": "", "type": type(failure).__name__, "line": None,
                                      "message": str(failure), "names": []}]}
            break
        reply["cell_errors"] = list(self._left_out) + list(reply.get("cell_errors") or [])
        for err in reply["cell_errors"]:
            if isinstance(err, dict):
                self._note_limit(err)
        self.load_reply = reply
        return reply

    def _load_once(self, cells: list[dict]) -> dict:
        """One load request. The worker reports each cell before running it, so a cell that
        outlives its limit (plus ``LOAD_GRACE``) or ends the worker is known: _CellStopped."""
        cell_timeout = self.limits.call_timeout_seconds
        rid = f"{next(self._ids)}-{secrets.token_hex(4)}"
        line = protocol.dumps({"op": "load", "cells": cells, "device": self.device,
                               "seed": self._seed, "cell_timeout": cell_timeout,
                               "progress": True, "id": rid})
        current = None
        try:
            reply = self._exchange(line, rid, cell_timeout + LOAD_GRACE)
            while "progress" in reply and "ok" not in reply:
                current = str(reply["progress"])
                reply = self._exchange(None, rid, cell_timeout + LOAD_GRACE, continued=True)
        except WorkerError as exc:
            if getattr(exc, "zygote_lost", False):
                raise _Reload() from None
            known = current is not None and any(c["id"] == current for c in cells)
            if not known or (self._wall_deadline is not None
                             and time.monotonic() >= self._wall_deadline):
                raise
            source = next(c["source"] for c in cells if c["id"] == current)
            if isinstance(exc, WorkerTimeout):
                kind, message = "CellTimeout", f"the cell did not finish within {cell_timeout:g} s"
            else:
                kind, message = "WorkerDied", f"the process running your code stopped ({exc})"
            raise _CellStopped({"cell": current, "type": kind, "message": message,
                                "line": None, "names": _defined_names(source)}) from None
        return reply

    def _note_limit(self, error: dict) -> None:
        """A limit the student's code ran into and reported as an exception: a flag."""
        code = limit_of(error)
        if code == "call_timeout":
            self.events.append({"code": code, "message":
                                f"a cell ran past {self.limits.call_timeout_seconds} s while the "
                                "notebook was loaded and was stopped"})
        elif code is not None:
            self.events.append({"code": code, "message": limit_note(code, self.limits)})

    def request(self, msg: dict, timeout: float, *, fds: tuple = (), drain: tuple = (),
                retry: bool = True) -> dict:
        """Send one request (with the descriptors ``fds``, on a worker whose channel passes
        them) and return its reply (``ok`` true or false), draining the output of the channels
        ``drain`` while it waits. A dead worker is restarted first. Raises WorkerDied /
        WorkerTimeout. ``retry=False``: a trusted worker that dies in this request is not
        asked again (the caller starts over)."""
        self.ensure_running()
        try:
            return self._request(msg, timeout, fds, drain)
        except WorkerDied as exc:
            if exc.zygote_lost and not self._closed:   # not this request's fault: once more,
                self.restart()                         # on a worker of its own
                if self._load_failure is not None:
                    raise type(self._load_failure)(str(self._load_failure)) from None
                return self._request(msg, timeout, (), drain)
            if not self.trusted or self._closed or not retry:
                raise
        # The trusted reference is long-lived (rlimits still apply): a death is retried once.
        self.restart()
        return self._request(msg, timeout, (), drain)

    def reset(self) -> None:
        """Stop the process, not for anything it did (no event): the next request starts a
        fresh one and loads the same cells again."""
        self._stop()

    def ensure_running(self) -> None:
        """Start (or restart and reload) the worker if it is not running and ready. Raises
        what a request would raise: the worker is closed, its notebook failed to load, or its
        wall-clock budget is used up."""
        if self._closed:
            raise WorkerDied("this worker was closed")
        if self._load_failure is not None:
            raise type(self._load_failure)(str(self._load_failure))
        if self._wall_deadline is not None and time.monotonic() >= self._wall_deadline:
            self._stop()
            raise WorkerTimeout(f"the time limit for all of your code together "
                                f"({self.limits.wall_seconds} s) was used up")
        if self._proc is not None and not self._ready:   # spawned, not yet waited for
            self.start()
        if self._proc is None:
            if self.spawn_seconds is None:
                self.start()
            else:
                self.restart()
            if self._load_failure is not None:
                raise type(self._load_failure)(str(self._load_failure))

    def _request(self, msg: dict, timeout: float, fds: tuple = (), drain: tuple = ()) -> dict:
        rid = f"{next(self._ids)}-{secrets.token_hex(4)}"
        line = protocol.dumps({**msg, "id": rid})
        reply = self._exchange(line, rid, timeout, fds=fds, drain=drain)
        if not reply.get("ok") and isinstance(reply.get("error"), dict):
            self._note_limit(reply["error"])
        return reply

    def _exchange(self, line: bytes | None, rid: str, timeout: float, *,
                  continued: bool = False, fds: tuple = (), drain: tuple = ()) -> dict:
        """``line`` (None: wait on, for more of the same request, when ``continued``)."""
        proc, chan = self._proc, self._chan
        assert proc is not None and chan is not None    # callers start the worker first
        deadline = time.monotonic() + timeout
        wall = self._wall_deadline is not None and (line is not None or continued) \
            and self._wall_deadline < deadline
        if wall:
            assert self._wall_deadline is not None      # wall is False without one
            deadline = self._wall_deadline
        try:
            return chan.exchange(line, rid, deadline, fds=fds,
                                 drain=tuple(getattr(w, "_chan", None) for w in drain))
        except ChannelExpired:
            raise self._expired(wall, timeout) from None
        except ChannelClosed:
            raise self._ended() from None
        finally:
            self._report_junk(chan)

    def _expired(self, wall: bool, timeout: float) -> WorkerTimeout:
        """A request ran past ``timeout`` seconds, or past the wall-clock budget (``wall``):
        the process tree is killed, the event recorded; the error to raise."""
        self._stop()
        if wall:
            self.events.append({"code": "limit_wall", "message":
                                f"the worker's wall-clock limit ({self.limits.wall_seconds} s)"
                                " was used up"})
            return WorkerTimeout(f"the time limit for all of your code together "
                                 f"({self.limits.wall_seconds} s) was used up")
        self.events.append({"code": "call_timeout", "message":
                            f"a request took longer than {timeout:g} s and was stopped"})
        return WorkerTimeout(f"no answer within {timeout:g} s")

    def _ended(self) -> WorkerDied:
        """The reply pipe closed: how the process ended, recorded; the error to raise."""
        proc = self._proc
        assert proc is not None
        status = proc.status(wait=2.0)
        if status is None:
            proc.kill()
        flag, reason, sig, code = describe_end(status, self.limits)
        self.events.append({"code": flag, "message": f"the worker stopped: {reason}"})
        lost = isinstance(proc, _Forked) and proc.zygote.generation != proc.generation
        if lost:
            # The zygote died while this child lived (a child can signal it: same uid).
            # From now on this worker is started on its own, where that is not possible.
            self._zygote = None
            self.events.append({"code": "zygote_killed", "message": "the process the "
                                "worker was forked from died while the student's code ran "
                                "(it was killed from inside); the worker was restarted on "
                                "its own"})
        self._stop()
        return WorkerDied(reason, signal_name=sig, code=code, zygote_lost=lost)

    def note_junk(self, lines: int) -> None:
        """Count ``lines`` more non-reply lines on the reply pipe (read by the trusted worker
        when it talked to this one directly) and record what is new as ``protocol_junk``."""
        if self._chan is not None:
            self._chan.junk += max(0, int(lines))
            self._report_junk(self._chan)

    def _report_junk(self, chan: Channel) -> None:
        if chan.junk > chan.junk_reported:
            self.events.append({"code": "protocol_junk", "message":
                                f"{chan.junk - chan.junk_reported} line(s) on the reply "
                                "channel were not replies (written by the student's code)"})
            chan.junk_reported = chan.junk

    # -- the trusted worker's direct line to this one --------------------------------------------
    def direct_ends(self) -> tuple[int, int] | None:
        """(request write end, reply read end) of this running, ready student worker, for the
        trusted worker to send this worker's calls itself (``proxy.StudentProxy.train``); None
        when it is not running or has no pipes. The parent keeps draining its output and
        keeps every other duty: the trusted worker reports timeouts and ends back to
        ``direct_outcome``."""
        chan = self._chan
        if self.trusted or self._proc is None or not self._ready or chan is None \
                or chan.req_w is None or chan.req_w < 0 or chan.sock is not None:
            return None
        return chan.req_w, chan.rep_r

    def direct_outcome(self, outcome: str) -> WorkerError:
        """What the trusted worker saw when it talked to this worker directly: ``expired``
        (no reply within the call timeout, or the wall-clock budget) or ``closed`` (the reply
        pipe closed). Recorded as for one of this worker's own requests; the error to raise."""
        if self._proc is None:
            return WorkerDied("the worker was stopped")
        if outcome == "expired":
            return self._expired(self.out_of_wall_time, self.limits.call_timeout_seconds)
        return self._ended()

    # -- reporting ----------------------------------------------------------------------------
    def captured_output(self) -> str:
        """The last ``max_output_kb`` KB of everything the worker wrote to stdout/stderr."""
        if self._chan is not None:
            self._chan.drain()
        return self._tail.text()

    def flags(self) -> list[dict]:
        """The events that are integrity or limit findings, one per code: ``{"code", "message"}``
        (``limit_output`` when the captured output went over ``max_output_kb``)."""
        if self._chan is not None:
            self._chan.drain()
        if self._zygote is not None and isinstance(self._proc, _Forked):
            self._zygote.audit(self)        # a harmed zygote is restarted now, on our time
        out: dict[str, dict] = {}
        for e in self.events:
            if e["code"] in ("restart",):
                continue
            out.setdefault(e["code"], {"code": e["code"], "message": e["message"]})
        if self._tail.dropped:
            out.setdefault("limit_output", {"code": "limit_output", "message":
                           f"the code wrote more than {self.limits.max_output_kb} KB to "
                           f"stdout/stderr; only the last {self.limits.max_output_kb} KB were "
                           "kept"})
        return list(out.values())


def _finalize(proc, chan: Channel | None) -> None:
    try:
        proc.kill()
    finally:
        if chan is not None:
            chan.close()
        proc.cleanup()


# --- the zygote --------------------------------------------------------------------------------

class _Forked:
    """A worker forked by a zygote: the zygote is its parent and kills/reaps it for us."""

    def __init__(self, zygote: "ZygoteHandle", pid: int):
        self.zygote, self.pid = zygote, pid
        self.generation = zygote.generation

    def kill(self) -> None:
        self.zygote._kill_child(self.pid)

    def status(self, wait: float):
        return self.zygote._child_status(self.pid, wait)

    def cleanup(self) -> None:
        pass


class ZygoteHandle:
    """One process that has imported torch and forks a fresh worker per submission.

    ``spawn_worker()`` returns a started ``Worker`` whose process is a child of the zygote. The
    zygote serves one live child at a time: spawning the next kills the previous child with all
    its leftovers and wipes its scratch directory, and closes the previous handle.

    A child shares the zygote's uid, so it can SIGSTOP or SIGKILL it (the zygote ignores every
    other signal and reads nothing a child wrote). Invariant: such harm is found and repaired on
    the time of the submission whose child was live, never on the next one's. Every control
    request checks every ``CONTROL_POLL`` s that the zygote is neither stopped nor gone (no
    waiting out ``CONTROL_TIMEOUT``); ``audit(worker)``, called when the worker's flags are read
    (the end of its submission), checks it once more. A zygote found harmed is replaced at once
    (the new one is started before the call returns) and the live worker gets the flag
    ``zygote_restart``.
    """

    _ids = itertools.count(1)

    def __init__(self, limits: Limits, *, backend: str, device: str, python: str | None = None):
        self.limits = limits
        self.backend, self.device = backends.resolve_backend(backend), device
        self.python = python or sys.executable
        self.events: list[dict] = []
        self.pid: int | None = None
        self.host_pid: int | None = None     # the zygote's pid as the grader sees it
        self.spawn_seconds: float | None = None
        self._proc: DirectProcess | None = None
        self._chan: Channel | None = None
        self._tail = OutputTail(self.limits.max_output_kb * 1024)
        self._current: Worker | None = None
        self._child_pid: int | None = None
        self._finalizer: weakref.finalize | None = None
        self._closed = False
        self.generation = 0          # bumped whenever the zygote process is replaced

    def start(self) -> None:
        if self._proc is not None:
            return
        started = time.monotonic()
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        rep_r, rep_w = os.pipe()
        out_r, out_w = os.pipe()
        scratch = cleanup.make_scratch("zygote", sweep_uids=self.backend == "fallback")
        try:
            spec = backends.launch_spec(
                self.backend, python=self.python,
                worker_args=worker_args(zygote=True, backend=self.backend), limits=self.limits,
                device=worker_device(self.device), fds=(child_sock.fileno(), rep_w),
                scratch_dir=scratch, allow_fork=True)
            popen = popen_worker(spec, out_w)
        except BaseException:
            parent_sock.close()
            close_fds(rep_r, out_r)
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        finally:
            child_sock.close()
            close_fds(rep_w, out_w)
        self._proc = DirectProcess(popen, scratch, self.backend)
        self._chan = Channel(rep_r, out_r, self._tail, sock=parent_sock)
        self._finalizer = weakref.finalize(self, _finalize, self._proc, self._chan)
        try:
            hello = self._chan.exchange(None, "hello", time.monotonic() + START_TIMEOUT)
        except (ChannelClosed, ChannelExpired):
            self.close()
            raise WorkerDied(f"the zygote did not start\n{self._tail.text()[-2000:]}") from None
        self.pid = hello.get("pid")
        self.host_pid = host_pid(popen.pid, self.pid)
        self.spawn_seconds = time.monotonic() - started

    def close(self) -> None:
        """Kill the zygote and every child it forked."""
        self._closed = True
        current, self._current = self._current, None
        self._hard_restart()
        if current is not None:
            current.close()

    def __enter__(self) -> "ZygoteHandle":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def spawn_worker(self, limits: Limits | None = None) -> Worker:
        """A started Worker forked from this zygote (the previous one, if any, is closed).

        ``limits`` may change the limits the parent enforces (timeouts, ``wall_seconds``,
        ``max_output_kb``); the kernel limits stay those the zygote was started with.
        """
        if self._current is not None:
            self._current.close()
        self._closed = False
        worker = Worker(limits or self.limits, backend=self.backend, device=self.device,
                        zygote=self)
        self._current = worker
        worker.start()
        return worker

    def ping(self) -> dict:
        return self._control({"op": "ping"})

    def harm(self) -> str | None:
        """Why the zygote process cannot serve (stopped by a signal, or gone); None if it can."""
        if self._proc is None or self.host_pid is None:
            return None
        state = proc_state(self.host_pid)
        if state is None or state in "ZX":
            return "it was killed"
        if state in "Tt":
            return "it was stopped (SIGSTOP)"
        return None

    def audit(self, worker: "Worker") -> None:
        """Check the zygote while ``worker`` is its live child (end of the submission): a
        zygote that was stopped, killed or does not answer is replaced now, and ``worker`` is
        flagged. Never raises."""
        if self._proc is None or worker is not self._current:
            return
        try:
            self._control({"op": "ping"}, charge=worker)
        except WorkerDied:
            pass

    # -- used by Worker -----------------------------------------------------------------------
    def _control(self, msg: dict, fds: tuple = (), retry: bool = False,
                 charge: "Worker | None" = None) -> dict:
        """One control request; a zygote that is stopped, gone or does not answer is replaced
        (the new one started before this returns; with ``retry`` the request is sent to it once
        more). ``charge``: the worker whose child was live, flagged ``zygote_restart`` then."""
        for attempt in (0, 1):
            self.start()
            rid = f"z{next(self._ids)}"
            line: bytes | None = protocol.dumps({**msg, "id": rid})
            deadline = time.monotonic() + CONTROL_TIMEOUT
            why = None
            try:
                while True:
                    try:
                        assert self._chan is not None   # start() made one
                        reply = self._chan.exchange(line, rid, min(
                            deadline, time.monotonic() + CONTROL_POLL), fds=fds)
                        break
                    except ChannelExpired:
                        line, fds = None, ()
                        why = self.harm() or (
                            "it did not answer" if time.monotonic() >= deadline else None)
                        if why is not None:
                            raise
            except (ChannelClosed, ChannelExpired):
                why = why or self.harm() or "it closed its control channel"
                self._replace(why, charge)
                if retry and attempt == 0:
                    continue
                raise WorkerDied(f"the zygote stopped answering: {why}") from None
            if not reply.get("ok"):
                raise WorkerDied(f"the zygote refused {msg.get('op')}: "
                                 f"{protocol.decode_error(reply.get('error'))['message']}")
            return reply
        raise AssertionError("unreachable")

    def _replace(self, why: str, charge: "Worker | None") -> None:
        """Kill a harmed zygote and start the next one now (on the current submission's time)."""
        event = {"code": "zygote_restart", "message": f"the process workers are forked from "
                 f"had to be restarted ({why}) while this submission's code ran"}
        self.events.append(event)
        if charge is not None:
            charge.events.append(event)
        self._hard_restart()
        if not self._closed:
            try:
                self.start()
            except Exception:      # noqa: BLE001  the next request tries again, and says why
                pass

    def _hard_restart(self) -> None:
        """Kill the zygote's whole tree (its children die with it); ``start`` makes a new one."""
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        proc, chan = self._proc, self._chan
        self._proc = self._chan = None
        self._child_pid = None
        self.host_pid = None
        self.generation += 1
        if proc is not None:
            _finalize(proc, chan)
        if self._current is not None:  # its process died with the zygote
            self._current._stop()

    def _fork_worker(self, tail: OutputTail) -> tuple[_Forked, Channel]:
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            reply = self._control({"op": "fork"}, fds=(req_r, rep_w, out_w), retry=True)
        except BaseException:
            close_fds(req_w, rep_r, out_r)
            raise
        finally:
            close_fds(req_r, rep_w, out_w)
        self._child_pid = int(reply["pid"])
        return _Forked(self, self._child_pid), Channel(rep_r, out_r, tail, req_w=req_w)

    def _kill_child(self, pid: int) -> None:
        """Kill the live child (and its leftovers) if ``pid`` is still it."""
        if self._proc is None or pid != self._child_pid:
            return
        try:
            self._control({"op": "kill"}, charge=self._current)
        except WorkerDied:
            pass

    def _child_status(self, pid: int, wait: float):
        if self._proc is None or pid != self._child_pid:
            return None, int(signal.SIGKILL)
        try:
            reply = self._control({"op": "status", "pid": pid, "wait": wait},
                                  charge=self._current)
        except WorkerDied:
            return None
        if reply.get("running"):
            return None
        return reply.get("code"), reply.get("signal"), reply.get("cpu_seconds")
