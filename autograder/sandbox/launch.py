"""Starting a worker process, and the handle on a process the grader is the parent of.

Invariants:

- A worker is ``python -m autograder.sandbox.worker`` with ``worker_args``, started from a
  ``backends.LaunchSpec`` in a session of its own (its pid leads its process group), stdin
  ``/dev/null``, stdout and stderr the output pipe, and no descriptor but the spec's.
- ``DirectProcess.kill`` kills the whole tree (``process_tree.kill_tree``) and waits at most 10 s;
  ``status`` reaps with ``wait4`` and reports the CPU seconds used, so a SIGKILL at the hard
  ``RLIMIT_CPU`` is told apart from other kills; ``cleanup`` runs once the process has ended.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time

from autograder.sandbox import backends, cleanup
from autograder.sandbox.process_tree import kill_tree


def worker_args(*, zygote: bool = False, backend: str = "unsafe") -> list[str]:
    """Arguments of ``python -m autograder.sandbox.worker``; the launcher gives it fds 3 and 4.

    A zygote under a sandbox may fork (``allow_fork``), so it installs the no-fork seccomp
    filter in each child; under ``fallback`` it also deletes its uid's files in the shared
    temporary directories between children.
    """
    args = ["--fds", "3,4"]
    if zygote:
        args.append("--zygote")
        if backend in ("bwrap", "fallback"):
            args.append("--child-seccomp")
        if backend == "fallback":
            args.append("--wipe-uid-files")
    return args


def popen_worker(spec: backends.LaunchSpec, out_w: int) -> subprocess.Popen:
    """Start ``spec`` in a new session, stdin from /dev/null, stdout and stderr to ``out_w``."""
    return subprocess.Popen(spec.argv, env=spec.env, cwd=spec.cwd, preexec_fn=spec.preexec_fn,
                            pass_fds=tuple(spec.pass_fds), stdin=subprocess.DEVNULL, stdout=out_w,
                            stderr=out_w, start_new_session=True, close_fds=True)


class DirectProcess:
    """A worker started with subprocess (possibly through bwrap): we are its parent."""

    def __init__(self, popen: subprocess.Popen, scratch: str, backend: str):
        self.popen, self.scratch, self.backend, self.pid = popen, scratch, backend, popen.pid
        self.cpu_seconds: float | None = None

    def kill(self) -> None:
        if self.popen.poll() is None:
            kill_tree(self.popen.pid)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def status(self, wait: float) -> tuple[int | None, int | None, float | None] | None:
        """(exit code, signal number, CPU seconds used) once it has ended, None while it runs.
        Reaped with wait4 for the CPU time: a SIGKILL at the hard RLIMIT_CPU is then told
        apart from other kills."""
        deadline = time.monotonic() + wait
        while self.popen.returncode is None:
            try:
                pid, st, usage = os.wait4(self.popen.pid, os.WNOHANG)
            except ChildProcessError:          # reaped elsewhere
                self.popen.poll()
                break
            if pid:
                self.popen.returncode = os.waitstatus_to_exitcode(st)
                self.cpu_seconds = usage.ru_utime + usage.ru_stime
                break
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005)
        rc = self.popen.returncode
        sig = backends.termination_signal(self.backend, rc)
        return (None, sig, self.cpu_seconds) if sig is not None else (rc, None, self.cpu_seconds)

    def cleanup(self) -> None:
        """Remove the scratch directory and, for ``fallback`` (the worker wrote to the host's
        filesystems as a uid of its own), every file of that uid (``cleanup.remove_uid_files``).
        Called once the process has ended."""
        shutil.rmtree(self.scratch, ignore_errors=True)
        if self.backend == "fallback" and os.geteuid() == 0:
            cleanup.remove_uid_files(backends.SANDBOX_UID_BASE + self.pid)
