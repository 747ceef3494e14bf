"""Resource limits for one sandboxed worker. Units are in the field names."""
from __future__ import annotations

from dataclasses import dataclass


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
