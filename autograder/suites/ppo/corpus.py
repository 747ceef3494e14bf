"""The mutant corpus, graded: ``make mutants`` (``python -m autograder.suites.ppo.corpus``).

Builds one submission per mutant (the source notebook with that function's solution cell
changed as the mutant says) and per correct variant (the solution cell replaced), grades them
like any submission, and reports, for each: the points lost on every grade cell, whether the
mistake lost points on its own question and only where it may, and the message shown.
``tests/test_mutants.py`` and ``tests/test_correct_variants.py`` assert on the same records.

Where a mistake may cost points: on the function's own grade cell, which must lose points, and
on the training cell whose harness runs that function (``reinforce_loss`` ->
``reinforce_training``; ``compute_gae`` and ``ppo_combined_loss`` -> ``ppo_training``): a
broken function may break training too. Every other grade cell must keep full marks.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from autograder import REPO_ROOT
from autograder.hints import (Mutant, apply_mutant, load_correct_variants, load_mutants,
                              solution_cell)

ASSIGNMENT = "ppo"
OWN_CELL = {"reinforce_loss": "reinforce_loss", "compute_gae": "compute_gae",
            "ppo_combined_loss": "ppo_combined_loss"}
TRAINING_CELL = {"reinforce_loss": "reinforce_training", "compute_gae": "ppo_training",
                 "ppo_combined_loss": "ppo_training"}
NUMERIC_MESSAGE = re.compile(r"The first wrong number is at position|The shape is \(")
MARKERS = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n", re.M)


@dataclass
class Graded:
    """One graded corpus notebook."""
    name: str
    function: str
    kind: str                       # "mutant" | "variant"
    hint: str = ""
    needs: str = ""
    lost: dict[str, float] = field(default_factory=dict)     # grade cell -> points lost
    outputs: dict[str, str] = field(default_factory=dict)    # grade cell -> failed tests' text
    failed: dict[str, list] = field(default_factory=dict)    # grade cell -> failed test names
    max_scores: dict[str, float] = field(default_factory=dict)   # test name -> its max score
    flags: list[dict] = field(default_factory=list)
    device: str = ""
    via: str = ""                   # "cli" | "api"
    seconds: float = 0.0

    @property
    def own_cell(self) -> str:
        return OWN_CELL[self.function]

    @property
    def killed(self) -> bool:
        return self.lost.get(self.own_cell, 0.0) > 1e-9

    @property
    def collateral(self) -> dict[str, float]:
        """Points lost on cells the mistake has no business touching."""
        allowed = {self.own_cell, TRAINING_CELL[self.function]}
        return {c: p for c, p in self.lost.items() if p > 1e-9 and c not in allowed}

    @property
    def hint_shown(self) -> bool:
        return bool(self.hint) and self.hint in self.outputs.get(self.own_cell, "")

    @property
    def numeric_shown(self) -> bool:
        return bool(NUMERIC_MESSAGE.search(self.outputs.get(self.own_cell, "")))

    @property
    def applicable(self) -> bool:
        """False for a mistake that cannot show on this device (e.g. wrong device on a CPU)."""
        return self.needs != "cuda" or self.device.startswith("cuda")

    @property
    def grader_errors(self) -> list[dict]:
        return [f for f in self.flags if f.get("code") == "grader_error"]


# --- building submissions --------------------------------------------------------------------

def submission_notebook(assignment, function: str, new_source: str) -> dict:
    """The source notebook as JSON with ``function``'s solution cell replaced by ``new_source``
    (nbgrader's solution markers removed, as a student's copy has none)."""
    cell_id = solution_cell(assignment, function).id
    nb = json.loads(Path(assignment.source_path).read_text())
    hits = 0
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == cell_id:
            cell["source"] = MARKERS.sub("", new_source)
            cell["outputs"], cell["execution_count"] = [], None
            hits += 1
    if hits != 1:
        raise LookupError(f"the source notebook has {hits} cells with grade_id {cell_id}")
    return nb


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
        out.append((Graded(m.name, m.function, "mutant", hint=m.hint, needs=m.needs), path))
    for v in variants:
        path = directory / f"variant-{v.name}.ipynb"
        path.write_text(json.dumps(submission_notebook(assignment, v.function, v.source)))
        out.append((Graded(v.name, v.function, "variant"), path))
    return out


# --- grading ---------------------------------------------------------------------------------

def _fill(record: Graded, result: dict, via: str, seconds: float) -> Graded:
    for t in result["tests"]:
        cell = t["tags"][0] if t.get("tags") else ""
        lost = float(t["max_score"]) - float(t["score"])
        record.lost[cell] = round(record.lost.get(cell, 0.0) + lost, 6)
        record.max_scores[t["name"]] = float(t["max_score"])
        if t["status"] != "passed":
            record.outputs[cell] = record.outputs.get(cell, "") + t.get("output", "") + "\n"
            record.failed.setdefault(cell, []).append(t["name"])
    record.flags = list(result.get("extra_data", {}).get("flags", []))
    record.device = result.get("extra_data", {}).get("device", "")
    record.via, record.seconds = via, round(seconds, 2)
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


def grade_cli(record: Graded, path: Path, out_dir: Path) -> Graded:
    """Grade through the real command line, as a TA would."""
    out = out_dir / f"{path.stem}.results.json"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", str(path), "--assignment", ASSIGNMENT,
         "--student", path.stem, "--out", str(out), *sandbox_arguments()],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"grading {path.name} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return _fill(record, json.loads(out.read_text()), "cli", time.monotonic() - started)


def grade_api(records: list[tuple], out_dir: Path) -> list[Graded]:
    """Grade many notebooks in this process (``grade_submission``), one after the other,
    sharing the kit's worker pool when it has one."""
    from autograder.config import load_settings
    from autograder.grade.submission import grade_submission
    from autograder.sandbox.backends import BackendUnavailable, resolve_backend

    settings = load_settings(REPO_ROOT)
    try:
        backend = resolve_backend(settings.sandbox)
    except BackendUnavailable:
        backend = "unsafe"
    pool = _pool(settings)
    graded = []
    try:
        for record, path in records:
            started = time.monotonic()
            kwargs = {"pool": pool} if pool is not None else {}
            result = grade_submission(path, ASSIGNMENT, student=path.stem, settings=settings,
                                      backend=backend, **kwargs)
            result.write(out_dir / f"{path.stem}.results.json")
            graded.append(_fill(record, result.to_json(), "api", time.monotonic() - started))
    finally:
        if pool is not None and hasattr(pool, "close"):
            pool.close()
    return graded


def _pool(settings):
    try:
        from autograder.grade.pool import WorkerPool  # the kit's reusable workers, if present
    except ImportError:
        return None
    return WorkerPool(settings)


def grade_corpus(directory: Path, *, mutants=None, variants=None, via_cli: set[str] = frozenset(),
                 ) -> list[Graded]:
    """Write and grade the corpus; the names in ``via_cli`` go through the command line."""
    from autograder.assignments import load_assignment

    assignment = load_assignment(ASSIGNMENT, REPO_ROOT)
    corpus = write_corpus(assignment, directory, mutants, variants)
    cli = [(r, p) for r, p in corpus if r.name in via_cli]
    api = [(r, p) for r, p in corpus if r.name not in via_cli]
    graded = {r.name: grade_cli(r, p, directory) for r, p in cli}
    graded.update({r.name: r for r in grade_api(api, directory)})
    return [graded[r.name] for r, _ in corpus]


# --- the report --------------------------------------------------------------------------------

def table(graded: list[Graded]) -> str:
    mutants = [g for g in graded if g.kind == "mutant"]
    variants = [g for g in graded if g.kind == "variant"]
    lines = []
    if mutants:
        lines += [f"{'mistake':34} {'question':18} {'lost here':>9} {'lost elsewhere':22} shown",
                  "-" * 118]
        for g in mutants:
            elsewhere = ", ".join(f"{c} {p:g}" for c, p in g.lost.items()
                                  if p > 1e-9 and c != g.own_cell) or "-"
            if not g.applicable:
                shown = f"(needs {g.needs}: equivalent on {g.device})"
            elif g.hint_shown:
                shown = "hint: " + g.hint[:60] + ("..." if len(g.hint) > 60 else "")
            elif g.numeric_shown:
                shown = "numeric difference"
            else:
                shown = "NOTHING SPECIFIC"
            lines.append(f"{g.name:34} {g.own_cell:18} {g.lost.get(g.own_cell, 0.0):9.2f} "
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
            lines.append(f"{g.name:34} {g.own_cell:18} {total:9.2f}"
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
    mutants = [g for g in graded if g.kind == "mutant" and g.applicable]
    ok = all(g.killed and not g.collateral for g in mutants) and \
        all(sum(g.lost.values()) < 1e-9 for g in graded if g.kind == "variant")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
