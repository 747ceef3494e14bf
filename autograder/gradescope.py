"""The Gradescope autograder bundle: ``python -m autograder gradescope-bundle A --out FILE.zip``.

Gradescope unzips the bundle into ``/autograder/source``, runs ``setup.sh`` there once (as root)
to build the image, and for every submission runs ``run_autograder``, which must leave
``/autograder/results/results.json``. The zip's root therefore holds:

    setup.sh, run_autograder        the two scripts Gradescope runs
    requirements.txt                the kit's runtime pins (requirements.txt above its
                                    "# --- development only" line; installed into
                                    /autograder/venv, torch from PyTorch's CPU wheel index)
    nbgrader_config.py              the course settings (cohort seed, limits)
    autograder/                     the kit
    assignments/<assignment>/       the assignment's folder: hidden suite, trainers, thresholds
                                    (``autograder.plugins.assignment_folder``: the course's,
                                    else the kit's)
    source/<assignment>/            the source notebook (the answer key and the points)

so that ``/autograder/source`` is a course directory. ``setup.sh`` first provisions a Python
>= 3.11 (the image's ``python3``, else ``python3.11`` from apt or the deadsnakes PPA) and
stops with a clear message when it cannot. It then locks the kit down by allow-list
(``lock_down_sh()``): everything is root-only, then only the kit's runtime
(``backends.runtime_paths()``, the list the bubblewrap binds use) is made readable again.
Student code runs only in the kit's sandboxed worker: bubblewrap never mounts anything else,
and the fallback sandbox runs it as an unprivileged uid that can read nothing else.
``/autograder/results`` is
root-only too, so only the trusted parent writes the result.

Visibility comes from ``nbgrader_config.py``: ``c.PPOKit.gradescope_visibility`` (the whole
result), ``c.PPOKit.gradescope_test_visibility`` (``{grade cell id or test name: visibility}``;
others get the overall value) and ``c.PPOKit.gradescope_stdout_visibility``. Each is one of
Gradescope's ``visible``, ``after_due_date``, ``after_published``, ``hidden``.
``/autograder/results/stdout`` gets a short log for the staff (the submission, the sandbox, the
score per question, the flags); ``run_autograder`` prints it too, which Gradescope shows staff.

For testing, ``AUTOGRADER_ROOT`` replaces ``/autograder`` in both scripts,
``AUTOGRADER_SKIP_INSTALL=1`` makes ``setup.sh`` install nothing, and ``AUTOGRADER_PYTHON``
names the Python ``run_autograder`` uses instead of ``/autograder/venv/bin/python``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import stat
import sys
import time
import zipfile
from pathlib import Path

from autograder import ASSIGNMENTS_DIR, REPO_ROOT
from autograder.plugins import assignment_folder
from autograder.points import fmt_points
from autograder.results import GradingResult

SETUP_SH = r"""#!/usr/bin/env bash
# Gradescope runs this once, as root, in /autograder/source when it builds the autograder.
set -euo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
SRC="$ROOT/source"

# --- Provisioning: a Python >= 3.11, CPU-only torch, the runtime pins ---------------------
# The pins (numpy, matplotlib, nbgrader) need Python >= 3.11. Gradescope's default image
# (Ubuntu 22.04) has python3 = 3.10, so the first Python >= 3.11 found is used: the image's
# python3 if it is new enough, else python3.11 from Ubuntu's archive, else from the deadsnakes
# PPA. requirements.txt holds the runtime pins only (the bundle leaves the development ones
# out); torch comes from PyTorch's CPU wheel index (the container has no GPU).
die() { echo "setup.sh: ERROR: $*" >&2; exit 1; }
python_ok() {  # python_ok CMD: CMD runs and is Python >= 3.11
  local v
  v=$("$1" --version 2>&1) || return 1
  [[ $v =~ ^Python\ 3\.([0-9]+) ]] && (( BASH_REMATCH[1] >= 11 ))
}
find_python() {  # prints the first Python >= 3.11 on PATH
  local c
  for c in python3 python3.13 python3.12 python3.11; do
    if command -v "$c" >/dev/null 2>&1 && python_ok "$c"; then command -v "$c"; return 0; fi
  done
  return 1
}
provision() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed (is the network up?)"
  apt-get install -y -qq python3 python3-venv || echo "python3-venv could not be installed"
  # The sandbox. Without it the grader uses its uid-drop fallback and says so in every result.
  apt-get install -y -qq bubblewrap || echo "bubblewrap could not be installed; using the fallback sandbox"
  local py
  if ! py=$(find_python); then
    echo "python3 is $(python3 --version 2>&1 || echo missing); the pins need Python >= 3.11: installing python3.11"
    apt-get install -y -qq python3.11 python3.11-venv \
      || { apt-get install -y -qq software-properties-common \
           && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update -qq \
           && apt-get install -y -qq python3.11 python3.11-venv; } \
      || true
    py=$(find_python) || die "no Python >= 3.11 could be installed (tried Ubuntu's python3.11 and the deadsnakes PPA). Use a Gradescope base image with Python >= 3.11, or install one in setup.sh."
  fi
  echo "using $py ($("$py" --version 2>&1))"
  "$py" -m venv "$ROOT/venv" || die "$py -m venv failed (is python3.11-venv installed?)"
  local pip="$ROOT/venv/bin/pip"
  local torch
  torch=$(grep -E '^torch[[:space:]]*==' "$SRC/requirements.txt" | head -n 1) \
    || die "requirements.txt pins no torch"
  "$pip" install -q --disable-pip-version-check --index-url https://download.pytorch.org/whl/cpu "$torch" \
    || die "installing $torch from PyTorch's CPU index failed"
  grep -vE '^torch[[:space:]]*==' "$SRC/requirements.txt" > "$ROOT/requirements-no-torch.txt"
  "$pip" install -q --disable-pip-version-check -r "$ROOT/requirements-no-torch.txt" \
    || die "installing the runtime requirements failed"
}

if [ "${AUTOGRADER_SKIP_INSTALL:-0}" = 1 ]; then
  # Testing: run_autograder will use the existing $AUTOGRADER_PYTHON; install nothing.
  [ -x "${AUTOGRADER_PYTHON:?AUTOGRADER_PYTHON must name the Python of an existing environment}" ]
else
  provision
fi
# --- end of provisioning ------------------------------------------------------------------

__LOCK_DOWN__
mkdir -p "$ROOT/results"
chmod 0700 "$ROOT/results"
echo "autograder set up in $ROOT"
"""  # noqa: E501 (shell lines: apt, echo and die messages, kept one line each)

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
"""  # noqa: E501 (shell lines: the run command and the fallback JSON stay one line)

EXCLUDED_PARTS = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints"}
DEV_MARKER = "# --- development only"
VISIBILITIES = ("visible", "after_due_date", "after_published", "hidden")


def runtime_requirements(text: str) -> str:
    """The runtime part of ``requirements.txt``: every line above the ``DEV_MARKER`` line."""
    lines = text.splitlines(keepends=True)
    cut = next((i for i, line in enumerate(lines) if line.startswith(DEV_MARKER)), None)
    if cut is None:
        raise ValueError(f"requirements.txt has no {DEV_MARKER!r} line separating the runtime "
                         "pins from the development ones")
    return "".join(lines[:cut])


def visibility_options(course_dir: Path) -> dict:
    """``{"visibility", "stdout_visibility", "tests": {cell or test name: visibility}}`` from
    ``c.PPOKit.gradescope_*`` in ``nbgrader_config.py``; ValueError names a wrong value."""
    from traitlets.config.loader import PyFileConfigLoader

    kit = PyFileConfigLoader("nbgrader_config.py", path=str(course_dir)).load_config().PPOKit
    options = {"visibility": kit.get("gradescope_visibility", "visible"),
               "stdout_visibility": kit.get("gradescope_stdout_visibility", "hidden"),
               "tests": dict(kit.get("gradescope_test_visibility", {}))}
    for key, value in [("gradescope_visibility", options["visibility"]),
                       ("gradescope_stdout_visibility", options["stdout_visibility"])] + [
            (f"gradescope_test_visibility[{k!r}]", v) for k, v in options["tests"].items()]:
        if value not in VISIBILITIES:
            raise ValueError(f"c.PPOKit.{key} in nbgrader_config.py must be one of "
                             f"{', '.join(VISIBILITIES)}, not {value!r}")
    return options


def apply_visibility(result: GradingResult, options: dict) -> GradingResult:
    """``result`` with Gradescope's visibility set: for a test, its own name first, then its
    grade cell, then the overall value."""
    result.visibility = options["visibility"]
    result.stdout_visibility = options["stdout_visibility"]
    for t in result.tests:
        t.visibility = options["tests"].get(t.name, options["tests"].get(
            t.grade_cell, options["visibility"]))
    return result


def staff_log(result: GradingResult, notebook: str) -> str:
    """A short log for the staff: what was graded, where, the score per question, the flags."""
    details = result.details
    lines = [f"student {details.student or '?'}, assignment {details.assignment or '?'}, "
             f"notebook {notebook or '-'}",
             f"sandbox {details.sandbox or '-'}, device {details.device or '-'}, "
             f"{result.execution_time:.1f} s",
             f"score {fmt_points(result.score)} / {fmt_points(details.max_score)}"]
    for cell, v in details.grade_cells.items():
        lines.append(f"  {cell}: {fmt_points(v['score'])} / {fmt_points(v['max_score'])}")
    for f in details.flags:
        message = re.sub(r"\s+", " ", f.message)
        lines.append(f"flag {f.code}: {message[:300]}")
    return "\n".join(lines) + "\n"


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
        "requirements.txt": runtime_requirements(
            (REPO_ROOT / "requirements.txt").read_text()).encode(),
        "nbgrader_config.py": course_dir / "nbgrader_config.py",
    }
    folder = assignment_folder(assignment, course_dir)
    if folder is None:
        raise FileNotFoundError(f"no assignment folder assignments/{assignment}/ in "
                                f"{course_dir} nor in the kit")
    for base, root in (("autograder", REPO_ROOT / "autograder"),
                       (f"{ASSIGNMENTS_DIR}/{assignment}", folder),
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
    """The batch's choice of notebook; looks one level down when the top level has none.
    Nothing is followed: the submission folder is walked without links (a git-based upload
    keeps them), and a linked or special notebook is refused like in ``grade-course``."""
    from autograder.course.batch import choose_notebook

    job = choose_notebook(folder, assignment, student, base=folder)
    if job.problem and job.flags[-1]["code"] == "no_notebook":
        nested = sorted({Path(d) for d, dirs, files in os.walk(folder)     # never follows links
                         if ".ipynb_checkpoints" not in Path(d).parts
                         and any(f.endswith(".ipynb") for f in files)} - {folder})
        if len(nested) == 1:
            job = choose_notebook(nested[0], assignment, student, base=folder)
    return job


def run(root: Path, assignment: str) -> int:
    """Grade the Gradescope submission under ``root`` into ``root/results/results.json``."""
    from autograder.config import load_settings
    from autograder.course.batch import finish, zero_result
    from autograder.outcomes import GRADER_ERROR_TEXT
    from autograder.course.paths import grade_cell_points
    from autograder.results import write_atomic

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
    try:
        result = apply_visibility(result, visibility_options(course_dir))
    except ValueError as exc:       # a wrong setting: the default visibility, and staff are told
        result.details.add_flag("grader_error", str(exc))
    result.write(out)       # Gradescope's results.json: the JSON is the wire format
    log = staff_log(result, "" if job.problem else job.notebook.name)
    write_atomic(root / "results" / "stdout", log)
    print(log, end="")
    return 0


def cmd_gradescope_bundle(args) -> int:
    """``python -m autograder gradescope-bundle ASSIGNMENT --out FILE.zip [--course-dir DIR]``
    (the course whose ``source/<assignment>/`` and ``nbgrader_config.py`` go in)."""
    course_dir = Path(args.course_dir)     # resolved by the CLI (course/paths.course_dir_of)
    try:
        visibility_options(course_dir)
        out = build_bundle(args.assignment, args.out, course_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with zipfile.ZipFile(out) as zf:
        n = len(zf.namelist())
    print(f"wrote {out} ({n} files, {out.stat().st_size // 1024} KiB): upload it as the "
          f"Gradescope autograder for {args.assignment}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m autograder.gradescope run --root ROOT --assignment A``
    (used by run_autograder)."""
    parser = argparse.ArgumentParser(prog="python -m autograder.gradescope")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--root", type=Path, default=Path("/autograder"))
    r.add_argument("--assignment", required=True)
    args = parser.parse_args(argv)
    return run(args.root.resolve(), args.assignment)


if __name__ == "__main__":
    sys.exit(main())
