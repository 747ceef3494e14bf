"""The gradebook bridge: results JSON -> nbgrader's own gradebook (SQLite, ``settings.db_url``).

Scores go in the way ``nbgrader autograde`` records them (``SaveAutoGrades``): one
``SubmittedAssignment`` per student, its ``SubmittedNotebook`` and one ``Grade`` per grade cell,
with the autograder's points in ``Grade.auto_score``. A manual score a grader gave is kept, and
marks the grade for review, as nbgrader does. So ``nbgrader export`` writes the cohort CSV and
formgrader shows the scores. Only the grade-course coordinator writes here, one transaction per
submission.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from autograder.course.kinds import flag_codes, is_flagged
from autograder.course.paths import CoursePaths, grade_cell_points
from autograder.results import GradingResult



@dataclass
class SyncSummary:
    written: int = 0      # submissions whose rows changed
    unchanged: int = 0
    failed: dict[str, str] = field(default_factory=dict)   # student -> why their row failed


def open_gradebook(db_url: str, course_id: str):
    """nbgrader's Gradebook. A new database runs the ``alembic`` command, which lives next to
    this Python (the venv's bin/, not always on PATH)."""
    import os
    import sys

    from nbgrader.api import Gradebook

    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    return Gradebook(db_url, course_id)


def ensure_assignment(gb, db_url: str, paths: CoursePaths, assignment: str) -> str:
    """Create the assignment, its notebook and cells from the source notebook if the gradebook
    lacks them (as ``nbgrader generate_assignment`` would). Returns the notebook's name."""
    from nbgrader.api import MissingEntry

    nb_path = paths.source_notebook(assignment)
    notebook = nb_path.stem
    points = grade_cell_points(nb_path)
    try:
        have = {c.name: c.max_score for c in gb.find_notebook(notebook, assignment).grade_cells}
    except MissingEntry:
        have = None
    if have == points:
        return notebook
    gb.update_or_create_assignment(assignment)
    gb.db.commit()              # SaveCells writes through its own connection
    save_cells(nb_path, paths, assignment, notebook, db_url)
    gb.db.expire_all()
    return notebook


def save_cells(nb_path: Path, paths: CoursePaths, assignment: str, notebook: str,
               db_url: str) -> None:
    """Run ``generate_assignment``'s preprocessors up to ``SaveCells`` on the source notebook, in
    memory: the gradebook then holds the same grade, solution and source cells (with the same
    checksums) as after ``nbgrader generate_assignment``."""
    import nbformat
    from nbgrader.preprocessors import (CheckCellMetadata, ClearOutput, ClearSolutions,
                                        ComputeChecksums, LockCells, SaveCells)
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(paths.root)).load_config()
    nb = nbformat.read(str(nb_path), as_version=nbformat.NO_CONVERT)
    resources = {"nbgrader": {"notebook": notebook, "assignment": assignment, "db_url": db_url}}
    for step in (LockCells, ClearSolutions, ClearOutput, CheckCellMetadata, ComputeChecksums,
                 SaveCells):
        nb, resources = step(config=config).preprocess(nb, resources)


def read_timestamp(folder: Path, base: Path | None = None):
    """The submission time nbgrader's ``collect``/``submit`` left in ``timestamp.txt``, or None.
    The file is the student's claim when it came inside their upload (README "Submission
    times"); it is read as untrusted bytes: a regular file reached from ``base`` (default: the
    folder) without links, at most ``bounds.SMALL_FILE_MAX_BYTES``."""
    from nbgrader.utils import parse_utc

    from autograder import bounds
    from autograder.load import untrusted

    try:
        raw = untrusted.read_regular(folder / "timestamp.txt", folder if base is None else base,
                                     bounds.SMALL_FILE_MAX_BYTES)
        return parse_utc(raw.decode("utf-8").strip())
    except (OSError, ValueError, TypeError, OverflowError, untrusted.Refused):
        return None


def cell_scores(result: GradingResult) -> dict[str, float]:
    """``{grade cell: score}`` of a result (its ``grade_cells``, else summed over its tests)."""
    cells = result.details.grade_cells
    if cells:
        return {k: v["score"] for k, v in cells.items()}
    totals: dict[str, float] = {}
    for t in result.tests:
        totals[t.grade_cell] = totals.get(t.grade_cell, 0.0) + t.score
    return totals


def late_penalties(paths: CoursePaths):
    """nbgrader's own ``AssignLatePenalties``, configured by the course's ``nbgrader_config.py``
    (``c.LateSubmissionPlugin.penalty_method``, or ``c.AssignLatePenalties.plugin_class``)."""
    from nbgrader.preprocessors import AssignLatePenalties
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(paths.root)).load_config()
    assigner = AssignLatePenalties(config=config)
    assigner.init_plugin()
    return assigner


def late_penalty(assigner, submission, snb, student_id: str):
    """The penalty ``nbgrader autograde`` would record for this submitted notebook: None when
    on time (or no due date), else the plugin's penalty clipped to [0, score]. Reads the
    submission's current scores and lateness (``total_seconds_late``: timestamp vs due date)."""
    seconds = submission.total_seconds_late
    if assigner is None or not seconds or seconds <= 0:
        return None
    penalty = assigner.plugin_inst.late_submission_penalty(student_id, snb.score, seconds)
    return None if penalty is None else assigner._check_late_penalty(snb, penalty)


def record_result(gb, result: GradingResult, assignment: str, notebook: str, timestamp=None,
                  assigner=None) -> bool:
    """Write one result's grade-cell scores as auto scores, in one transaction.

    Adds the student and the submission when missing; records the submission time (nbgrader's
    ``timestamp.txt``) and, through ``assigner`` (``late_penalties``), nbgrader's late penalty,
    as ``nbgrader autograde`` does. Returns whether anything changed."""
    from nbgrader.api import (Comment, Grade, MissingEntry, Student, SubmittedAssignment,
                              SubmittedNotebook)

    db = gb.db
    student_id = result.details.student
    if not student_id:
        raise ValueError("the result names no student")
    flags = flag_codes(result)
    scores = cell_scores(result)
    changed = False
    try:
        try:
            student = gb.find_student(student_id)
        except MissingEntry:
            student = Student(id=student_id)
            db.add(student)
            changed = True
        try:
            submission = gb.find_submission(assignment, student_id)
        except MissingEntry:
            target = gb.find_assignment(assignment)
            with db.no_autoflush:
                submission = SubmittedAssignment(assignment=target, student=student,
                                                 timestamp=timestamp)
                for nb in target.notebooks:   # mirrors Gradebook.add_submission
                    snb = SubmittedNotebook(notebook=nb, assignment=submission)
                    for cell in nb.grade_cells:
                        Grade(cell_id=cell.id, notebook=snb)
                    for cell in nb.solution_cells:
                        Comment(cell_id=cell.id, notebook=snb)
                    for cell in nb.task_cells:
                        Comment(cell_id=cell.id, notebook=snb)
                        Grade(cell_id=cell.id, notebook=snb)
                db.add(submission)
            db.flush()
            changed = True
        if timestamp is not None and submission.timestamp != timestamp.replace(tzinfo=None):
            submission.timestamp = timestamp
            changed = True
        snb = next(s for s in submission.notebooks if s.name == notebook)
        for grade in snb.grades:
            auto = scores.get(grade.name, 0.0)
            review = grade.manual_score is not None or "grader_error" in flags
            if grade.auto_score != auto or grade.needs_manual_grade != review:
                grade.auto_score, grade.needs_manual_grade = auto, review
                changed = True
        db.flush()                     # the scores and lateness the penalty is computed from
        db.refresh(snb)
        db.refresh(submission)
        penalty = late_penalty(assigner, submission, snb, student_id)
        if snb.late_submission_penalty != penalty:
            snb.late_submission_penalty = penalty
            changed = True
        # formgrader's "flagged": set for findings, never cleared (a TA may have set it)
        if (is_flagged(result) or "grader_error" in flags) and not snb.flagged:
            snb.flagged = True
            changed = True
        if changed:
            db.commit()
        else:
            db.rollback()
        return changed
    except BaseException:
        db.rollback()
        raise


def sync_gradebook(db_url: str, paths: CoursePaths, assignment: str,
                   students: list[str], folders: dict[str, str] | None = None) -> SyncSummary:
    """Record every listed student's ``results.json`` in the gradebook (idempotent).
    ``folders`` maps a student id to its folder in ``submitted/`` when they differ. A failure
    with one student's row is theirs (``summary.failed``); the others are still recorded."""
    summary = SyncSummary()
    with open_gradebook(db_url, paths.course_id) as gb:
        notebook = ensure_assignment(gb, db_url, paths, assignment)
        assigner = late_penalties(paths)
        for student in students:
            try:
                result = GradingResult.read(paths.results(student, assignment))
            except (OSError, ValueError):
                continue
            try:
                result.details.student = student        # the folder name rules
                folder = (folders or {}).get(student, student)
                stamp = read_timestamp(paths.submitted / folder / assignment, paths.submitted)
                if record_result(gb, result, assignment, notebook, stamp, assigner):
                    summary.written += 1
                else:
                    summary.unchanged += 1
            except Exception as exc:
                summary.failed[student] = (f"the gradebook row was not written: "
                                           f"{type(exc).__name__}: {exc}")[:500]
    return summary
