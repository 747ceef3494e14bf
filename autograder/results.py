"""Results as dataclasses, serialised in Gradescope's ``results.json`` format.

A ``GradingResult`` holds its tests (``TestResult``) and its ``details`` (``ResultDetails``: the
student, the assignment, the sandbox, the flags, the per-cell totals...), which the results
JSON carries as ``extra_data``. ``to_json`` / ``from_json`` are the one conversion to and from
that wire format: the kit works on the dataclasses, files on disk (``results.json``,
Gradescope's results) hold the JSON. ``from_json`` raises ``ResultFormatError`` (a ValueError)
with a clear message for a damaged result; a field the file lacks gets its default.

Invariants: ``score == sum(t.score for t in tests)`` (a reviewed feedback page's score is the
gradebook's, late penalty included); for every grade cell, the ``max_score`` of the tests tagged
with it sums to the cell's points in the source notebook.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from autograder.outcomes import Flag


class ResultFormatError(ValueError):
    """A results JSON that is not one: what is wrong, and where."""


def _number(data: dict, key: str, where: str, default: float | None = None) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ResultFormatError(f"{where}{key} must be a finite number, not {value!r}"[:300])
    return float(value)


def _text(data: dict, key: str, where: str, default: str = "") -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ResultFormatError(f"{where}{key} must be a string, not {value!r}"[:300])
    return value


def _or(value: Any, default: Any) -> Any:
    """``value``, or ``default`` for a JSON null (a field written as null has its default)."""
    return default if value is None else value


def _object(value: object, what: str) -> dict:
    if not isinstance(value, dict):
        raise ResultFormatError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


@dataclass
class TestResult:
    name: str
    score: float
    max_score: float
    status: str                     # "passed" | "failed"
    output: str                     # what the student reads; never hidden test source
    tags: list[str] = field(default_factory=list)  # tags[0] is the grade-cell id
    visibility: str = "visible"
    extra_data: dict = field(default_factory=dict)  # plain data for the pages, e.g. "training"

    @property
    def grade_cell(self) -> str:
        return self.tags[0] if self.tags else ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_json(self) -> dict:
        """The test as Gradescope's JSON; ``extra_data`` only when it holds something."""
        data: dict[str, Any] = {"name": self.name, "score": self.score,
                                "max_score": self.max_score, "status": self.status,
                                "output": self.output, "tags": list(self.tags),
                                "visibility": self.visibility}
        if self.extra_data:
            data["extra_data"] = self.extra_data
        return data

    @classmethod
    def from_json(cls, data: object, where: str = "test: ") -> "TestResult":
        """ResultFormatError for a test without a name, a score or a max_score."""
        d = _object(data, where.rstrip(": ") or "test")
        tags = _or(d.get("tags"), [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ResultFormatError(f"{where}tags must be a list of strings")
        score, max_score = _number(d, "score", where), _number(d, "max_score", where)
        status = d.get("status") or ("passed" if score >= max_score else "failed")
        if status not in ("passed", "failed"):
            raise ResultFormatError(f"{where}status must be 'passed' or 'failed', not {status!r}")
        extra = _or(d.get("extra_data"), {})
        if not isinstance(d.get("name"), str):
            raise ResultFormatError(f"{where}name must be a string, not {d.get('name')!r}"[:300])
        return cls(name=d["name"], score=score, max_score=max_score, status=status,
                   output=_text(d, "output", where), tags=list(tags),
                   visibility=_text(d, "visibility", where, "visible"),
                   extra_data=dict(_object(extra, f"{where}extra_data")))


@dataclass
class ResultDetails:
    """What a result says besides its tests; ``extra_data`` in the results JSON.

    Made by ``new_details`` (a fresh result) or ``ResultDetails.from_json`` (a stored one)."""
    max_score: float = 0.0
    student: str = ""
    assignment: str = ""
    sandbox: str = ""               # the sandbox backend the student's code ran in, "" if none
    device: str = ""                # the device the student's worker ran on, "" if none
    flags: list[Flag] = field(default_factory=list)
    grade_cells: dict[str, dict[str, float]] = field(default_factory=dict)  # cell -> totals
    submission_sha256: str = ""     # of the graded notebook's bytes (a rerun skips the same)
    other: dict[str, Any] = field(default_factory=dict)   # keys this kit does not write, kept

    FIELDS: ClassVar[tuple[str, ...]] = ("max_score", "student", "assignment", "sandbox",
                                         "device", "flags", "grade_cells", "submission_sha256")

    def flag_codes(self) -> set[str]:
        return {f.code for f in self.flags}

    def add_flag(self, code: str, detail: str) -> Flag:
        """Record a new flag (``code`` must be declared in ``autograder/outcomes.py``)."""
        new = Flag.of(code, detail)
        self.flags.append(new)
        return new

    def to_json(self) -> dict:
        data = dict(self.other)
        data.update({"max_score": self.max_score, "student": self.student,
                     "assignment": self.assignment, "sandbox": self.sandbox,
                     "device": self.device, "flags": [f.to_json() for f in self.flags],
                     "grade_cells": {c: dict(v) for c, v in self.grade_cells.items()},
                     "submission_sha256": self.submission_sha256})
        return data

    @classmethod
    def from_json(cls, data: object) -> "ResultDetails":
        """A missing key gets its default; a key of the wrong type is a ResultFormatError."""
        d = _object(data, "extra_data")
        where = "extra_data."
        flags = _or(d.get("flags"), [])
        if not isinstance(flags, list):
            raise ResultFormatError("extra_data.flags must be a list")
        try:
            typed_flags = [Flag.from_json(f) for f in flags]
        except ValueError as exc:
            raise ResultFormatError(f"extra_data.flags: {exc}") from None
        cells: dict[str, dict[str, float]] = {}
        grade_cells = _object(_or(d.get("grade_cells"), {}), "extra_data.grade_cells")
        for cell, totals in grade_cells.items():
            t = _object(totals, f"extra_data.grade_cells.{cell}")
            cells[str(cell)] = {"score": _number(t, "score", f"{where}grade_cells.{cell}."),
                                "max_score": _number(t, "max_score",
                                                     f"{where}grade_cells.{cell}.")}
        given = {k: v for k, v in d.items() if v is not None}    # null: the default
        return cls(max_score=_number(given, "max_score", where, 0.0),
                   student=str(given.get("student", "")),      # an id may have been a number
                   assignment=_text(given, "assignment", where),
                   sandbox=_text(given, "sandbox", where), device=_text(given, "device", where),
                   flags=typed_flags, grade_cells=cells,
                   submission_sha256=_text(given, "submission_sha256", where),
                   other={k: v for k, v in d.items() if k not in cls.FIELDS})


def new_details(*, student: str, assignment: str, max_score: float,
                submission_sha256: str = "", flags: list[dict] | None = None) -> ResultDetails:
    """The details of a result about to be made: the one place they start. ``flags``: plain
    flag data (``outcomes.flag``, a submission's reading, the choice of notebook)."""
    return ResultDetails(max_score=float(max_score), student=student, assignment=assignment,
                         submission_sha256=submission_sha256,
                         flags=[Flag.from_json(f) for f in flags or []])


@dataclass
class GradingResult:
    score: float
    execution_time: float           # seconds, wall clock
    output: str
    tests: list[TestResult]
    details: ResultDetails = field(default_factory=ResultDetails)   # "extra_data" in the JSON
    visibility: str | None = None           # Gradescope's, set only for a Gradescope result
    stdout_visibility: str | None = None

    @classmethod
    def build(cls, tests: list[TestResult], details: ResultDetails, *, output: str,
              execution_time: float = 0.0) -> "GradingResult":
        """A result from its tests: the score and the per-cell totals are theirs."""
        details.grade_cells = grade_cell_totals(tests)
        return cls(score=sum(t.score for t in tests), execution_time=execution_time,
                   output=output, tests=tests, details=details)

    @property
    def max_score(self) -> float:
        """The recorded maximum, else the sum of the tests' (an old or partial result)."""
        return self.details.max_score or sum(t.max_score for t in self.tests)

    def to_json(self) -> dict:
        data: dict[str, Any] = {
            "score": round(self.score, 6),
            "execution_time": round(self.execution_time, 3),
            "output": self.output,
            "tests": [t.to_json() for t in self.tests],
            "extra_data": self.details.to_json(),
        }
        if self.visibility is not None:
            data["visibility"] = self.visibility
        if self.stdout_visibility is not None:
            data["stdout_visibility"] = self.stdout_visibility
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)

    def write(self, path: str | Path) -> None:
        write_atomic(Path(path), self.dumps() + "\n")

    @classmethod
    def from_json(cls, data: object) -> "GradingResult":
        """A result from its JSON; ResultFormatError says what is wrong with a damaged one."""
        d = _object(data, "a result")
        tests = d.get("tests", [])
        if not isinstance(tests, list):
            raise ResultFormatError("tests must be a list")
        visibility = {k: _text(d, k, "") for k in ("visibility", "stdout_visibility") if k in d}
        return cls(score=_number(d, "score", ""),
                   execution_time=_number(d, "execution_time", "", 0.0),
                   output=_text(d, "output", ""),
                   tests=[TestResult.from_json(t, f"tests[{i}]: ") for i, t in enumerate(tests)],
                   details=ResultDetails.from_json(_or(d.get("extra_data"), {})),
                   **visibility)

    @classmethod
    def loads(cls, text: str | bytes) -> "GradingResult":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ResultFormatError(f"not JSON: {exc}") from None
        return cls.from_json(data)

    @classmethod
    def read(cls, path: str | Path) -> "GradingResult":
        """The result in a results.json: OSError when it cannot be read, ResultFormatError
        (naming the file) when it is not a result."""
        text = Path(path).read_bytes()
        try:
            return cls.loads(text)
        except ResultFormatError as exc:
            raise ResultFormatError(f"{path}: {exc}") from None


def grade_cell_totals(tests: list[TestResult]) -> dict[str, dict[str, float]]:
    """{cell: {"score", "max_score"}} summed over the tests tagged with each cell."""
    totals: dict[str, dict[str, float]] = {}
    for t in tests:
        cell = totals.setdefault(t.grade_cell, {"score": 0.0, "max_score": 0.0})
        cell["score"] += t.score
        cell["max_score"] += t.max_score
    return {k: {kk: round(vv, 6) for kk, vv in v.items()} for k, v in totals.items()}


def current_umask() -> int:
    """The process's umask: from /proc on Linux (no change to the process), else by setting it
    and putting it back at once."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half.

    The file gets the mode any tool's output gets, ``0o666 & ~umask`` (0644 under the default
    umask), not ``mkstemp``'s 0600: course staff share these pages. Who may read them is set by
    the course directories' own modes (README, "Security model")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
