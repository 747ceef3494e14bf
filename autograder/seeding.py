"""Hidden seeds: one cohort seed, mixed with the student id, the test name and (for the unit
tests' hidden inputs) a digest of the student's code.

Invariants:

- ``derive_seed(cohort, student, test)`` is the per-student seed: the same for every submission
  of that student. Training runs use it (``training_seed``), so a resubmission cannot re-roll a
  borderline run; ``make calibrate`` draws its seeds the same way.
- ``derive_seed(cohort, student, test, code=code_digest(cells))`` is the per-submission seed of
  the unit tests' hidden inputs (``rng``): any change to the code that runs gives fresh inputs,
  and the same code (whatever its outputs, execution counts or cell ids) gives the same inputs,
  so a regrade is byte-identical.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np


def code_digest(cells: Iterable[dict]) -> str:
    """sha256 (hex) of the code a worker runs: the ``source`` of each cell the loader emits, in
    order, each prefixed by its length. Cell ids, outputs and execution counts never count."""
    digest = hashlib.sha256()
    for cell in cells:
        source = str(cell.get("source", "")).encode("utf-8", "surrogatepass")
        digest.update(len(source).to_bytes(8, "little"))
        digest.update(source)
    return digest.hexdigest()


def derive_seed(cohort_seed: int, student_id: str, test_name: str, code: str = "") -> int:
    """A 63-bit seed from sha256(cohort, student, test[, code digest]). Stable across runs and
    machines. Without ``code`` it is the per-student seed (training runs, calibration)."""
    text = f"{cohort_seed}\0{student_id}\0{test_name}" + (f"\0{code}" if code else "")
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def rng_for(cohort_seed: int, student_id: str, test_name: str,
            code: str = "") -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(derive_seed(cohort_seed, student_id, test_name,
                                                           code)))
