"""Calibrate an assignment's training tests on its answer key: ``make calibrate``.

    python -m autograder.calibration --assignment NAME [--seeds N] [...]

The machinery every assignment's calibration shares: the answer key as the trusted reference
worker runs it (``reference_namespace``), a variant of it (``with_override``), one trusted
training run served locally (``train``), distribution summaries (``summary``), the generated
documents that several assignments write into (``write_keeping_sections``), the command line
every assignment's calibration starts from (``command_line``, then ``set_up``) and the end it
shares (``finish``: print, refuse on a control, write).

What is calibrated, with which seeds, controls and rules, is the assignment's own: the module
``calibration.py`` of its folder (``assignments/NAME/calibration.py``, loaded through
``autograder.plugins``) defines ``main(argv) -> int``, which this command calls with the whole
command line (``--assignment`` included). It writes the folder's ``thresholds.json``, which the
assignment's training tests read (``autograder.training_support.load_thresholds``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from autograder import REPO_ROOT


def reference_namespace(assignment) -> dict:
    """The answer key as the trusted reference worker runs it: every code cell but the grade
    cells (``reference_cells``: set-up and solution cells in full, other given cells' definitions),
    then the mutants (``autograder.hints.mutant_cells``), executed cell by cell in one namespace
    (a cell that raises is skipped, as the worker does)."""
    from autograder.grade.submission import reference_cells
    from autograder.hints import mutant_cells

    ns: dict = {"__name__": "__main__"}
    for cell in reference_cells(assignment) + mutant_cells(assignment):
        try:
            exec(compile(cell["source"], f"<cell {cell['id']}>", "exec"), ns)
        except Exception:
            pass
    for name in assignment.solution_functions.values():
        if not callable(ns.get(name)):
            raise RuntimeError(f"the answer key does not define {name}")
    return ns


def with_override(ns: dict, source: str) -> dict:
    out = dict(ns)
    exec(source, out)
    return out


def train(trainer, ns: dict, reference: dict, params: dict, check: dict) -> dict:
    """One trusted training run as the suite makes it: ``trainer`` (a trainer module of the
    assignment's folder), the student's functions taken from ``ns`` and served through the
    worker's request handler (``local.local_student``), each reply checked against
    ``reference``; a run the checks stop gives ``{"error": ...}``."""
    from autograder.harness import local, relay

    try:
        return trainer.train(local.local_student(ns, reference, check), **params)
    except relay.HarnessStop as stop:
        return {"error": str(stop)}


def summary(values) -> dict:
    a = np.asarray(values, dtype=np.float64)
    pct = {f"p{q}": float(np.percentile(a, q)) for q in (1, 5, 25, 50, 75, 95, 99)}
    return {"n": int(a.size), "min": float(a.min()), **pct, "max": float(a.max()),
            "mean": float(a.mean()), "sd": float(a.std(ddof=1)) if a.size > 1 else 0.0}


def write_keeping_sections(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, keeping the sections other assignments' calibrations wrote
    there (``<!-- calibration:<assignment>:begin ... -->`` to ``...:end -->``)."""
    import re

    old = path.read_text() if path.exists() else ""
    kept = re.findall(r"<!-- calibration:[a-z0-9_]+:begin.*?<!-- calibration:[a-z0-9_]+:end -->",
                      old, flags=re.S)
    path.write_text(text.rstrip() + "\n" + "".join(f"\n{k}\n" for k in kept))


def command_line(assignment: str, doc: str | None, *, seeds: int,
                 controls: int) -> argparse.ArgumentParser:
    """The options every assignment's calibration takes: ``--assignment`` (must be
    ``assignment``), ``--seeds`` (reference runs), ``--controls`` (seeds per negative control),
    ``--course-dir`` and ``--no-write``. The assignment adds its own before ``set_up``."""
    ap = argparse.ArgumentParser(prog=f"python -m autograder.calibration --assignment {assignment}",
                                 description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assignment", default=assignment)
    ap.add_argument("--seeds", type=int, default=seeds)
    ap.add_argument("--controls", type=int, default=controls,
                    help="seeds for each negative control")
    ap.add_argument("--course-dir", default=str(REPO_ROOT))
    ap.add_argument("--no-write", action="store_true", help="print only; change no file")
    return ap


def set_up(ap: argparse.ArgumentParser, argv: list[str] | None):
    """Parse ``argv`` with ``ap`` (from ``command_line``) and load what every calibration
    needs, with torch on one thread: ``(args, settings, assignment, reference namespace)``."""
    args = ap.parse_args(argv)
    expected = ap.get_default("assignment")
    if args.assignment != expected:
        ap.error(f"this calibration is for {expected}")

    import torch

    from autograder.assignments import load_assignment
    from autograder.config import load_settings

    torch.set_num_threads(1)
    settings = load_settings(args.course_dir)
    assignment = load_assignment(expected, settings.course_dir)
    return args, settings, assignment, reference_namespace(assignment)


def finish(args, record: dict, text: str, bad: list, thresholds_file: Path,
           write_docs) -> int:
    """The end of every calibration: print ``text``; refuse (exit 1, nothing written) when a
    negative control named in ``bad`` reaches the thresholds; unless ``--no-write``, write
    ``record`` to ``thresholds_file`` and call ``write_docs(docs folder)``. Returns the exit
    status."""
    print(text)
    if bad:
        print(f"negative controls reach the thresholds: {bad}", file=sys.stderr)
        return 1
    if not args.no_write:
        thresholds_file.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        written = write_docs(Path(args.course_dir) / "docs")
        print(f"wrote {thresholds_file.relative_to(REPO_ROOT)} and {written}")
    return 0


def torch_version() -> str:
    """The torch a calibration ran with, for its record."""
    import torch

    return str(torch.__version__)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m autograder.calibration", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 add_help=False)
    ap.add_argument("--assignment", required=True)
    ap.add_argument("--course-dir", default=str(REPO_ROOT))
    ap.add_argument("--make", action="store_true",
                    help="the arguments of `make calibrate` (MAKE_ARGS of the calibration.py)")
    args, _ = ap.parse_known_args(argv)
    from autograder.assignments import UnknownAssignment, load_assignment
    from autograder.plugins import assignment_module, has_module

    try:
        assignment = load_assignment(args.assignment, Path(args.course_dir))
    except UnknownAssignment as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not has_module(assignment, "calibration"):
        print(f"{args.assignment}: no calibration.py in {assignment.folder}, nothing to calibrate")
        return 0 if args.make else 2
    module = assignment_module(assignment, "calibration")
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.make:
        # MAKE_ARGS first: what else the command line says wins
        argv = list(getattr(module, "MAKE_ARGS", ())) + [a for a in argv if a != "--make"]
    return int(module.main(argv))


if __name__ == "__main__":
    sys.exit(main())
