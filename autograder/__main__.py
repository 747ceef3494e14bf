"""The command line: ``python -m autograder grade|grade-course|gradescope-bundle``.

Exit codes of ``grade``: 0 whenever a result was recorded, whatever the score (unreadable
notebooks included); 2 for usage errors (no such file, unknown assignment, bad config); 3 when
no sandbox can run here and ``--unsafe-no-sandbox`` was not given.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import autograder  # noqa: F401  (blocks a slow, unused import before nbformat loads)

USAGE_ERROR = 2
NO_SANDBOX = 3


def student_from_path(path: Path) -> str:
    """nbgrader layout: .../submitted/<student>/<assignment>/<notebook>.ipynb (the path as given:
    links are not resolved, so a link never names another student)."""
    parts = Path(os.path.abspath(path)).parts
    if "submitted" in parts:
        i = len(parts) - 1 - parts[::-1].index("submitted")
        if i + 1 < len(parts) - 1:
            return parts[i + 1]
    return "anonymous"


def usage_error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return USAGE_ERROR


def cmd_grade(args) -> int:
    from autograder.assignments import list_assignments
    from autograder.config import ConfigError, load_settings
    from autograder.grade.submission import grade_submission
    from autograder.sandbox.backends import BackendUnavailable, resolve_backend

    path = Path(args.submission)
    if not os.path.lexists(path) or (path.is_dir() and not path.is_symlink()):
        return usage_error(f"no such file: {path}")   # a link or special file is graded: refused
    from autograder.course.paths import course_dir_of

    try:
        settings = load_settings(course_dir_of(args.course_dir))
    except (ConfigError, FileNotFoundError) as exc:
        return usage_error(str(exc))
    known = list_assignments(settings.course_dir)
    if args.assignment not in known:
        return usage_error(f"unknown assignment {args.assignment!r}; "
                           f"known: {', '.join(known) or 'none'}")
    backend = "unsafe" if args.unsafe_no_sandbox else None
    if backend is None:
        try:
            backend = resolve_backend(settings.sandbox)
        except BackendUnavailable as exc:
            print(f"error: no sandbox can run here ({exc}). Student code will not be run "
                  "unconfined; pass --unsafe-no-sandbox to grade anyway.", file=sys.stderr)
            return NO_SANDBOX
    from autograder.course.slot import limit_address_space, on_cpu

    if OWNS_PROCESS and on_cpu(args.device, settings.device):
        limit_address_space()       # bounds.SLOT_ADDRESS_SPACE_BYTES, as for a grade-course slot
    student = args.student or student_from_path(path)
    from autograder.report_table import Progress, print_result

    with Progress(f"grading {path.name} ({args.assignment}, student {student})"):
        result = grade_submission(path, args.assignment, student=student, settings=settings,
                                  device=args.device, backend=backend)
    if args.out:
        result.write(args.out)

    print_result(result)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m autograder",
                                     description="Grade PPO assignment notebooks.")
    sub = parser.add_subparsers(dest="command", required=True)
    grade = sub.add_parser("grade", help="grade one submitted notebook")
    grade.add_argument("submission", help="the student's .ipynb")
    grade.add_argument("--assignment", required=True, help="assignment name, e.g. ppo")
    grade.add_argument("--student", help="student id (default: from submitted/<id>/...)")
    grade.add_argument("--out", help="write the results JSON here")
    grade.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    from autograder.course.paths import COURSE_DIR_HELP

    grade.add_argument("--course-dir", help=COURSE_DIR_HELP)
    grade.add_argument("--unsafe-no-sandbox", action="store_true",
                       help="run student code with rlimits only (no isolation); "
                            "never for real grading")
    grade.set_defaults(func=cmd_grade)
    try:
        from autograder.commands import add_subcommands
    except ImportError:
        pass
    else:
        add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


# Process-wide limits (the address-space bound of ``grade``) are set only when this module is
# the program (``run``): ``main()`` called as a library, e.g. by a test, leaves its caller alone.
OWNS_PROCESS = False


def run() -> int:
    """The program: ``python -m autograder`` and the ``ppo-autograder`` command."""
    global OWNS_PROCESS
    OWNS_PROCESS = True
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    return main()


if __name__ == "__main__":
    sys.exit(run())
