"""Which device a worker is started for: the grader's one place that resolves "auto".

Invariants:

- ``worker_device`` takes the device asked for (the command line), which wins unless it is
  "auto", then the configured one (``c.PPOKit.device``); an "auto" left after that is "cuda"
  where GPU device nodes exist (``GPU_NODES``), else "cpu". "cpu" and "cuda" stay as they are.
  The launcher (``backends.launch_spec``) needs the answer: a CUDA worker gets the GPU device
  nodes and an ``RLIMIT_DATA`` memory limit.
- It looks only at ``/dev``, never at torch (the grader does not import torch). The worker then
  checks that torch can use CUDA and falls back to the CPU if not
  (``autograder.sandbox.worker.resolve_device``); its load reply names the device it uses.
"""
from __future__ import annotations

import glob

GPU_NODES = "/dev/nvidia[0-9]*"     # one device node per GPU: /dev/nvidia0, /dev/nvidia1, ...


def gpu_count() -> int:
    """How many GPU device nodes this machine has (0 without an NVIDIA driver)."""
    return len(glob.glob(GPU_NODES))


def worker_device(requested: str, configured: str = "auto") -> str:
    """"cpu" or "cuda", the device a worker is started for; both arguments are "auto", "cpu" or
    "cuda" (``configured`` counts only when ``requested`` is "auto")."""
    device = configured if requested == "auto" else requested
    if device == "auto":
        return "cuda" if gpu_count() else "cpu"
    return device
