"""Results as dataclasses, serialised in Gradescope's ``results.json`` format.

Invariants: ``score == sum(t.score for t in tests)``; for every grade cell, the ``max_score`` of
the tests tagged with it sums to the cell's points in the source notebook.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path


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


@dataclass
class GradingResult:
    score: float
    execution_time: float           # seconds, wall clock
    output: str
    tests: list[TestResult]
    # max_score, student, assignment, sandbox, device, flags, grade_cells
    extra_data: dict

    def to_json(self) -> dict:
        return {
            "score": round(self.score, 6),
            "execution_time": round(self.execution_time, 3),
            "output": self.output,
            "tests": [test_json(t) for t in self.tests],
            "extra_data": self.extra_data,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)

    def write(self, path: str | Path) -> None:
        write_atomic(Path(path), self.dumps() + "\n")

    @classmethod
    def from_json(cls, data: dict) -> "GradingResult":
        return cls(
            score=data["score"],
            execution_time=data.get("execution_time", 0.0),
            output=data.get("output", ""),
            tests=[TestResult(**t) for t in data.get("tests", [])],
            extra_data=data.get("extra_data", {}),
        )


def test_json(test: TestResult) -> dict:
    """One test as Gradescope's JSON; ``extra_data`` only when it holds something."""
    data = asdict(test)
    if not data["extra_data"]:
        del data["extra_data"]
    return data


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
