"""The pytest plugin that hidden suites run under, in the trusted parent.

It provides the fixtures the suites use (``student``, ``reference``, ``rng``, ``training_seed``,
``hidden_seed``, ``device``, ``hints``, ``assignment``) and records one outcome per test. A test's
student-facing message is taken only from exceptions the kit defines (``Mistake``,
``StudentError``, ...); anything else becomes a generic message, so no hidden test source ever
reaches a student.

Seeds: ``rng`` (the unit tests' hidden inputs) is per submission: it mixes in
``SuiteContext.code_digest``, the digest of the code the student's worker runs, so changed code
sees new inputs and the same code the same ones. ``training_seed`` is per student only (never
the code): training runs must not be re-rolled by a resubmission. ``hidden_seed`` is the same
per-student seed, kept for the training suites that ask for it by that name; unit tests draw
their inputs from ``rng`` only (``tests/assignments/test_hidden_inputs.py`` checks both rules).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from autograder.mistakes import Mistake
from autograder.seeding import derive_seed, rng_for

if TYPE_CHECKING:
    from autograder.assignments import Assignment


@dataclass
class Outcome:
    """What one test did. ``message`` is student-facing; ``kit_error`` marks a bug in the kit."""
    nodeid: str
    module: str
    grade_cell: str
    title: str
    weight: float
    passed: bool = False
    message: str = ""
    kit_error: str = ""
    extra: dict = field(default_factory=dict)   # plain, bounded data for the page (record.py)


@dataclass
class SuiteContext:
    """Everything a suite may see about the submission being graded (no student code here)."""
    assignment: Assignment
    student_proxy: object           # autograder.proxy.StudentProxy on the sandboxed worker
    reference_proxy: object         # the same API on the trusted reference worker
    hints: object                   # autograder.hints.Hints
    cohort_seed: int
    student_id: str
    device: str                     # "cpu" | "cuda": where the worker computes
    code_digest: str = ""           # seeding.code_digest of the student's cells ("" = none)
    outcomes: dict[str, Outcome] = field(default_factory=dict)


def student_message(exc: BaseException, grade_cell: str) -> tuple[str, str]:
    """(student-facing message, kit error text). Only the kit's own exception types speak."""
    from autograder import proxy

    if isinstance(exc, proxy.ReferenceFailed):   # the answer key failed: never the student's
        return ("This check could not be completed because of an error in the grader itself; "
                "your course staff have been notified."), f"the reference failed: {exc}"
    if isinstance(exc, Mistake):
        return str(exc), ""
    if isinstance(exc, proxy.NotDefined):
        return str(exc), ""
    if isinstance(exc, proxy.StudentError):
        return str(exc), ""
    if isinstance(exc, proxy.WorkerTimeout):
        return (f"Your code did not finish in time ({exc}). Look for an infinite loop or very "
                "slow code in the function this question tests."), ""
    if isinstance(exc, proxy.WorkerDied):
        return (f"The process running your code stopped ({exc}). This usually means a memory "
                "or CPU limit was hit, or the code called exit()."), ""
    return ("This check could not be completed because of an error in the grader itself; "
            "your course staff have been notified."), f"{type(exc).__name__}: {exc}"


class KitPlugin:
    """Registered with ``pytest.main(plugins=[KitPlugin(ctx)])`` for one submission."""

    def __init__(self, ctx: SuiteContext):
        self.ctx = ctx

    # --- fixtures ------------------------------------------------------------------------
    @pytest.fixture
    def student(self):
        return self.ctx.student_proxy

    @pytest.fixture
    def reference(self):
        return self.ctx.reference_proxy

    @pytest.fixture
    def hints(self):
        return self.ctx.hints

    @pytest.fixture
    def assignment(self):
        return self.ctx.assignment

    @pytest.fixture
    def device(self):
        return self.ctx.device

    @pytest.fixture
    def training_seed(self, request):
        """Per student and test, never per submission: a resubmission re-runs the same run."""
        return derive_seed(self.ctx.cohort_seed, self.ctx.student_id, _test_key(request.node))

    @pytest.fixture
    def record_training(self, request):
        """``record_training(metrics, curves=())``: keep a training run's numbers (bounded,
        plain data; ``autograder/grade/record.py``) with this test's result."""
        from autograder.grade.record import training_record

        def record(metrics, curves=()):
            outcome = self.ctx.outcomes.get(request.node.nodeid)
            if outcome is not None:
                outcome.extra["training"] = training_record(metrics, curves)
        return record

    @pytest.fixture
    def hidden_seed(self, training_seed):
        """The per-student seed under its older name (training suites)."""
        return training_seed

    @pytest.fixture
    def rng(self, request):
        """The unit tests' hidden inputs: per student, test and submission (code digest)."""
        return rng_for(self.ctx.cohort_seed, self.ctx.student_id, _test_key(request.node),
                       self.ctx.code_digest)

    # --- hooks ---------------------------------------------------------------------------
    def pytest_collect_directory(self, path, parent):
        """Every folder is a plain directory: the assignment's ``__init__.py`` is imported by
        the loader, not by pytest."""
        return pytest.Dir.from_parent(parent, path=path)

    def pytest_pycollect_makemodule(self, module_path, parent):
        """A test file is a module of the assignment's package (``autograder.plugins``)."""
        module = _AssignmentModule.from_parent(parent, path=module_path)
        module.assignment = self.ctx.assignment
        return module

    def pytest_configure(self, config):
        config.addinivalue_line("markers",
                                "weight(w): this test's share of its grade cell's points")

    def pytest_collection_modifyitems(self, items):
        for item in items:
            grade_cell = getattr(item.module, "GRADE_CELL", "")
            marker = item.get_closest_marker("weight")
            weight = float(marker.args[0]) if marker else 1.0
            doc = (item.function.__doc__ or "").strip().splitlines()
            title = doc[0].rstrip(".") if doc else item.name.replace("test_", "").replace("_", " ")
            self.ctx.outcomes[item.nodeid] = Outcome(
                nodeid=item.nodeid, module=item.module.__name__, grade_cell=grade_cell,
                title=title, weight=weight)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        yield
        outcome = self.ctx.outcomes.get(item.nodeid)
        if outcome is None:
            return
        if call.when == "call" and call.excinfo is None:
            outcome.passed = True
            outcome.message = ""
        elif call.excinfo is not None and not outcome.message and not outcome.kit_error:
            outcome.passed = False
            outcome.message, outcome.kit_error = student_message(call.excinfo.value,
                                                                 outcome.grade_cell)


class _AssignmentModule(pytest.Module):
    """A suite file imported through ``autograder.plugins`` as
    ``autograder_assignments.<name>.<dotted path in the folder>``."""

    assignment: Assignment

    def _getobj(self):
        from autograder.plugins import load_module

        folder = Path(self.assignment.folder).resolve()
        relative = Path(self.path).resolve().relative_to(folder).with_suffix("")
        return load_module(self.assignment.name, folder, ".".join(relative.parts))


def _test_key(node) -> str:
    """The test's stable name for seeding: 'test_compute_gae.py::test_seed_example'."""
    return node.nodeid.split("/")[-1]
