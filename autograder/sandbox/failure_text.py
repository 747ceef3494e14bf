"""How a worker's failures read: the flag code and the words for how a worker process ended
(``describe_end``) and for a limit its code ran into (``limit_of``, ``limit_note``).

Invariants: pure functions of their arguments (no process is touched); a flag code is one of
``limit_cpu``, ``limit_memory``, ``limit_file``, ``limit_open_files``, ``limit_processes``,
``call_timeout`` or ``worker_died``; the words are for the student and the staff and name the
limit with its unit (s, MB), from the ``Limits`` given.
"""
from __future__ import annotations

import signal

from autograder.sandbox.limits import Limits, scratch_bytes

FLAG_FOR_SIGNAL = {"SIGXCPU": "limit_cpu", "SIGKILL": "limit_memory", "SIGXFSZ": "limit_file"}


def describe_end(status, limits: Limits) -> tuple[str, str, str | None, int | None]:
    """(flag code, reason, signal name, exit code) for how a worker ended."""
    if status is None:
        return "worker_died", "it closed its reply channel", None, None
    code, sig, cpu = (tuple(status) + (None,))[:3]
    if sig is not None:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        if name == "SIGKILL" and cpu is not None and cpu >= limits.cpu_seconds:
            name = "SIGXCPU"     # killed at the hard CPU limit (SIGXCPU was caught or ignored)
        reason = {"SIGXCPU": f"it used up its CPU time limit ({limits.cpu_seconds} s)",
                  "SIGKILL": "it was killed (SIGKILL), most often for using too much memory",
                  "SIGXFSZ": f"it wrote a file over the size limit ({limits.max_file_mb} MB)",
                  "SIGSEGV": "it crashed (SIGSEGV)"}.get(name, f"it was killed by {name}")
        return FLAG_FOR_SIGNAL.get(name, "worker_died"), reason, name, None
    why = f"it exited with code {code} (exit() or os._exit() was called)"
    return "worker_died", why, None, code


def limit_of(error: dict) -> str | None:
    """The flag for an exception the worker reported that comes from one of its limits:
    ``limit_memory`` (RLIMIT_AS), ``limit_file`` (RLIMIT_FSIZE, the scratch size),
    ``limit_open_files`` (RLIMIT_NOFILE), ``limit_processes`` (RLIMIT_NPROC, the seccomp ban on
    new processes), ``call_timeout`` (a cell's alarm at load); None for any other error."""
    msg = str(error.get("message", ""))
    if error.get("type") == "CellTimeout":
        return "call_timeout"
    if _is_memory_error(error):
        return "limit_memory"
    if _is_file_limit_error(error):
        return "limit_file"
    if "[Errno 24]" in msg or "Too many open files" in msg:
        return "limit_open_files"
    if "can't start new thread" in msg or "[Errno 11]" in msg:
        return "limit_processes"
    trace = str(error.get("trace", ""))
    if "[Errno 1]" in msg and any(word in trace for word in _PROCESS_CALLS):
        return "limit_processes"    # refused by the seccomp filter (EPERM)
    return None


_PROCESS_CALLS = ("fork", "Popen", "spawn", "subprocess", "multiprocessing", "system(", "exec")


def limit_note(code: str, limits: Limits) -> str:
    """What a limit is, in words for the student and the staff."""
    return {
        "limit_memory": f"the memory limit for your code is {limits.memory_mb} MB",
        "limit_file": f"files your code writes may be at most {limits.max_file_mb} MB, and its "
                      f"scratch space holds {scratch_bytes(limits) // (1 << 20)} MB",
        "limit_open_files": f"your code may have at most {limits.max_open_files} files open",
        "limit_processes": "your code may not start new processes, and at most "
                           f"{limits.max_processes} threads",
    }.get(code, code)


def _is_file_limit_error(error: dict) -> bool:
    """EFBIG (RLIMIT_FSIZE) or ENOSPC (the size-capped scratch), as the worker reports them."""
    msg = str(error.get("message", ""))
    return "[Errno 27]" in msg or "[Errno 28]" in msg or "File too large" in msg \
        or "No space left on device" in msg


def _is_memory_error(error: dict) -> bool:
    msg = str(error.get("message", "")).lower()
    return error.get("type") == "MemoryError" or (
        error.get("type") == "RuntimeError" and ("can't allocate memory" in msg
                                                 or "out of memory" in msg))
