"""Run one hidden test of a suite in this process, outside pytest's collection: fast enough to
call thousands of times (``tests/grade/test_no_grader_error.py``,
``tests/assignments/test_hidden_inputs.py``).

Fixtures are built exactly as ``autograder/grade/plugin.py`` builds them, and the outcome is
classified by the plugin's own ``student_message``.
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from autograder.grade.plugin import student_message
from autograder.plugins import assignment_module
from autograder.seeding import derive_seed, rng_for

TRAINING_FIXTURES = ("training_seed", "hidden_seed")


@dataclass(frozen=True)
class HiddenTest:
    assignment: str
    module: str                 # file name, e.g. "test_compute_gae.py"
    name: str                   # function name
    grade_cell: str
    function: object
    weight: float

    @property
    def key(self) -> str:       # the plugin's seeding key: "test_compute_gae.py::test_x"
        return f"{self.module}::{self.name}"

    @property
    def params(self) -> list[str]:
        return list(inspect.signature(self.function).parameters)

    @property
    def is_training(self) -> bool:
        return any(p in TRAINING_FIXTURES for p in self.params)


def hidden_tests(assignment) -> list[HiddenTest]:
    """Every ``test_*`` function of the assignment's suite, in file order."""
    out = []
    for path in sorted(Path(assignment.folder).glob("test_*.py")):
        with warnings.catch_warnings():     # the plugin registers ``weight``; pytest here does not
            warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
            module = assignment_module(assignment, path.stem)
        for name, fn in vars(module).items():
            if name.startswith("test_") and inspect.isfunction(fn) \
                    and fn.__module__ == module.__name__:
                marks = [m for m in getattr(fn, "pytestmark", []) if m.name == "weight"]
                out.append(HiddenTest(assignment.name, path.name, name, module.GRADE_CELL, fn,
                                      float(marks[0].args[0]) if marks else 1.0))
    return out


@dataclass
class Result:
    passed: bool
    message: str
    kit_error: str


def run_hidden_test(test: HiddenTest, *, student, reference, hints, assignment,
                    cohort_seed: int = 1, student_id: str = "student", code: str = "",
                    device: str = "cpu") -> Result:
    """Call ``test`` with the plugin's fixtures; ``code`` is the submission's code digest."""
    fixtures = {
        "student": student, "reference": reference, "hints": hints, "assignment": assignment,
        "device": device,
        "rng": rng_for(cohort_seed, student_id, test.key, code),
        "training_seed": derive_seed(cohort_seed, student_id, test.key),
        "hidden_seed": derive_seed(cohort_seed, student_id, test.key),
    }
    try:
        test.function(**{p: fixtures[p] for p in test.params})
    except Exception as exc:    # noqa: BLE001 - classified as the plugin classifies it
        message, kit_error = student_message(exc, test.grade_cell)
        return Result(False, message, kit_error)
    return Result(True, "", "")
