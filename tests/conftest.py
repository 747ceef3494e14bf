"""Fixtures shared by the kit's tests. Test helpers are found through pytest's ``pythonpath``
(``pyproject.toml``: the repo root, ``tests``, ``tests/adversarial``, ``tools``), never through
``sys.path`` edits."""
from __future__ import annotations

import pytest

from autograder import REPO_ROOT
from autograder.assignments import Assignment, load_assignment


@pytest.fixture(scope="module")
def assignment(request) -> Assignment:
    """The assignment a test module is about: its ``ASSIGNMENT`` constant, else ``ppo``."""
    return load_assignment(getattr(request.module, "ASSIGNMENT", "ppo"), REPO_ROOT)
