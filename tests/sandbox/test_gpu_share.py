"""Each CUDA worker gets a bounded share of GPU memory. There is no GPU here, so the setting is
tested by design: the fraction comes from nbgrader_config.py (derived from jobs when not set),
the launcher hands it to every sandboxed CUDA worker, and the worker applies it to every device
through torch.cuda.set_per_process_memory_fraction (a recording stand-in for torch.cuda) before
any student code runs; on the CPU nothing changes and a CUDA request still falls back."""
from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from autograder.config import ConfigError, load_settings
from autograder.sandbox import backends, worker
from autograder.sandbox.client import Worker
from autograder.sandbox.limits import Limits

CONFIG = """c = get_config()
c.PPOKit.jobs = {jobs}
c.PPOKit.limits = dict({limits})
"""


def settings_for(tmp_path: Path, jobs: int, limits: str = ""):
    (tmp_path / "nbgrader_config.py").write_text(CONFIG.format(jobs=jobs, limits=limits))
    return load_settings(tmp_path)


def test_the_fraction_comes_from_the_config(tmp_path):
    assert settings_for(tmp_path, 3).limits.gpu_memory_fraction == pytest.approx(1 / 6, abs=1e-4)
    assert settings_for(tmp_path, 1).limits.gpu_memory_fraction == 0.5
    given = settings_for(tmp_path, 3, "gpu_memory_fraction=0.4")
    assert given.limits.gpu_memory_fraction == 0.4
    with pytest.raises(ConfigError, match="gpu_memory_fraction"):
        settings_for(tmp_path, 2, "gpu_memory_fraction=1.5")


@pytest.mark.parametrize("backend", ["bwrap", "unsafe"])
def test_the_launcher_hands_the_fraction_to_cuda_workers_only(backend, tmp_path):
    limits = Limits(gpu_memory_fraction=0.25)

    def env(device, backend=backend):
        return backends.command_spec(backend, python=backends.sys.executable,
                                     python_args=["-c", "pass"], limits=limits, device=device,
                                     fds=(7, 9), scratch_dir=str(tmp_path)).env
    assert env("cuda")[backends.GPU_FRACTION_ENV] == "0.25"
    assert backends.GPU_FRACTION_ENV not in env("cpu")
    assert backends.GPU_FRACTION_ENV not in env("cuda", "trusted")   # the reference: unbounded


class FakeCuda:
    """torch.cuda as the worker uses it, recording what it was asked to set."""

    def __init__(self, available: bool, devices: int):
        self.available, self.devices, self.calls = available, devices, []

    def is_available(self):
        return self.available

    def device_count(self):
        return self.devices

    def set_per_process_memory_fraction(self, fraction, device=None):
        self.calls.append((fraction, device))


class FakeTorch:
    def __init__(self, cuda):
        self.cuda = cuda


def test_the_worker_applies_the_fraction_to_every_gpu(monkeypatch):
    cuda = FakeCuda(available=True, devices=2)
    monkeypatch.setattr(worker, "torch", FakeTorch(cuda))
    monkeypatch.setenv(worker.GPU_FRACTION_ENV, "0.25")
    assert worker.resolve_device("cuda") == ("cuda", "")
    assert cuda.calls == [(0.25, 0), (0.25, 1)]
    cuda.calls.clear()
    assert worker.resolve_device("auto") == ("cuda", "")
    assert cuda.calls == [(0.25, 0), (0.25, 1)]
    monkeypatch.setenv(worker.GPU_FRACTION_ENV, "3")
    with pytest.raises(worker.BadRequest):
        worker.resolve_device("cuda")


def test_on_the_cpu_nothing_is_set(monkeypatch):
    cuda = FakeCuda(available=False, devices=0)
    monkeypatch.setattr(worker, "torch", FakeTorch(cuda))
    monkeypatch.setenv(worker.GPU_FRACTION_ENV, "0.25")
    assert worker.resolve_device("cuda") == ("cpu", "CUDA is not available in the worker")
    assert worker.resolve_device("cpu") == ("cpu", "")
    assert cuda.calls == []


def test_a_cuda_request_without_a_gpu_still_grades_on_the_cpu(tmp_path):
    limits = replace(settings_for(tmp_path, 2).limits, wall_seconds=120)
    backend = backends.resolve_backend("auto")
    with Worker(limits, backend=backend, device="cuda") as w:
        reply = w.load([{"id": "a_answer", "source": textwrap.dedent("""
            import os, torch
            def probe():
                return [os.environ.get("AG_GPU_MEMORY_FRACTION"), float(torch.ones(3).sum())]
            """)}])
        assert reply["device"] == "cpu" and reply["device_note"]
        fraction, total = w.request({"op": "call", "fn": "probe", "args": [], "kwargs": {},
                                     "leaves": {}, "seed": 0, "backward": None}, 30)["value"]
    assert fraction == "0.25" and total == 3.0
