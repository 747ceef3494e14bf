"""Workers reused across submissions: one trusted reference per assignment, one zygote.

``grade_submission(..., pool=WorkerPool(settings))`` grades many submissions in one process
without paying for ``import torch`` twice per submission:

- ``reference(assignment, device=...)``: the trusted reference worker (the answer key's cells
  from ``reference_cells`` plus the mutants of ``autograder.hints.mutant_cells``), started and
  loaded once, then shared by every submission of that assignment. It never runs student code.
- ``student_worker(backend=..., device=...)``: a fresh sandboxed worker forked from a
  ``ZygoteHandle`` (one per backend, device and kernel limits), started and ready for ``load``. The
  zygote serves one live child at a time: asking for the next worker kills the previous one with
  all its leftovers and wipes its scratch directory.

``close()`` kills every process the pool started. A pool is used from one thread.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from autograder.sandbox.limits import Limits

if TYPE_CHECKING:
    from autograder.sandbox.client import Worker, ZygoteHandle


def _kernel_limits(limits: Limits) -> tuple:
    """The limits the kernel enforces (fixed when a zygote starts); the parent's own limits
    (timeouts, wall clock, output cap) may change per worker."""
    return (limits.cpu_seconds, limits.memory_mb, limits.max_processes, limits.max_open_files,
            limits.max_file_mb, limits.gpu_memory_fraction)


class WorkerPool:
    def __init__(self, settings):
        self.settings = settings
        self._references: dict[tuple, tuple[list, Worker]] = {}   # key -> (cells, Worker)
        self._zygotes: dict[tuple, ZygoteHandle] = {}

    def reference(self, assignment, *, device: str = "cpu"):
        """The started, loaded reference Worker for ``assignment`` on ``device``."""
        from autograder.grade.submission import check_reference, reference_cells
        from autograder.hints import mutant_cells
        from autograder.sandbox.client import Worker

        key = (assignment.name, str(assignment.source_path), device)
        cells = reference_cells(assignment) + mutant_cells(assignment)
        cached = self._references.get(key)
        if cached is not None and cached[0] == cells:
            return cached[1]
        if cached is not None:       # the answer key or its mutants changed since: reload
            cached[1].close()
            del self._references[key]
        worker = Worker(self.settings.limits, backend="trusted", device=device, trusted=True)
        try:
            worker.start()
            check_reference(worker.load(cells))
        except BaseException:
            worker.close()
            raise
        self._references[key] = (cells, worker)
        return worker

    def student_worker(self, *, backend: str | None = None, device: str = "cpu",
                       settings=None):
        """A fresh, started sandboxed Worker forked from the zygote for ``backend``/``device``."""
        from autograder.sandbox.backends import resolve_backend
        from autograder.sandbox.client import ZygoteHandle

        settings = settings or self.settings
        backend = resolve_backend(backend or settings.sandbox)
        key = (backend, device, _kernel_limits(settings.limits))
        zygote = self._zygotes.get(key)
        if zygote is None:
            zygote = ZygoteHandle(settings.limits, backend=backend, device=device)
            zygote.start()
            self._zygotes[key] = zygote
        return zygote.spawn_worker(settings.limits)

    def close(self) -> None:
        """Kill every worker and zygote this pool started."""
        references, self._references = self._references, {}
        zygotes, self._zygotes = self._zygotes, {}
        for _, worker in references.values():
            worker.close()
        for zygote in zygotes.values():
            zygote.close()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
