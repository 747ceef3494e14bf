"""What the assignments' mutant corpora share: a submission built from the answer key with
solution cells replaced, graded like any other (the real command line, or ``grade_submission``
in this process with one worker pool), and the record of what it lost where.

Each assignment's ``corpus.py`` decides which grade cell a mistake must lose points on
(``MutantGrade.question``) and which others it may cost too (``MutantGrade.may_also_lose``: the
training questions whose harness runs the function); every other cell must keep full marks.
Points are in the grade cells' own units: ``lost[cell]`` is the sum of ``max_score - score`` of
its tests.

``python -m autograder.suites.mutant_corpus --assignment NAME`` (``make mutants``, for every
assignment) runs ``main()`` of ``corpus.py`` in the assignment's folder: it grades the corpus,
prints the table and exits 1 unless ``as_expected``.
"""
from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from autograder import REPO_ROOT
from autograder.hints import solution_cell
from autograder.outcomes import Flag
from autograder.results import GradingResult

NUMERIC_MESSAGE = re.compile(r"The first wrong number is at position|The shape is \(")
MARKERS = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n", re.M)


@dataclass
class MutantGrade:
    """One graded corpus notebook: a mutant, one or more correct variants, or a whole notebook."""
    name: str
    kind: str                       # "mutant" | "variant" | "answer_key" | "release"
    functions: tuple[str, ...] = ()
    question: str = ""              # the grade cell a mutant must lose points on
    may_also_lose: tuple[str, ...] = ()
    hint: str = ""
    needs: str = ""                 # "cuda": the mistake can only show on a GPU
    short_training: bool = False    # graded with a shortened training run
    lost: dict[str, float] = field(default_factory=dict)     # grade cell -> points lost
    outputs: dict[str, str] = field(default_factory=dict)    # grade cell -> failed tests' text
    failed: dict[str, list] = field(default_factory=dict)    # grade cell -> failed test names
    max_scores: dict[str, float] = field(default_factory=dict)   # test name -> its max score
    score: float = 0.0
    max_score: float = 0.0
    flags: list[Flag] = field(default_factory=list)
    device: str = ""
    via: str = ""                   # "cli" | "api"
    seconds: float = 0.0
    result: GradingResult | None = None

    @property
    def function(self) -> str:
        return self.functions[0] if self.functions else ""

    @property
    def killed(self) -> bool:
        return self.lost.get(self.question, 0.0) > 1e-9

    @property
    def collateral(self) -> dict[str, float]:
        """Points lost on cells the mistake has no business touching."""
        allowed = {self.question, *self.may_also_lose}
        return {c: p for c, p in self.lost.items() if p > 1e-9 and c not in allowed}

    @property
    def hint_shown(self) -> bool:
        return bool(self.hint) and self.hint in self.outputs.get(self.question, "")

    @property
    def numeric_shown(self) -> bool:
        return bool(NUMERIC_MESSAGE.search(self.outputs.get(self.question, "")))

    @property
    def applicable(self) -> bool:
        """False for a mistake that cannot show on this device (e.g. wrong device on a CPU)."""
        return self.needs != "cuda" or self.device.startswith("cuda")

    @property
    def grader_errors(self) -> list[Flag]:
        return [f for f in self.flags if f.code == "grader_error"]


# --- building submissions --------------------------------------------------------------------

def submission_notebook(assignment, replacements: dict[str, str]) -> dict:
    """The source notebook as JSON with each function's solution cell replaced by the given
    source (nbgrader's solution markers removed, as a student's copy has none)."""
    nb = json.loads(Path(assignment.source_path).read_text())
    for function, source in replacements.items():
        cell_id = solution_cell(assignment, function).id
        hits = 0
        for cell in nb["cells"]:
            if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == cell_id:
                cell["source"] = MARKERS.sub("", source)
                cell["outputs"], cell["execution_count"] = [], None
                hits += 1
        if hits != 1:
            raise LookupError(f"the source notebook has {hits} cells with grade_id {cell_id}")
    return nb


# --- grading -----------------------------------------------------------------------------------

def fill(record: MutantGrade, result: GradingResult, via: str, seconds: float) -> MutantGrade:
    """Record a result's points lost, failure texts and flags per grade cell."""
    for t in result.tests:
        cell = t.grade_cell
        record.lost[cell] = round(record.lost.get(cell, 0.0) + t.max_score - t.score, 6)
        record.max_scores[t.name] = t.max_score
        if not t.passed:
            record.outputs[cell] = record.outputs.get(cell, "") + t.output + "\n"
            record.failed.setdefault(cell, []).append(t.name)
    record.flags = list(result.details.flags)
    record.device = result.details.device
    record.score, record.max_score = result.score, result.details.max_score
    record.via, record.seconds, record.result = via, round(seconds, 2), result
    return record


def sandbox_arguments() -> list[str]:
    """CLI arguments for the sandbox: none when one runs here; else the unconfined mode (the
    corpus is the kit's own code, not a student's)."""
    from autograder.config import load_settings
    from autograder.sandbox.backends import BackendUnavailable, resolve_backend

    try:
        resolve_backend(load_settings(REPO_ROOT).sandbox)
        return []
    except BackendUnavailable:
        return ["--unsafe-no-sandbox"]


def grade_cli(record: MutantGrade, path: Path, out_dir: Path,
              assignment: str) -> tuple[MutantGrade, subprocess.CompletedProcess]:
    """Grade through the real command line, as a TA would (training always at full length)."""
    out = out_dir / f"{Path(path).stem}.results.json"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", str(path), "--assignment", assignment,
         "--student", Path(path).stem, "--out", str(out), *sandbox_arguments()],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"grading {Path(path).name} exited {proc.returncode}:\n"
                           f"{proc.stderr[-3000:]}")
    record.short_training = False
    return fill(record, GradingResult.read(out), "cli", time.monotonic() - started), proc


def grade_api(records: list[tuple], assignment: str, out_dir: Path, pool=None,
              around=lambda record: contextlib.nullcontext()) -> list[MutantGrade]:
    """Grade many ``(record, path)`` notebooks in this process, one after the other, with one
    shared worker pool (``pool``, else one made and closed here). ``around(record)`` is a
    context manager entered while that record is graded."""
    from autograder.config import load_settings
    from autograder.grade.pool import WorkerPool
    from autograder.grade.submission import grade_submission
    from autograder.sandbox.backends import BackendUnavailable, resolve_backend

    settings = load_settings(REPO_ROOT)
    try:
        backend = resolve_backend(settings.sandbox)
    except BackendUnavailable:
        backend = "unsafe"
    own = pool is None
    pool = WorkerPool(settings) if own else pool
    graded = []
    try:
        for record, path in records:
            started = time.monotonic()
            with around(record):
                result = grade_submission(path, assignment, student=path.stem,
                                          settings=settings, backend=backend, pool=pool)
            result.write(out_dir / f"{path.stem}.results.json")
            graded.append(fill(record, result, "api", time.monotonic() - started))
    finally:
        if own:
            pool.close()
    return graded


def as_expected(graded: list[MutantGrade]) -> bool:
    """Every applicable mutant loses points on its own question and nowhere it may not; every
    correct variant keeps full marks (``make mutants`` exits 1 otherwise)."""
    mutants = [g for g in graded if g.kind == "mutant" and g.applicable]
    return all(g.killed and not g.collateral for g in mutants) and \
        all(sum(g.lost.values()) < 1e-9 for g in graded if g.kind == "variant")


def main(argv: list[str] | None = None) -> int:
    """``--assignment NAME``: the ``main()`` of the assignment folder's ``corpus.py``."""
    import argparse

    from autograder.assignments import UnknownAssignment, load_assignment
    from autograder.plugins import assignment_module, has_module

    ap = argparse.ArgumentParser(prog="python -m autograder.suites.mutant_corpus",
                                 description=main.__doc__)
    ap.add_argument("--assignment", required=True)
    ap.add_argument("--course-dir", type=Path, default=REPO_ROOT)
    args = ap.parse_args(argv)
    try:
        assignment = load_assignment(args.assignment, args.course_dir)
    except UnknownAssignment as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not has_module(assignment, "corpus"):
        print(f"{args.assignment}: no corpus.py in {assignment.folder}, nothing to grade")
        return 0
    return int(assignment_module(assignment, "corpus").main())


if __name__ == "__main__":
    sys.exit(main())
