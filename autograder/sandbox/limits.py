"""Resource limits for one sandboxed worker. Units are in the field names.

``Limits`` is what ``nbgrader_config.py`` sets (``c.PPOKit.limits``). ``rlimits()`` turns it into
the kernel resource limits a worker process gets; ``autograder.sandbox.backends`` applies them
before the worker's interpreter starts, so no student code ever runs without them.
"""
from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int = 120            # RLIMIT_CPU of the worker
    wall_seconds: int = 180           # whole worker life
    call_timeout_seconds: int = 30    # one student function call
    harness_timeout_seconds: int = 120  # one training-harness run
    memory_mb: int = 3072             # RLIMIT_AS
    max_processes: int = 64           # RLIMIT_NPROC
    max_open_files: int = 256         # RLIMIT_NOFILE
    max_file_mb: int = 64             # RLIMIT_FSIZE
    max_output_kb: int = 64           # captured stdout+stderr kept
    gpu_memory_fraction: float = 0.0  # share of each GPU's memory (0: 1 / (2 x jobs), config.py)


def cpu_kill_grace_seconds(limits: Limits) -> int:
    """Seconds of CPU between SIGXCPU (soft RLIMIT_CPU) and SIGKILL (hard RLIMIT_CPU).

    At least 1, at most 5, about a tenth of ``cpu_seconds``: the worker may catch SIGXCPU and
    report, but it cannot run on.
    """
    return min(5, max(1, limits.cpu_seconds // 10))


def scratch_bytes(limits: Limits) -> int:
    """Size cap in bytes of a bubblewrap worker's private tmpfs scratch: 4 x ``max_file_mb``.

    tmpfs pages are RAM that RLIMIT_AS does not see, so the scratch must have a fixed size.
    """
    return 4 * limits.max_file_mb * MIB


def rlimits(limits: Limits, *, device: str = "cpu") -> dict[str, tuple[int, int]]:
    """The kernel limits of one worker: ``{"RLIMIT_…": (soft, hard)}``, values in the kernel's units
    (seconds, bytes, counts).

    - ``RLIMIT_CPU``: soft ``cpu_seconds`` (SIGXCPU), hard ``cpu_seconds + grace`` (SIGKILL).
    - Memory, ``memory_mb`` MiB: ``RLIMIT_AS`` on the CPU. With ``device == "cuda"`` it is
      ``RLIMIT_DATA`` instead, because the CUDA driver reserves tens of GiB of address space when
      it starts, so any useful RLIMIT_AS would stop every CUDA worker; RLIMIT_DATA still bounds
      the heap (brk and private writable mappings).
    - ``RLIMIT_NPROC`` ``max_processes``: counts tasks (threads too) of the worker's real uid, and
      the kernel never enforces it for uid 0, so it binds only a worker with a uid of its own.
    - ``RLIMIT_NOFILE`` ``max_open_files``; ``RLIMIT_FSIZE`` ``max_file_mb`` MiB (a bigger write
      fails with EFBIG: Python ignores SIGXFSZ); ``RLIMIT_CORE`` 0 (no core dumps).
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', not {device!r}")
    cpu = limits.cpu_seconds
    memory = limits.memory_mb * MIB
    out = {
        "RLIMIT_CPU": (cpu, cpu + cpu_kill_grace_seconds(limits)),
        "RLIMIT_NPROC": (limits.max_processes, limits.max_processes),
        "RLIMIT_NOFILE": (limits.max_open_files, limits.max_open_files),
        "RLIMIT_FSIZE": (limits.max_file_mb * MIB, limits.max_file_mb * MIB),
        "RLIMIT_CORE": (0, 0),
    }
    if device == "cuda":
        out["RLIMIT_DATA"] = (memory, memory)
    else:
        out["RLIMIT_AS"] = (memory, memory)
    return out

