"""The relay served in one process, for calibration and the kit's own tests.

``local_ask(ns)`` answers a trainer's requests with the worker's own request handler on the
namespace ``ns`` (the answer key, or a variant of it: instructor code only, never a student's, so
no sandbox), every message going through the wire format both ways. ``local_student`` wraps it
in ``relay.Student``, checked against a reference as a student's replies are. Kept apart from
``relay`` because it imports the worker, which imports ``relay``.
"""
from __future__ import annotations

import numpy as np

from autograder.harness.relay import Student
from autograder.sandbox import protocol


def local_ask(ns: dict, device: str = "cpu"):
    """An ``ask`` served in this process by the worker's own request handler on ``ns`` (the
    answer key, or a variant of it: instructor code only, no sandbox), with every message going
    through the wire format both ways. The caller's random state and grad mode are restored
    after each request, so a run gives what it gives with a separate student process."""
    import torch

    from autograder.sandbox import worker

    if worker.T is None:
        worker.np, worker.torch = np, torch
        worker.T = worker.Pristine(torch, np)
    server = worker.Server.__new__(worker.Server)
    server.ns, server.device = ns, device

    def ask(msg: dict) -> dict:
        rng, grad = torch.random.get_rng_state(), torch.is_grad_enabled()
        try:
            reply = server.handle(protocol.loads(protocol.dumps(msg)))
        finally:
            torch.random.set_rng_state(rng)
            torch.set_grad_enabled(grad)
        return protocol.loads(protocol.dumps(reply))
    return ask


def local_student(ns: dict, reference: dict | None, check: dict | None = None,
                  device: str = "cpu") -> Student:
    """A ``Student`` whose functions are ``ns``'s, served in this process (``local_ask``),
    checked against ``reference`` (None: not checked) as ``check`` says (the ``check`` parameter
    the suites send: seed, mutants, expected calls)."""
    check = check or {}
    return Student(local_ask(ns, device), reference, seed=int(check.get("seed", 0)),
                   mutants=check.get("mutants"), calls_expected=check.get("calls"))
