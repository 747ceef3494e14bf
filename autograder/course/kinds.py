"""What a result is, from its flags: graded, failed to read, or a grader error; flagged or not."""
from __future__ import annotations

import re

from autograder.outcomes import OUTCOMES
from autograder.results import GradingResult, TestResult

# "Nothing could be graded": the summary's "failed to read" (autograder/outcomes.py).
UNREAD_CODES = OUTCOMES.codes("unread")
ERROR_CODES = OUTCOMES.codes("error")


def flag_codes(result: GradingResult) -> set[str]:
    return result.details.flag_codes()


def kind(result: GradingResult) -> str:
    """'grader error', 'failed to read' or 'graded'."""
    codes = flag_codes(result)
    if codes & ERROR_CODES:
        return "grader error"
    if codes & UNREAD_CODES:
        return "failed to read"
    return "graded"


def is_flagged(result: GradingResult) -> bool:
    """Has an integrity finding (a renamed notebook, a changed locked cell, a limit hit...)."""
    return any(OUTCOMES.needs_a_look(c) for c in flag_codes(result) if c)


# A check of a function still left as the release's stub fails with this in its message.
NOT_DONE = re.compile(r"\bNotImplementedError\b")


def cell_of(test: TestResult) -> str:
    """The grade cell a test counts toward (its first tag)."""
    return test.grade_cell


def attempted(tests: list[TestResult]) -> bool:
    """False when every one of ``tests`` (one question's) failed only because the function is
    still the release's stub (it raised NotImplementedError): not attempted, so not a mistake.
    The feedback page, the per-question and the per-test statistics all use this one rule."""
    return not tests or not all(not t.passed and NOT_DONE.search(t.output) for t in tests)


def unattempted_cells(result: GradingResult) -> set[str]:
    """The grade cells of ``result`` whose checks all failed on the stub."""
    by_cell: dict[str, list[TestResult]] = {}
    for t in result.tests:
        by_cell.setdefault(cell_of(t), []).append(t)
    return {cell for cell, tests in by_cell.items() if not attempted(tests)}
