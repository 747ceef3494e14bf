"""The mutant corpus of ``ppo_lm``, graded: ``make mutants``
(``python -m autograder.suites.mutant_corpus --assignment ppo_lm``).

Builds one submission per mutant (the source notebook with that function's solution cell
changed as the mutant says) and submissions of the correct variants (solution cells replaced),
grades them like any submission (``grade_submission`` with a shared worker pool, or the real
command line), and reports for each: the points lost on every grade cell, whether the mistake
lost points on its own question and only where it may, and the message shown.
``tests/assignments/test_ppo_lm_grading.py`` asserts on the same records.

Where a mistake may cost points: on its own question (``mutants.QUESTION``, else its function's
grade cell), which must lose points, and on ``lm_ppo_training``, whose harness runs all four
functions. Every other grade cell must keep full marks.

``short_training``: the unit mutants' own and forbidden questions do not include
``lm_ppo_training``, so ``tests/assignments/test_ppo_lm_grading.py`` may grade them with a
training run of ``SHORT_ITERATIONS`` iterations to stay fast; their training result is then not
meaningful and is not reported as such. The training question's own mutants, the correct
variants and this module's command line always train at full length.
"""
from __future__ import annotations

import contextlib
import json
import tempfile
import time
from pathlib import Path

from autograder import REPO_ROOT
from autograder.hints import CorrectVariant, Mutant, apply_mutant, solution_cell
from autograder.suites import mutant_corpus
from autograder.suites.mutant_corpus import MutantGrade, submission_notebook

ASSIGNMENT = "ppo_lm"
TRAINING_CELL = "lm_ppo_training"
SHORT_ITERATIONS = 1


def question_of(mutant: Mutant) -> str:
    from .mutants import QUESTION

    return QUESTION.get(mutant.name, mutant.function)


# --- building submissions ------------------------------------------------------------------------

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
        out.append((MutantGrade(m.name, "mutant", (m.function,), question, (TRAINING_CELL,), m.hint,
                           m.needs, short_training=short_training and question != TRAINING_CELL),
                    path))
    for group in variant_groups:
        group = list(group)
        functions = [v.function for v in group]
        if len(set(functions)) != len(functions):
            raise ValueError("a group holds at most one variant per function")
        name = "+".join(v.name for v in group)
        path = directory / f"variant-{len(out):02d}.ipynb"
        path.write_text(json.dumps(submission_notebook(assignment, {v.function: v.source
                                                                    for v in group})))
        out.append((MutantGrade(name, "variant", tuple(functions)), path))
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

def grade_cli(record: MutantGrade, path: Path, out_dir: Path):
    """Grade through the real command line, as a TA would (always full-length training);
    ``(record, completed process)``."""
    return mutant_corpus.grade_cli(record, path, out_dir, ASSIGNMENT)


@contextlib.contextmanager
def training_iterations(n: int | None):
    """The training harness runs ``n`` iterations while the block runs (None: unchanged)."""
    from . import training as T

    saved = T.ITERATIONS
    if n is not None:
        T.ITERATIONS = n
    try:
        yield
    finally:
        T.ITERATIONS = saved


def grade_api(records: list[tuple], out_dir: Path, pool=None) -> list[MutantGrade]:
    """Grade many notebooks in this process with one shared worker pool; a record marked
    ``short_training`` trains for ``SHORT_ITERATIONS`` iterations."""
    return mutant_corpus.grade_api(
        records, ASSIGNMENT, out_dir, pool,
        around=lambda r: training_iterations(SHORT_ITERATIONS if r.short_training else None))


# --- the report --------------------------------------------------------------------------------

def table(graded: list[MutantGrade]) -> str:
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
    from .mutants import CORRECT_VARIANTS, MUTANTS

    assignment = load_assignment(ASSIGNMENT, REPO_ROOT)
    with tempfile.TemporaryDirectory(prefix="ppo_lm-corpus-") as tmp:
        started = time.monotonic()
        records = write_corpus(assignment, Path(tmp), MUTANTS, variant_groups(CORRECT_VARIANTS))
        graded = grade_api(records, Path(tmp))
        print(table(graded))
        print(f"({len(graded)} notebooks graded in {time.monotonic() - started:.0f} s)")
    return 0 if mutant_corpus.as_expected(graded) else 1
