"""The CLI's cohort commands: ``grade-course``, ``cluster-certs``, ``gradescope-bundle`` and
``list-assignments``.

``add_subcommands(subparsers)`` registers them on ``python -m autograder``; each sub-parser's
``func`` is the command (``args -> exit status``). This module is the edge of the program: it
imports the packages it wires, and none of them imports it.
"""
from __future__ import annotations

from pathlib import Path


def add_subcommands(subparsers) -> None:
    """Add ``grade-course``, ``cluster-certs``, ``gradescope-bundle`` and ``list-assignments``."""
    from autograder.course.paths import COURSE_DIR_HELP

    p = subparsers.add_parser(
        "grade-course", help="grade every submission of an assignment in an nbgrader course",
        description="Grade submitted/<student>/<assignment>/*.ipynb, then write the gradebook, "
                    "feedback pages and the cohort report. Already graded, unchanged "
                    "submissions are skipped; a killed run is finished by running it again.")
    p.add_argument("assignment")
    p.add_argument("--course-dir", type=Path, default=None, help=COURSE_DIR_HELP)
    p.add_argument("--jobs", "-j", type=int, default=None,
                   help="submissions graded at once (default: c.PPOKit.jobs)")
    p.add_argument("--force", action="store_true", help="regrade submissions already graded")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where student code computes (default: c.PPOKit.device)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="grade on a Dask cluster: tls://HOST:PORT (Dask's TLS settings apply)")
    p.add_argument("--insecure-scheduler", action="store_true",
                   help="allow a plain tcp:// scheduler, on a network where every host is trusted")
    p.set_defaults(func=_grade_course)

    c = subparsers.add_parser(
        "cluster-certs", help="make a CA and TLS certificates for a small Dask cluster")
    c.add_argument("out", type=Path, help="the folder to write them into (created 0700)")
    c.add_argument("--host", action="append", default=[],
                   help="a host name or address the certificates are valid for (repeatable)")
    c.set_defaults(func=_cluster_certs)

    g = subparsers.add_parser(
        "gradescope-bundle", help="build the Gradescope autograder zip for an assignment")
    g.add_argument("assignment")
    g.add_argument("--out", type=Path, required=True, help="the zip file to write")
    g.add_argument("--course-dir", type=Path, default=None, help=COURSE_DIR_HELP)
    g.set_defaults(func=_gradescope_bundle)

    a = subparsers.add_parser(
        "list-assignments", help="print the course's assignments, one a line",
        description="Every NAME with source/NAME/NAME.ipynb in the course and an assignment "
                    "folder assignments/NAME/ (the course's, else the kit's).")
    a.add_argument("--course-dir", type=Path, default=None, help=COURSE_DIR_HELP)
    a.set_defaults(func=_list_assignments)


def _resolve_course_dir(args) -> bool:
    """``args.course_dir`` by the one rule (``paths.course_dir_of``); False after an error."""
    import sys

    from autograder.course.paths import course_dir_of

    try:
        args.course_dir = course_dir_of(args.course_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    return True


def _grade_course(args) -> int:
    from autograder.course.batch import cmd_grade_course

    return cmd_grade_course(args) if _resolve_course_dir(args) else 2


def _cluster_certs(args) -> int:
    from autograder.course.certs import cmd_cluster_certs

    return cmd_cluster_certs(args)


def _gradescope_bundle(args) -> int:
    from autograder.gradescope import cmd_gradescope_bundle

    return cmd_gradescope_bundle(args) if _resolve_course_dir(args) else 2


def _list_assignments(args) -> int:
    from autograder.assignments import list_assignments

    if not _resolve_course_dir(args):
        return 2
    for name in list_assignments(args.course_dir):
        print(name)
    return 0
