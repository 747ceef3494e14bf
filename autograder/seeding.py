"""Hidden seeds: one cohort seed, mixed with the student id and the test name."""
from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(cohort_seed: int, student_id: str, test_name: str) -> int:
    """A 63-bit seed from sha256(cohort, student, test). Stable across runs and machines."""
    digest = hashlib.sha256(f"{cohort_seed}\0{student_id}\0{test_name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def rng_for(cohort_seed: int, student_id: str, test_name: str) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(derive_seed(cohort_seed, student_id, test_name)))
