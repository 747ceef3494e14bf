"""The Gradescope autograder bundle: ``python -m autograder gradescope-bundle A --out FILE.zip``.

Gradescope unzips the bundle into ``/autograder/source``, runs ``setup.sh`` there once (as root)
to build the image, and for every submission runs ``run_autograder``, which must leave
``/autograder/results/results.json``. The zip's root therefore holds:

    setup.sh, run_autograder        the two scripts Gradescope runs
    requirements.txt                the kit's pins (installed into /autograder/venv)
    nbgrader_config.py              the course settings (cohort seed, limits)
    autograder/                     the kit, with its hidden suites
    source/<assignment>/            the source notebook (the answer key and the points)

so that ``/autograder/source`` is a course directory. ``setup.sh`` locks it down by allow-list
(``lock_down_sh()``): everything is root-only, then only the kit's runtime
(``backends.runtime_paths()``, the list the bubblewrap binds use) is made readable again. Student
code runs only in the kit's sandboxed worker: bubblewrap never mounts anything else, and the
fallback sandbox runs it as an unprivileged uid that can read nothing else. ``/autograder/results`` is
root-only too, so only the trusted parent writes the result.

For testing, ``AUTOGRADER_ROOT`` replaces ``/autograder`` in both scripts,
``AUTOGRADER_SKIP_INSTALL=1`` makes ``setup.sh`` install nothing, and ``AUTOGRADER_PYTHON``
names the Python ``run_autograder`` uses instead of ``/autograder/venv/bin/python``.
"""
from __future__ import annotations

import argparse
import json
import stat
import sys
import time
import zipfile
from pathlib import Path

from autograder import REPO_ROOT

SETUP_SH = r"""#!/usr/bin/env bash
# Gradescope runs this once, as root, in /autograder/source when it builds the autograder.
set -euo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
SRC="$ROOT/source"

if [ "${AUTOGRADER_SKIP_INSTALL:-0}" = 1 ]; then
  # Testing: run_autograder will use the existing $AUTOGRADER_PYTHON; install nothing.
  [ -x "${AUTOGRADER_PYTHON:?AUTOGRADER_PYTHON must name the Python of an existing environment}" ]
else
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq python3 python3-venv python3-pip
  # The sandbox. Without it the grader uses its uid-drop fallback and says so in every result.
  apt-get install -y -qq bubblewrap || echo "bubblewrap could not be installed; using the fallback sandbox"
  python3 -m venv "$ROOT/venv"
  "$ROOT/venv/bin/pip" install -q --disable-pip-version-check -r "$SRC/requirements.txt"
fi

__LOCK_DOWN__
mkdir -p "$ROOT/results"
chmod 0700 "$ROOT/results"
echo "autograder set up in $ROOT"
"""

RUN_AUTOGRADER = r"""#!/usr/bin/env bash
# Gradescope runs this for every submission: grade /autograder/submission/*.ipynb into
# /autograder/results/results.json.
set -uo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
OUT="$ROOT/results/results.json"
mkdir -p "$ROOT/results"
rm -f "$OUT"
cd "$ROOT/source"
"${AUTOGRADER_PYTHON:-$ROOT/venv/bin/python}" -m autograder.gradescope run --root "$ROOT" --assignment "__ASSIGNMENT__"
status=$?
if [ ! -s "$OUT" ]; then
  # The grader could not even start: Gradescope still gets a result that says so.
  printf '{"score": 0, "output": "The autograder failed to start (exit status %s). Your course staff have been told; please contact them.", "tests": [], "extra_data": {"flags": [{"code": "grader_error", "message": "run_autograder: exit %s"}]}}\n' "$status" "$status" > "$OUT"
fi
exit 0
"""

EXCLUDED_PARTS = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints"}


def lock_down_sh() -> str:
    """The lock-down block of ``setup.sh``: an allow-list. All of ``$SRC`` becomes root-only;
    then only the runtime (``runtime_paths()``) is readable again, with search permission on
    the directories that lead to it. A file added to the bundle later stays root-only."""
    from autograder.sandbox.backends import runtime_paths

    paths = sorted(runtime_paths())
    parents = sorted({str(Path(p).parent) for p in paths} - {"."})
    lines = [
        "# Lock-down by allow-list: nothing under $SRC is readable to other users but the kit's",
        "# runtime (autograder.sandbox.backends.runtime_paths(), also what bubblewrap binds).",
        "lock_down() {",
        '  chmod -R go-rwx "$SRC"',
        '  chmod 0711 "$SRC"' + "".join(f' "$SRC/{d}"' for d in parents),
        "  local p",
        "  for p in " + " ".join(paths) + "; do",
        '    if [ -e "$SRC/$p" ]; then chmod -R go+rX "$SRC/$p"; fi',
        "  done",
        "}",
        "lock_down",
    ]
    return "\n".join(lines)


def setup_script() -> str:
    """``setup.sh`` with its lock-down block."""
    return SETUP_SH.replace("__LOCK_DOWN__", lock_down_sh())


def bundle_files(course_dir: Path, assignment: str) -> dict[str, Path | bytes]:
    """``{name in the zip: file path or bytes}`` for the bundle."""
    source = course_dir / "source" / assignment
    if not any(source.glob("*.ipynb")):
        raise FileNotFoundError(f"no source notebook in {source}")
    files: dict[str, Path | bytes] = {
        "setup.sh": setup_script().encode(),
        "run_autograder": RUN_AUTOGRADER.replace("__ASSIGNMENT__", assignment).encode(),
        "requirements.txt": REPO_ROOT / "requirements.txt",
        "nbgrader_config.py": course_dir / "nbgrader_config.py",
    }
    for base, root in (("autograder", REPO_ROOT / "autograder"),
                       (f"source/{assignment}", source)):
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and not EXCLUDED_PARTS & set(rel.parts) and path.suffix != ".pyc":
                files[f"{base}/{rel.as_posix()}"] = path
    return files


def build_bundle(assignment: str, out: Path, course_dir: Path = REPO_ROOT) -> Path:
    """Write the Gradescope zip; returns its path."""
    files = bundle_files(Path(course_dir).resolve(), assignment)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            data = content if isinstance(content, bytes) else content.read_bytes()
            executable = name in ("setup.sh", "run_autograder")
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = ((0o755 if executable else 0o644) | stat.S_IFREG) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    tmp.replace(out)
    return out


def student_id(root: Path) -> str:
    """The submitter's Gradescope id (it seeds the hidden inputs), from submission_metadata."""
    try:
        meta = json.loads((root / "submission_metadata.json").read_text())
        user = (meta.get("users") or [{}])[0]
        return str(user.get("id") or user.get("email") or meta.get("id") or "gradescope")
    except (OSError, ValueError, AttributeError):
        return "gradescope"


def find_notebook(folder: Path, assignment: str, student: str):
    """The batch's choice of notebook; looks one level down when the top level has none."""
    from autograder.course.batch import choose_notebook

    job = choose_notebook(folder, assignment, student)
    if job.problem and not any(folder.glob("*.ipynb")):
        nested = sorted({p.parent for p in folder.rglob("*.ipynb")
                         if ".ipynb_checkpoints" not in p.parts})
        if len(nested) == 1:
            job = choose_notebook(nested[0], assignment, student)
    return job


def run(root: Path, assignment: str) -> int:
    """Grade the Gradescope submission under ``root`` into ``root/results/results.json``."""
    from autograder.config import load_settings
    from autograder.course.batch import GRADER_ERROR_TEXT, finish, zero_result
    from autograder.course.paths import grade_cell_points

    started = time.monotonic()
    course_dir = root / "source"
    out = root / "results" / "results.json"
    student = student_id(root)
    settings = load_settings(course_dir)
    points = grade_cell_points(next(iter(sorted((course_dir / "source" / assignment)
                                                .glob("*.ipynb")))))
    job = find_notebook(root / "submission", assignment, student)
    if job.problem:
        result = zero_result(job, assignment, points, code=job.flags[-1]["code"],
                             message=job.problem,
                             student_message=f"Nothing was graded: {job.problem}. Upload your "
                                             f"notebook as {assignment}.ipynb and resubmit.")
    else:
        try:
            from autograder.grade.submission import grade_submission

            result = finish(grade_submission(job.notebook, assignment, student=student,
                                             settings=settings), job)
        except Exception as exc:   # grade_submission records its own errors; this is a last guard
            result = zero_result(job, assignment, points, code="grader_error",
                                 message=f"{type(exc).__name__}: {exc}",
                                 student_message=GRADER_ERROR_TEXT)
    result.execution_time = time.monotonic() - started
    result.write(out)
    return 0


def cmd_gradescope_bundle(args) -> int:
    """``python -m autograder gradescope-bundle ASSIGNMENT --out FILE.zip [--course-dir DIR]``."""
    course_dir = Path(getattr(args, "course_dir", None) or REPO_ROOT)
    try:
        out = build_bundle(args.assignment, args.out, course_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with zipfile.ZipFile(out) as zf:
        n = len(zf.namelist())
    print(f"wrote {out} ({n} files, {out.stat().st_size // 1024} KiB): upload it as the "
          f"Gradescope autograder for {args.assignment}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m autograder.gradescope run --root ROOT --assignment A`` (used by run_autograder)."""
    parser = argparse.ArgumentParser(prog="python -m autograder.gradescope")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--root", type=Path, default=Path("/autograder"))
    r.add_argument("--assignment", required=True)
    args = parser.parse_args(argv)
    return run(args.root.resolve(), args.assignment)


if __name__ == "__main__":
    sys.exit(main())
