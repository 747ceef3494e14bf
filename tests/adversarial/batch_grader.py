"""The corpus's grader for ``grade-course``: the kit's ``grade_submission`` with the hidden tests
of the function questions only (the training questions cost about 10 s of CPU per submission,
and the corpus's one-by-one grading already runs them where a case needs them).

A slot imports this module as ``batch_grader:grade`` (``PYTHONPATH`` holds this folder). The
trimmed suite is made once by the test (``functions_only``) in the folder that the environment
variable ``ADVERSARIAL_FUNCTIONS_SUITE`` names.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

SUITE_ENV = "ADVERSARIAL_FUNCTIONS_SUITE"


def functions_only(asg, suite: Path):
    """``asg`` with the hidden tests of the function questions only: a copy, in ``suite``, of
    the assignment's folder with each test file that runs no training (and every module the
    tests import relatively), and only the grade cells they test."""
    suite.mkdir(exist_ok=True)
    kept = set()
    for f in sorted(Path(asg.folder).iterdir()):
        if f.is_file() and not f.name.startswith("test_") and not (suite / f.name).exists():
            shutil.copyfile(f, suite / f.name)
    for f in sorted(Path(asg.folder).glob("test_*.py")):
        text = f.read_text()
        if ".harness(" in text or ".train(" in text:   # a training test
            continue
        if not (suite / f.name).exists():
            shutil.copyfile(f, suite / f.name)
        kept.update(re.findall(r'^GRADE_CELL = "([\w]+)"', text, re.M))
    return dataclasses.replace(asg, folder=suite,
                               grade_cells=tuple(g for g in asg.grade_cells if g.id in kept))


def grade(path: Path, assignment: str, *, settings, pool=None, **kwargs):
    """``grade_submission`` against the trimmed suite, sharing the slot's worker pool."""
    from autograder.assignments import load_assignment
    from autograder.grade import submission

    trimmed = functions_only(load_assignment(assignment, settings.course_dir),
                             Path(os.environ[SUITE_ENV]))
    real = submission.load_assignment
    submission.load_assignment = lambda name, course_dir: trimmed
    try:
        return submission.grade_submission(path, assignment, settings=settings, pool=pool,
                                           **kwargs)
    finally:
        submission.load_assignment = real
