"""The mutant corpus of ``ppo``, graded: ``make mutants``
(``python -m autograder.suites.mutant_corpus --assignment ppo``).

Builds one submission per mutant (the source notebook with that function's solution cell
changed as the mutant says) and per correct variant (the solution cell replaced), grades them
like any submission, and reports, for each: the points lost on every grade cell, whether the
mistake lost points on its own question and only where it may, and the message shown.
``tests/assignments/test_mutants.py`` and ``tests/assignments/test_correct_variants.py`` assert
on the same records.

Where a mistake may cost points: on the function's own grade cell, which must lose points, and
on the training cell whose harness runs that function (``reinforce_loss`` ->
``reinforce_training``; ``compute_gae`` and ``ppo_combined_loss`` -> ``ppo_training``): a
broken function may break training too. Every other grade cell must keep full marks.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from autograder import REPO_ROOT
from autograder.hints import (Mutant, apply_mutant, load_correct_variants, load_mutants,
                              solution_cell)
from autograder.suites import mutant_corpus
from autograder.suites.mutant_corpus import MutantGrade

ASSIGNMENT = "ppo"
TRAINING_CELL = {"reinforce_loss": "reinforce_training", "compute_gae": "ppo_training",
                 "ppo_combined_loss": "ppo_training"}


def record(name: str, kind: str, function: str, hint: str = "", needs: str = "") -> MutantGrade:
    """A corpus record: the function's own grade cell (named like the function) must lose
    points; the training cell whose harness runs it may."""
    return MutantGrade(name, kind, (function,), function, (TRAINING_CELL[function],), hint, needs)


# --- building submissions --------------------------------------------------------------------

def submission_notebook(assignment, function: str, new_source: str) -> dict:
    """The source notebook as JSON with ``function``'s solution cell replaced by ``new_source``."""
    return mutant_corpus.submission_notebook(assignment, {function: new_source})


def mutant_source(assignment, mutant: Mutant) -> str:
    return apply_mutant(solution_cell(assignment, mutant.function).source, mutant)


def write_corpus(assignment, directory: Path, mutants=None, variants=None) -> list[tuple]:
    """Write one notebook per mutant and variant; [(record, path)]."""
    mutants = load_mutants(assignment) if mutants is None else mutants
    variants = load_correct_variants(assignment) if variants is None else variants
    out = []
    for m in mutants:
        path = directory / f"mutant-{m.name}.ipynb"
        path.write_text(json.dumps(submission_notebook(assignment, m.function,
                                                       mutant_source(assignment, m))))
        out.append((record(m.name, "mutant", m.function, m.hint, m.needs), path))
    for v in variants:
        path = directory / f"variant-{v.name}.ipynb"
        path.write_text(json.dumps(submission_notebook(assignment, v.function, v.source)))
        out.append((record(v.name, "variant", v.function), path))
    return out


# --- grading ---------------------------------------------------------------------------------

def grade_cli(record: MutantGrade, path: Path, out_dir: Path) -> MutantGrade:
    """Grade through the real command line, as a TA would."""
    return mutant_corpus.grade_cli(record, path, out_dir, ASSIGNMENT)[0]


def grade_corpus(directory: Path, *, mutants=None, variants=None, via_cli: set[str] = frozenset(),
                 ) -> list[MutantGrade]:
    """Write and grade the corpus; the names in ``via_cli`` go through the command line."""
    from autograder.assignments import load_assignment

    assignment = load_assignment(ASSIGNMENT, REPO_ROOT)
    corpus = write_corpus(assignment, directory, mutants, variants)
    cli = [(r, p) for r, p in corpus if r.name in via_cli]
    api = [(r, p) for r, p in corpus if r.name not in via_cli]
    graded = {r.name: grade_cli(r, p, directory) for r, p in cli}
    graded.update({r.name: r for r in mutant_corpus.grade_api(api, ASSIGNMENT, directory)})
    return [graded[r.name] for r, _ in corpus]


# --- the report --------------------------------------------------------------------------------

def table(graded: list[MutantGrade]) -> str:
    mutants = [g for g in graded if g.kind == "mutant"]
    variants = [g for g in graded if g.kind == "variant"]
    lines = []
    if mutants:
        lines += [f"{'mistake':34} {'question':18} {'lost here':>9} {'lost elsewhere':22} shown",
                  "-" * 118]
        for g in mutants:
            elsewhere = ", ".join(f"{c} {p:g}" for c, p in g.lost.items()
                                  if p > 1e-9 and c != g.question) or "-"
            if not g.applicable:
                shown = f"(needs {g.needs}: equivalent on {g.device})"
            elif g.hint_shown:
                shown = "hint: " + g.hint[:60] + ("..." if len(g.hint) > 60 else "")
            elif g.numeric_shown:
                shown = "numeric difference"
            else:
                shown = "NOTHING SPECIFIC"
            lines.append(f"{g.name:34} {g.question:18} {g.lost.get(g.question, 0.0):9.2f} "
                         f"{elsewhere:22} {shown}")
        applicable = [g for g in mutants if g.applicable]
        killed = sum(g.killed for g in applicable)
        skipped = [g.name for g in mutants if not g.applicable]
        lines += [
            "",
            f"kill rate: {killed}/{len(applicable)} applicable mutants lose points on their own "
            f"question ({killed / max(len(applicable), 1):.0%})"
            + (f"; not applicable on this device: {', '.join(skipped)}" if skipped else ""),
            f"collateral: {sum(bool(g.collateral) for g in applicable)} mutants lose points on "
            "an unrelated question",
            f"hints: {sum(g.hint_shown for g in applicable)}/{len(applicable)} show their own "
            f"hint, {sum((not g.hint_shown) and g.numeric_shown for g in applicable)} only the "
            "numeric difference"]
    if variants:
        lines += ["", f"{'correct variant':34} {'question':18} {'lost':>9}"]
        for g in variants:
            total = sum(g.lost.values())
            lines.append(f"{g.name:34} {g.question:18} {total:9.2f}"
                         + ("" if total < 1e-9 else "   FALSE FAIL: "
                            + ", ".join(f"{c} {p:g}" for c, p in g.lost.items() if p > 1e-9)))
        false_fails = sum(sum(g.lost.values()) > 1e-9 for g in variants)
        lines += ["", f"false fails: {false_fails} of {len(variants)} correct variants lose "
                      "points"]
    return "\n".join(lines)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="ppo-corpus-") as tmp:
        started = time.monotonic()
        graded = grade_corpus(Path(tmp))
        print(table(graded))
        print(f"({len(graded)} notebooks graded in {time.monotonic() - started:.0f} s)")
    return 0 if mutant_corpus.as_expected(graded) else 1
