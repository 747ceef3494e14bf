"""One grading slot: a long-lived process that grades one submission at a time for grade-course.

The coordinator (``batch.py``) starts it as ``python -m autograder.course.slot FD_IN FD_OUT
COURSE_DIR GRADER`` in its own session. Messages are length-prefixed JSON (no pickle) over two
pipes. A request names a submission; the reply carries the result's JSON, or the traceback of a
kit error. The slot never writes a result file: the coordinator does.
"""
from __future__ import annotations

import ctypes
import importlib
import json
import os
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

DEFAULT_GRADER = "autograder.grade.submission:grade_submission"


def load_grader(spec: str):
    """``"package.module:function"`` -> the function."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the coordinator dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def make_pool(settings, grade):
    """``(keyword, pool)``: the grader's reusable worker pool and the keyword ``grade`` takes it
    by, when the kit offers one and ``grade`` has a ``pool`` (or ``workers``) parameter; else
    ``(None, None)``. A slot grades many submissions, so keeping the reference worker alive
    saves its start-up on every one after the first."""
    import inspect

    params = inspect.signature(grade).parameters
    keyword = next((k for k in ("workers", "pool") if k in params), None)
    for module in ("autograder.grade.pool", "autograder.grade.submission"):
        try:
            cls = getattr(importlib.import_module(module), "WorkerPool")
        except (ImportError, AttributeError):
            continue
        return (keyword, cls(settings)) if keyword else (None, None)
    return None, None


def limit_address_space() -> None:
    """The slot's own RLIMIT_AS (soft; the hard limit is left as it is, so the workers it starts
    raise theirs to their own limits): the last line of defence should a bound of
    ``autograder.bounds`` be wrong.
    A submission that hits it costs only its own result (the coordinator records a grader
    error and starts a fresh slot)."""
    import resource

    from autograder import bounds

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = bounds.SLOT_ADDRESS_SPACE_BYTES
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft == resource.RLIM_INFINITY or soft > cap:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def on_cpu(device: str, configured: str = "auto") -> bool:
    """Whether this slot's workers run on the CPU. A CUDA worker must not inherit an address-space
    limit (the driver reserves tens of GiB of it), so a slot that starts them sets none.
    ``device`` and ``configured`` as for ``autograder.sandbox.devices.worker_device``."""
    from autograder.sandbox.devices import worker_device

    return worker_device(device, configured) == "cpu"


def serve(conn_in: Connection, conn_out: Connection, course_dir: Path, grader_spec: str) -> int:
    from autograder.config import load_settings

    settings = load_settings(course_dir)
    grade = load_grader(grader_spec)
    if on_cpu(settings.device):
        limit_address_space()
    keyword, pool = make_pool(settings, grade)
    try:
        while True:
            try:
                msg = json.loads(conn_in.recv_bytes())
            except EOFError:
                return 0
            try:
                kwargs = {"student": msg["student"], "settings": settings,
                          "device": msg.get("device") or "auto", "backend": msg.get("backend")}
                if pool is not None:
                    kwargs[keyword] = pool
                result = grade(Path(msg["path"]), msg["assignment"], **kwargs)
                reply = {"job": msg["job"], "result": result.to_json()}
            except Exception as exc:  # a kit bug: the coordinator records a grader error
                reply = {"job": msg["job"], "error": f"{type(exc).__name__}: {exc}\n"
                                                     f"{traceback.format_exc()[-3000:]}"}
            conn_out.send_bytes(json.dumps(reply).encode())
    finally:
        if pool is not None and hasattr(pool, "close"):
            pool.close()


def main(argv: list[str]) -> int:
    fd_in, fd_out, course_dir, grader_spec = argv
    ppid = os.getppid()
    die_with_parent()
    if os.getppid() != ppid:  # the coordinator died before the request above took effect
        return 1
    conn_in = Connection(int(fd_in), writable=False)
    conn_out = Connection(int(fd_out), readable=False)
    try:
        return serve(conn_in, conn_out, Path(course_dir), grader_spec)
    except (BrokenPipeError, EOFError):
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
