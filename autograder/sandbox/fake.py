"""An in-process worker, ``FakeWorker``, for fast tests of the grader (the kit's counterpart of a
fake sandbox): grading a suite, hints and the proxy without spawning a process.

It is a ``Worker``-compatible handle (what ``StudentProxy`` uses: ``request``, ``load``,
``load_reply``, ``limits``, ``trusted``, ``events``, ``out_of_wall_time``, ``flags``) whose
"process" is the real worker's own ``Server`` (``autograder/sandbox/worker.py``) run in this
process. Every request and reply goes through ``protocol.dumps``/``protocol.loads``, as on the
real pipe, and values are encoded by the worker's own ``encode_value``: what the suites receive
is byte for byte what a real worker would send for the same return value. What it does not have
is the sandbox, the limits and a separate process, so use it only for trusted test code.

``define(name=callable, ...)`` puts Python functions straight into the worker's namespace: a
test chooses what the "student's" functions return without writing notebook cells.
``reference_worker(assignment)`` is the answer key and its mutants loaded as the grader's
reference worker loads them, and ``FakePool`` a ``WorkerPool`` stand-in that hands both to
``grade_submission``: a whole grading in this process (``tests/sandbox/test_fake_worker.py``).

``autograder.harness.local.local_ask`` serves the same request handler in-process for the
trainer relay (calibration); this is the handle the grader's ``StudentProxy`` and ``Session``
use.
"""
from __future__ import annotations

import itertools
import json

import numpy as np

from autograder.assignments import Assignment
from autograder.sandbox import protocol
from autograder.sandbox import worker as worker_module
from autograder.sandbox.limits import Limits
from autograder.sandbox.protocol import ProtocolError

LIMITS = Limits()


def install_worker_runtime() -> None:
    """The globals ``worker.main()`` sets before serving: torch, numpy and ``Pristine``."""
    if worker_module.T is None:
        import torch

        worker_module.torch, worker_module.np = torch, np
        worker_module.T = worker_module.Pristine(torch, np)


class FakeWorker:
    """The worker's ``Server`` behind the wire format, in this process (see the module doc)."""

    _ids = itertools.count(1)

    def __init__(self, *, trusted: bool = False, device: str = "cpu", limits: Limits = LIMITS):
        """``trusted``: answers as the reference worker (its failures are the kit's)."""
        install_worker_runtime()
        self.server = worker_module.Server.__new__(worker_module.Server)  # no request fd
        self.server.ns = worker_module.Server.fresh_namespace()
        self.server.device = device
        self.trusted, self.device, self.limits = trusted, device, limits
        self.backend = "trusted" if trusted else "in-process"
        self.events: list[dict] = []
        self.load_reply: dict | None = None
        self.out_of_wall_time = False
        self.requests: list[dict] = []      # every request as the worker decoded it

    # -- what a Worker offers -------------------------------------------------------------
    def start(self) -> None:
        pass

    def load(self, cells: list[dict], *, seed: int = 0) -> dict:
        self.load_reply = self.request({"op": "load", "cells": list(cells),
                                        "device": self.device, "seed": seed}, 60.0)
        return self.load_reply

    def request(self, msg: dict, timeout: float) -> dict:
        rid = f"{next(self._ids)}-fake"
        decoded = protocol.loads(protocol.dumps({**msg, "id": rid}))
        self.requests.append(decoded)
        reply = {"id": rid, **self.server.handle(decoded)}
        try:
            line = protocol.dumps(reply)
        except ProtocolError as exc:        # as Server.send does for a reply it cannot send
            line = protocol.dumps({"id": rid, "ok": False, "error": {
                "type": "ReplyTooLarge", "message": str(exc), "trace": "", "stage": "reply",
                "in_student_code": False}})
        return protocol.loads(line)

    def restart(self) -> None:
        pass

    def close(self) -> None:
        pass

    def flags(self) -> list[dict]:
        return []

    def captured_output(self) -> str:
        return ""

    # -- for tests --------------------------------------------------------------------------
    def define(self, **functions) -> None:
        """Put ``functions`` into the worker's namespace, as if a loaded cell defined them."""
        self.server.ns.update(functions)
        reply = dict(self.load_reply or {"ok": True, "cell_errors": [], "device": self.device,
                                          "device_note": ""})
        reply["defined"] = {**(reply.get("defined") or {}),
                            **{name: "(...)" for name in functions}}
        self.load_reply = json.loads(json.dumps(reply))


def reference_worker(assignment: Assignment) -> FakeWorker:
    """The answer key and its mutants loaded as the grader's reference worker loads them."""
    from autograder.grade.submission import check_reference, reference_cells
    from autograder.hints import mutant_cells

    w = FakeWorker(trusted=True)
    check_reference(w.load(reference_cells(assignment) + mutant_cells(assignment)))
    return w


class FakePool:
    """A ``WorkerPool`` stand-in (``grade_submission(..., pool=FakePool())``): the reference is
    ``reference_worker`` (loaded once per assignment), each student worker a fresh
    ``FakeWorker``. The whole grading path (reading the notebook, the session, the suite, the
    hints, the scores) then runs in this process, with no sandbox and no limits: trusted test
    code only."""

    def __init__(self, settings=None):
        self.settings = settings
        self._references: dict[str, FakeWorker] = {}
        self.students: list[FakeWorker] = []        # every student worker handed out

    def reference(self, assignment: Assignment, *, device: str = "cpu") -> FakeWorker:
        key = f"{assignment.name}:{assignment.source_path}:{device}"
        if key not in self._references:
            self._references[key] = reference_worker(assignment)
        return self._references[key]

    def student_worker(self, *, backend: str | None = None, device: str = "cpu",
                       settings=None) -> FakeWorker:
        limits = (settings or self.settings).limits if (settings or self.settings) else LIMITS
        worker = FakeWorker(device=device, limits=limits)
        self.students.append(worker)
        return worker

    def close(self) -> None:
        self._references.clear()

    def __enter__(self) -> "FakePool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
