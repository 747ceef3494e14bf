"""The mutant corpus of ``ppo_lm``, graded: ``python -m autograder.suites.ppo_lm.corpus``.

Builds one submission per mutant (the source notebook with that function's solution cell
changed as the mutant says) and submissions of the correct variants (solution cells replaced),
grades them like any submission (``grade_submission`` with a shared worker pool, or the real
command line), and reports for each: the points lost on every grade cell, whether the mistake
lost points on its own question and only where it may, and the message shown.
``tests/test_ppo_lm_grading.py`` asserts on the same records.

Where a mistake may cost points: on its own question (``mutants.QUESTION``, else its function's
grade cell), which must lose points, and on ``lm_ppo_training``, whose harness runs all four
functions. Every other grade cell must keep full marks.

``short_training``: the unit mutants' own and forbidden questions do not include
``lm_ppo_training``, so ``tests/test_ppo_lm_grading.py`` may grade them with a training run of
``SHORT_ITERATIONS`` iterations to stay fast; their training result is then not meaningful and is
not reported as such. The training question's own mutants, the correct variants and this
module's command line always train at full length.
"""
from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from autograder import REPO_ROOT
from autograder.hints import CorrectVariant, Mutant, apply_mutant, solution_cell

ASSIGNMENT = "ppo_lm"
TRAINING_CELL = "lm_ppo_training"
SHORT_ITERATIONS = 1
NUMERIC_MESSAGE = re.compile(r"The first wrong number is at position|The shape is \(")
MARKERS = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n", re.M)


@dataclass
class Graded:
    """One graded corpus notebook (a mutant, or one or more correct variants)."""
    name: str
    kind: str                       # "mutant" | "variant" | "answer_key" | "release"
    functions: tuple[str, ...] = ()
    question: str = ""              # the grade cell a mutant must lose points on
    hint: str = ""
    needs: str = ""
    short_training: bool = False
    lost: dict[str, float] = field(default_factory=dict)     # grade cell -> points lost
    outputs: dict[str, str] = field(default_factory=dict)    # grade cell -> failed tests' text
    failed: dict[str, list] = field(default_factory=dict)    # grade cell -> failed test names
    score: float = 0.0
    max_score: float = 0.0
    flags: list[dict] = field(default_factory=list)
    device: str = ""
    via: str = ""                   # "cli" | "api"
    seconds: float = 0.0
    result: dict = field(default_factory=dict)

    @property
    def killed(self) -> bool:
        return self.lost.get(self.question, 0.0) > 1e-9

    @property
    def collateral(self) -> dict[str, float]:
        """Points lost on cells the mistake has no business touching."""
        allowed = {self.question, TRAINING_CELL}
        return {c: p for c, p in self.lost.items() if p > 1e-9 and c not in allowed}

    @property
    def hint_shown(self) -> bool:
        return bool(self.hint) and self.hint in self.outputs.get(self.question, "")

    @property
    def numeric_shown(self) -> bool:
        return bool(NUMERIC_MESSAGE.search(self.outputs.get(self.question, "")))

    @property
    def applicable(self) -> bool:
        return self.needs != "cuda" or self.device.startswith("cuda")

    @property
    def grader_errors(self) -> list[dict]:
        return [f for f in self.flags if f.get("code") == "grader_error"]


# --- building submissions ------------------------------------------------------------------------

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


def question_of(mutant: Mutant) -> str:
    from autograder.suites.ppo_lm.mutants import QUESTION

    return QUESTION.get(mutant.name, mutant.function)


def write_corpus(assignment, directory: Path, mutants=(), variant_groups=(),
                 short_training: bool = False) -> list[tuple]:
    """One notebook per mutant, one per group of correct variants (at most one variant per
    function in a group); [(record, path)]."""
    out = []
    for m in mutants:
        path = directory / f"mutant-{m.name}.ipynb"
        changed = apply_mutant(solution_cell(assignment, m.function).source, m)
        path.write_text(json.dumps(submission_notebook(assignment, {m.function: changed})))
        question = question_of(m)
        out.append((Graded(m.name, "mutant", (m.function,), question, m.hint, m.needs,
                           short_training=short_training and question != TRAINING_CELL), path))
    for group in variant_groups:
        group = list(group)
        functions = [v.function for v in group]
        if len(set(functions)) != len(functions):
            raise ValueError("a group holds at most one variant per function")
        name = "+".join(v.name for v in group)
        path = directory / f"variant-{len(out):02d}.ipynb"
        path.write_text(json.dumps(submission_notebook(assignment, {v.function: v.source
                                                                    for v in group})))
        out.append((Graded(name, "variant", tuple(functions)), path))
    return out


def variant_groups(variants: list[CorrectVariant]) -> list[list[CorrectVariant]]:
    """The variants in as few notebooks as possible, one variant per function in each."""
    groups: list[list[CorrectVariant]] = []
    for v in variants:
        for g in groups:
            if all(x.function != v.function for x in g):
                g.append(v)
                break
        else:
            groups.append([v])
    return groups


# --- grading -------------------------------------------------------------------------------------

def fill(record: Graded, result: dict, via: str, seconds: float) -> Graded:
    for t in result["tests"]:
        cell = t["tags"][0] if t.get("tags") else ""
        lost = float(t["max_score"]) - float(t["score"])
        record.lost[cell] = round(record.lost.get(cell, 0.0) + lost, 6)
        if t["status"] != "passed":
            record.outputs[cell] = record.outputs.get(cell, "") + t.get("output", "") + "\n"
            record.failed.setdefault(cell, []).append(t["name"])
    extra = result.get("extra_data", {})
    record.flags = list(extra.get("flags", []))
    record.device = extra.get("device", "")
    record.score, record.max_score = float(result["score"]), float(extra.get("max_score", 0))
    record.via, record.seconds, record.result = via, round(seconds, 2), result
    return record


def sandbox_arguments() -> list[str]:
    from autograder.config import load_settings
    from autograder.sandbox.backends import BackendUnavailable, resolve_backend

    try:
        resolve_backend(load_settings(REPO_ROOT).sandbox)
        return []
    except BackendUnavailable:
        return ["--unsafe-no-sandbox"]


def grade_cli(record: Graded, path: Path,
              out_dir: Path) -> tuple[Graded, subprocess.CompletedProcess]:
    """Grade through the real command line, as a TA would (always full-length training)."""
    out = out_dir / f"{path.stem}.results.json"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", str(path), "--assignment", ASSIGNMENT,
         "--student", path.stem, "--out", str(out), *sandbox_arguments()],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"grading {path.name} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    record.short_training = False
    return fill(record, json.loads(out.read_text()), "cli", time.monotonic() - started), proc


@contextlib.contextmanager
def training_iterations(n: int | None):
    """The training harness runs ``n`` iterations while the block runs (None: unchanged)."""
    from autograder.suites.ppo_lm import training as T

    saved = T.ITERATIONS
    if n is not None:
        T.ITERATIONS = n
    try:
        yield
    finally:
        T.ITERATIONS = saved


def grade_api(records: list[tuple], out_dir: Path, pool=None) -> list[Graded]:
    """Grade many notebooks in this process with one shared worker pool."""
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
            with training_iterations(SHORT_ITERATIONS if record.short_training else None):
                result = grade_submission(path, ASSIGNMENT, student=path.stem,
                                          settings=settings, backend=backend, pool=pool)
            result.write(out_dir / f"{path.stem}.results.json")
            graded.append(fill(record, result.to_json(), "api", time.monotonic() - started))
    finally:
        if own:
            pool.close()
    return graded


# --- the report --------------------------------------------------------------------------------

def table(graded: list[Graded]) -> str:
    lines = [f"{'mistake':38} {'question':18} {'lost there':>10}  {'training':>8}  "
             f"{'lost elsewhere':16} shown", "-" * 120]
    for g in graded:
        if g.kind != "mutant":
            continue
        training = "-" if g.question == TRAINING_CELL else (
            "(short)" if g.short_training else f"{g.lost.get(TRAINING_CELL, 0.0):g}")
        elsewhere = ", ".join(f"{c} {p:g}" for c, p in g.collateral.items()) or "-"
        if g.hint_shown:
            shown = "hint: " + g.hint[:50] + ("..." if len(g.hint) > 50 else "")
        elif g.numeric_shown:
            shown = "numeric difference"
        else:
            shown = (g.outputs.get(g.question, "").strip().splitlines() or ["NOTHING"])[0][:60]
        lines.append(f"{g.name:38} {g.question:18} {g.lost.get(g.question, 0.0):10.2f}  "
                     f"{training:>8}  {elsewhere:16} {shown}")
    lines.append("")
    lines.append(f"{'correct variants (one notebook each line)':60} {'lost':>6}")
    for g in graded:
        if g.kind == "variant":
            total = sum(g.lost.values())
            lines.append(f"{g.name:60} {total:6.2f}" + ("" if total < 1e-9 else "   FALSE FAIL: "
                         + ", ".join(f"{c} {p:g}" for c, p in g.lost.items() if p > 1e-9)))
    mutants = [g for g in graded if g.kind == "mutant" and g.applicable]
    variants = [g for g in graded if g.kind == "variant"]
    killed = sum(g.killed for g in mutants)
    lines.append("")
    lines.append(f"kill rate: {killed}/{len(mutants)} mutants lose points on their own question")
    lines.append(f"collateral: {sum(bool(g.collateral) for g in mutants)} mutants lose points on "
                 "an unrelated question")
    full = [g for g in mutants if not g.short_training and g.question != TRAINING_CELL]
    if full:
        caught = sum(g.lost.get(TRAINING_CELL, 0) > 1e-9 for g in full)
        lines.append(f"training also lost by {caught} of the {len(full)} unit mutants trained at "
                     "full length")
    lines.append(f"false fails: {sum(sum(g.lost.values()) > 1e-9 for g in variants)} of "
                 f"{len(variants)} correct-variant notebooks lose points "
                 f"({sum(len(g.functions) for g in variants)} variants)")
    return "\n".join(lines)


def main() -> int:
    from autograder.assignments import load_assignment
    from autograder.suites.ppo_lm.mutants import CORRECT_VARIANTS, MUTANTS

    assignment = load_assignment(ASSIGNMENT, REPO_ROOT)
    with tempfile.TemporaryDirectory(prefix="ppo_lm-corpus-") as tmp:
        started = time.monotonic()
        records = write_corpus(assignment, Path(tmp), MUTANTS, variant_groups(CORRECT_VARIANTS))
        graded = grade_api(records, Path(tmp))
        print(table(graded))
        print(f"({len(graded)} notebooks graded in {time.monotonic() - started:.0f} s)")
    mutants = [g for g in graded if g.kind == "mutant" and g.applicable]
    ok = all(g.killed and not g.collateral for g in mutants) and \
        all(sum(g.lost.values()) < 1e-9 for g in graded if g.kind == "variant")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
