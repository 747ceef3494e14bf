"""Time bounds that hold on a busy machine.

No test asserts an absolute wall-clock bound: on a machine whose every core is busy, everything
takes longer, and "the wall limit plus 5 s" failed at 17.7 s against 17 s. A bound is stated
instead relative to a baseline measured in the same run (``cold_start_seconds``: how long a
fresh interpreter takes to ``import torch`` right now, what every cold worker pays) or in CPU
time. Each bound still fails when the behaviour is wrong: a limit that is not enforced, a FIFO
that is opened, a child that imports torch, costs many times the allowance.
"""
from __future__ import annotations

import subprocess
import sys
import time

_MAX_AGE = 60.0                       # a baseline is measured again after this many seconds
_measured: tuple[float, float] | None = None    # (when, seconds)


def cold_start_seconds() -> float:
    """Wall time, now, of a fresh Python that imports torch and exits (the slower of two runs;
    measured again when the last measurement is over a minute old)."""
    global _measured
    now = time.monotonic()
    if _measured is None or now - _measured[0] > _MAX_AGE:
        runs = []
        for _ in range(2):
            started = time.monotonic()
            subprocess.run([sys.executable, "-c", "import torch"], check=True,
                           capture_output=True)
            runs.append(time.monotonic() - started)
        _measured = (time.monotonic(), max(runs))
    return _measured[1]


def allowance(factor: float = 4.0) -> float:
    """Slack for the overhead around a limit (starting, stopping and reporting processes):
    ``factor`` cold starts measured now. About 5 s on a quiet two-core machine at the default,
    and proportionally more on a loaded one."""
    return factor * cold_start_seconds()
