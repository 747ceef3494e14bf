"""``make demo``: a demo cohort graded end to end in a scratch course directory.

``python -m autograder.course.demo [--assignment ppo] [--dest build/demo-course] [--jobs N]``
copies the course (``nbgrader_config.py``, ``source/``, ``release/``) into the scratch
directory, writes a cohort into ``submitted/<student>/<assignment>/`` (a correct one, the blank
release, correct variants, common mistakes made from the assignment's mutants, a changed locked
cell, a renamed notebook, an extra notebook, an unreadable file), runs ``grade-course``
(results, gradebook, feedback, report),
then ``nbgrader export``, and prints the table and where everything is. Running it again
rewrites only what changed, so unchanged submissions are not regraded.

Which mistakes and which partial answers the cohort shows is the assignment's own recipe:
``demo.py`` of its folder (``assignments/<assignment>/demo.py``: ``DEMO_MUTANTS``,
``PARTIAL_FUNCTIONS``). The cohort builders here are also used by the benchmark and the tests.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from autograder import REPO_ROOT
from autograder.course.paths import CoursePaths, course_paths
from autograder.course.release import read_nb, student_version  # noqa: F401  (re-exported)

ASSIGNMENT = "ppo"             # the default of the builders below and of --assignment
DEMO_DIR = REPO_ROOT / "build" / "demo-course"
MARKER = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", re.M)

def copy_course(dest: Path, assignment: str = ASSIGNMENT, origin: Path = REPO_ROOT) -> CoursePaths:
    """A scratch course directory: the config, and the assignment's source/ and release/."""
    dest.mkdir(parents=True, exist_ok=True)
    _copy_if_changed(origin / "nbgrader_config.py", dest / "nbgrader_config.py")
    for room in ("source", "release"):
        src = origin / room / assignment
        for path in sorted(src.rglob("*")) if src.is_dir() else []:
            if path.is_file() and ".ipynb_checkpoints" not in path.parts:
                _copy_if_changed(path, dest / room / assignment / path.relative_to(src))
    return course_paths(dest)


def _copy_if_changed(src: Path, dst: Path) -> None:
    if not dst.exists() or dst.read_bytes() != src.read_bytes():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def solutions(paths: CoursePaths, assignment: str = ASSIGNMENT) -> dict[str, str]:
    """``{solution cell grade_id: the answer key's code}`` (solution markers removed)."""
    out = {}
    for cell in read_nb(paths.source_notebook(assignment)).cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") and cell.cell_type == "code":
            out[meta["grade_id"]] = MARKER.sub("", cell.source)
    return out


def answer_id(paths: CoursePaths, function: str, assignment: str = ASSIGNMENT) -> str:
    """The grade_id of the solution cell that defines ``function``."""
    pattern = re.compile(rf"^def\s+{re.escape(function)}\s*\(", re.M)
    ids = [k for k, src in solutions(paths, assignment).items() if pattern.search(src)]
    if len(ids) != 1:
        raise LookupError(f"no single solution cell defines {function}")
    return ids[0]


def suite_module(assignment: str = ASSIGNMENT, name: str = "mutants", course_dir=None):
    """The module ``name`` of the assignment's folder (``mutants``: ``MUTANTS``,
    ``CORRECT_VARIANTS``; ``demo``: the demo recipe), or None."""
    from autograder.plugins import assignment_folder, load_module

    folder = assignment_folder(assignment, course_dir)
    if folder is None or not (folder / f"{name}.py").is_file():
        return None
    return load_module(assignment, folder, name)


def submission(paths: CoursePaths, answers: dict[str, str], *, locked_edit: str = "",
               assignment: str = ASSIGNMENT) -> bytes:
    """A student notebook: the release with the given solution cells filled in.

    ``locked_edit`` names a locked cell whose source the student changed."""
    import nbformat

    nb = student_version(paths, assignment)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in answers:
            cell.source = answers[gid]
        if locked_edit and gid == locked_edit:
            cell.source = cell.source + "\n# the student edited this read-only cell\n"
    return nbformat.writes(nb).encode()


def mutated(paths: CoursePaths, mutant, assignment: str = ASSIGNMENT) -> dict[str, str]:
    """All answers correct except ``mutant``'s function, with the mutant's change applied."""
    answers = solutions(paths, assignment)
    gid = answer_id(paths, mutant.function, assignment)
    if mutant.find is None:
        answers[gid] = mutant.replace
    else:
        if answers[gid].count(mutant.find) != 1:
            raise LookupError(f"mutant {mutant.name} does not apply to the answer key")
        answers[gid] = answers[gid].replace(mutant.find, mutant.replace)
    return answers


def applicable_mutants(paths: CoursePaths, assignment: str = ASSIGNMENT) -> list:
    """The suite's mutants that apply to the answer key and show on the CPU."""
    module = suite_module(assignment, course_dir=paths.root)
    found = []
    for m in getattr(module, "MUTANTS", []) if module else []:
        if getattr(m, "needs", ""):
            continue
        try:
            mutated(paths, m, assignment)
        except LookupError:
            continue
        found.append(m)
    return found


def demo_cohort(paths: CoursePaths, assignment: str = ASSIGNMENT) -> dict[str, dict[str, bytes]]:
    """``{student: {file name: bytes}}``: at least 12 submissions of the kinds a class hands in."""
    nb = f"{assignment}.ipynb"
    correct = solutions(paths, assignment)
    blank = submission(paths, {}, assignment=assignment)
    right = submission(paths, correct, assignment=assignment)
    cohort: dict[str, dict[str, bytes]] = {
        "ada": {nb: right},
        "ben": {nb: blank},
        "dee": {"my_ppo_final.ipynb": right},                          # renamed
        "eve": {nb: submission(paths, correct, locked_edit=_given_cell(paths, assignment),
                               assignment=assignment)},                # changed a locked cell
        "fay": {nb: right, f"{assignment}-copy.ipynb": blank},           # an extra notebook
        "gus": {nb: b"this is not a notebook\n"},                        # unreadable
    }
    recipe = suite_module(assignment, "demo", paths.root)
    partial = getattr(recipe, "PARTIAL_FUNCTIONS", [])
    if partial:
        ids = {answer_id(paths, fn, assignment) for fn in partial}
        cohort["hal"] = {nb: submission(paths, {k: v for k, v in correct.items() if k in ids},
                                        assignment=assignment)}
    module = suite_module(assignment, course_dir=paths.root)
    variants = getattr(module, "CORRECT_VARIANTS", []) if module else []
    if variants:                      # correct, written differently: first variant per function
        answers, used = dict(correct), set()
        for v in variants:
            if v.function not in used:
                answers[answer_id(paths, v.function, assignment)] = v.source
                used.add(v.function)
        cohort["cy"] = {nb: submission(paths, answers, assignment=assignment)}
    by_name = {m.name: m for m in applicable_mutants(paths, assignment)}
    chosen = [by_name[n] for n in getattr(recipe, "DEMO_MUTANTS", []) if n in by_name]
    chosen += [m for m in by_name.values() if m not in chosen][: max(0, 6 - len(chosen))]
    for i, m in enumerate(chosen):
        cohort[f"m{i:02d}_{m.name}"] = {nb: submission(paths, mutated(paths, m, assignment),
                                                       assignment=assignment)}
    return cohort


def _given_cell(paths: CoursePaths, assignment: str) -> str:
    """A locked code cell that is not a grade cell (given code), preferring one with a def."""
    found = [(("def " not in cell.source), cell.metadata["nbgrader"]["grade_id"])
             for cell in read_nb(paths.source_notebook(assignment)).cells
             if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("locked")
             and not cell.metadata["nbgrader"].get("grade")]
    return min(found)[1] if found else ""


def write_cohort(paths: CoursePaths, cohort: dict[str, dict[str, bytes]],
                 assignment: str = ASSIGNMENT) -> int:
    """Write the submissions; files already identical are left alone, strays removed.
    Returns how many files were written."""
    written = 0
    for student, files in cohort.items():
        folder = paths.submitted / student / assignment
        folder.mkdir(parents=True, exist_ok=True)
        for stray in folder.glob("*.ipynb"):
            if stray.name not in files:
                stray.unlink()
        for name, data in files.items():
            path = folder / name
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
                written += 1
    return written


def nbgrader_env() -> dict[str, str]:
    """The environment for running nbgrader: this venv's bin/ first on PATH (nbgrader runs the
    ``alembic`` command when it creates a gradebook)."""
    import os

    bindir = str(Path(sys.executable).parent)
    return dict(os.environ, PATH=os.pathsep.join([bindir, os.environ.get("PATH", "")]))


def nbgrader(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run this venv's ``nbgrader`` with ``args`` in the course directory ``cwd``."""
    exe = Path(sys.executable).with_name("nbgrader")
    return subprocess.run([str(exe), *args], cwd=cwd, env=nbgrader_env(), capture_output=True,
                          text=True, timeout=timeout)


def nbgrader_export(paths: CoursePaths, out: Path) -> subprocess.CompletedProcess:
    """``nbgrader export --to out`` in the course directory."""
    return nbgrader("export", f"--to={out}", cwd=paths.root, timeout=300)


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from autograder.course.batch import cmd_grade_course

    parser = argparse.ArgumentParser(prog="python -m autograder.course.demo")
    parser.add_argument("--assignment", default=ASSIGNMENT)
    parser.add_argument("--dest", type=Path, default=DEMO_DIR)
    parser.add_argument("--jobs", type=int, default=None)
    args = parser.parse_args(argv)
    console = Console()
    paths = copy_course(args.dest.resolve(), args.assignment)
    cohort = demo_cohort(paths, args.assignment)
    changed = write_cohort(paths, cohort, args.assignment)
    console.print(f"demo course: {paths.root} ({len(cohort)} submissions, {changed} file(s) new "
                  "or changed)", soft_wrap=True)
    status = cmd_grade_course(argparse.Namespace(assignment=args.assignment, course_dir=paths.root,
                                                 jobs=args.jobs, force=False))
    if status:
        return status
    csv = paths.root / "grades.csv"
    done = nbgrader_export(paths, csv)
    if done.returncode:
        console.print(f"[red]nbgrader export failed[/]:\n{done.stderr[-2000:]}")
        return 1
    console.print(f"nbgrader export: {csv}")
    print(csv.read_text().rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
