"""Every outcome code the kit records, with its text for staff and for students: one registry.

A flag in a result is a ``Flag(code, message)``, ``{"code": <code>, "message": <detail>}`` in
the results JSON. Its code is declared once, here, with:

- ``title``: a few words for people (the feedback page, the report);
- ``staff``: what it means and what course staff might do;
- ``student``: what a student reads instead of the recorded detail, or ``""`` to show the
  detail (details that could leak internals, such as a grader error's traceback, are replaced);
- ``category``: ``"unread"`` (nothing could be graded), ``"error"`` (the kit failed, a regrade
  is owed), ``"note"`` (not an integrity finding), or ``"integrity"`` (worth a look);
- ``serious``: shown first and counted as a problem in the report;
- ``flagged``: worth a staff member's look (the summary's "flagged"); by default, every
  ``integrity`` and ``note`` outcome.

Every module builds flags with ``flag(code, detail)`` (plain data) or ``Flag.of(code, detail)``,
which refuse an unknown code; ``tests/grade/test_outcomes.py`` also fails on any code written as a
literal in the kit that this registry lacks.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    code: str
    title: str
    staff: str
    student: str = ""
    category: str = "integrity"      # "unread" | "error" | "note" | "integrity"
    serious: bool = False
    flagged: bool | None = None      # None: category is "integrity" or "note"

    @property
    def needs_a_look(self) -> bool:
        if self.flagged is None:
            return self.category in ("integrity", "note")
        return self.flagged


GRADER_ERROR_TEXT = ("This submission could not be fully graded because of an error in the "
                     "grader; your course staff have been told and will regrade it.")


class OutcomeCollection:
    """The registry: ``OUTCOMES[code]``, ``code in OUTCOMES``, iteration in declaration order."""

    def __init__(self, outcomes: list[Outcome]):
        self._by_code: dict[str, Outcome] = {}
        for o in outcomes:
            if o.code in self._by_code:
                raise ValueError(f"outcome {o.code!r} declared twice")
            if o.category not in ("unread", "error", "note", "integrity"):
                raise ValueError(f"outcome {o.code!r}: unknown category {o.category!r}")
            self._by_code[o.code] = o

    def __getitem__(self, code: str) -> Outcome:
        return self._by_code[code]

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def __iter__(self):
        return iter(self._by_code.values())

    def codes(self, category: str) -> frozenset[str]:
        return frozenset(o.code for o in self if o.category == category)

    def student_text(self, code: str, detail: str) -> str:
        """What a student reads for this flag."""
        o = self._by_code.get(code)
        return (o.student if o and o.student else str(detail))[:1000]

    def needs_a_look(self, code: str) -> bool:
        """An integrity finding or a failure staff should see; unknown codes count."""
        o = self._by_code.get(code)
        return True if o is None else o.needs_a_look

    def serious(self, code: str) -> bool:
        o = self._by_code.get(code)
        return bool(o and o.serious)

    def title(self, code: str) -> str:
        o = self._by_code.get(code)
        return o.title if o else code.replace("_", " ")


def _o(code, title, staff, student="", category="integrity", serious=False,
       flagged=None) -> Outcome:
    return Outcome(code, title, staff, student, category, serious, flagged)


OUTCOMES = OutcomeCollection([
    # --- nothing could be graded -------------------------------------------------------------
    _o("unreadable_notebook", "Notebook could not be read",
       "The file is not a notebook the kit can parse (bad JSON, wrong schema, over the size or "
       "structure caps); it scores 0 with the reason.", category="unread", serious=True),
    _o("no_notebook", "No notebook", "The student's folder holds no .ipynb.",
       category="unread", serious=True),
    _o("ambiguous_submission", "Could not tell which notebook to grade",
       "Several notebooks and none with the assignment's name; rename the right one and regrade.",
       category="unread", serious=True),
    _o("not_a_regular_file", "Not a regular file",
       "A submitted path is a link, FIFO, device or folder; it was not followed or read. A link "
       "to the answer key or a classmate is an attempt, not an accident.",
       category="unread", serious=True, flagged=True),
    # --- the kit failed ------------------------------------------------------------------------
    _o("grader_error", "Grading problem",
       "An error in the kit itself; the detail has the traceback. The submission is regraded on "
       "the next grade-course run.", student=GRADER_ERROR_TEXT, category="error", serious=True),
    _o("worker_lost", "Grading problem",
       "Grading this submission ended two Dask workers; it was not tried a third time.",
       student=GRADER_ERROR_TEXT, category="error", serious=True),
    # --- notes -----------------------------------------------------------------------------------
    _o("device_fallback", "Device",
       "CUDA was asked for but not usable where the worker ran; graded on the CPU.",
       category="note", flagged=False),
    _o("renamed_notebook", "Notebook renamed",
       "The only notebook had another name; it was graded.", category="note"),
    _o("extra_notebooks", "More than one notebook",
       "Other notebooks were submitted beside the expected one; only that one was graded.",
       category="note"),
    # --- integrity findings ----------------------------------------------------------------------
    _o("undecodable_folder_name", "Folder name not readable as text",
       "The student's folder name is not valid UTF-8; graded as undecodable-<hash>. Rename the "
       "folder and regrade to give the student their own id."),
    _o("gradebook_error", "Gradebook row not written",
       "The coordinator could not write this student's gradebook row; the result stands.",
       category="note"),
    _o("feedback_error", "Feedback page not written",
       "The coordinator could not write this student's feedback page or autograded notebook.",
       category="note"),
    _o("magic_lines_dropped", "Lines not run at grading",
       "Shell and magic lines (!cmd, %magic, get_ipython()) were dropped; the feedback lists them.",
       category="note", flagged=False),
    _o("fallback_exposed", "Sandbox could read course files",
       "Graded under the fallback sandbox while course or kit files were readable to its uid "
       "(fallback_exposures() lists them); chmod them as the README says.", category="note"),
    _o("locked_cell_modified", "A read-only cell was changed",
       "A locked cell differs from the source (nbgrader checksum); the source's cell was used.",
       serious=True),
    _o("locked_cell_deleted", "A read-only cell was deleted",
       "A locked cell is missing; the source's cell was used."),
    _o("grade_cell_modified", "A check cell was changed",
       "A grade cell was edited; grade cells are replaced by the hidden tests, so it had no "
       "effect."),
    _o("grade_cell_deleted", "A check cell was deleted",
       "A grade cell is missing; its hidden tests ran anyway."),
    _o("grade_cell_duplicated", "A check cell appears twice", "A grade cell was copied."),
    _o("duplicate_grade_id", "A cell id appears twice",
       "Two cells carry the same nbgrader grade_id (a copied cell)."),
    _o("unknown_grade_id", "Cells with unknown ids",
       "Cells carry nbgrader grade_ids that the assignment does not have."),
    _o("cell_type_changed", "A cell's type was changed",
       "A cell of the assignment was turned from code into markdown or back."),
    _o("cell_id_changed", "A cell was re-created",
       "A cell's nbformat id differs from the source's (re-created or copied).",
       category="note"),
    _o("notebook_schema_invalid", "Notebook format problems",
       "The notebook does not validate against nbformat's schema; it was read anyway.",
       category="note"),
    _o("harness_replaced", "Training code replaced",
       "The submission replaced the kit's training code in its worker."),
    _o("solution_metadata_missing", "Answer cell metadata missing",
       "An answer cell lost its nbgrader metadata; it was found by the function it defines."),
    _o("solution_metadata_changed", "Answer cell metadata changed",
       "An answer cell's nbgrader metadata differs from the source."),
    _o("worker_died", "Your code crashed the grading process",
       "The sandboxed worker died (signal or exit) while running student code.", serious=True),
    _o("limit_cpu", "CPU time limit reached", "The worker used its CPU-seconds limit."),
    _o("limit_memory", "Memory limit reached", "The worker hit its address-space limit."),
    _o("limit_wall", "Time limit reached", "The worker used its whole wall-clock budget."),
    _o("limit_processes", "Thread limit reached", "The worker hit its process/thread limit."),
    _o("limit_open_files", "Open-file limit reached", "The worker hit its open-files limit."),
    _o("limit_file", "File size limit reached",
       "The worker hit its file-size or scratch-space limit."),
    _o("limit_output", "Output cut", "The student's printed output passed the kept maximum."),
    _o("call_timeout", "A function took too long",
       "One call of a student function passed the per-call timeout; it was not called again."),
    _o("protocol_junk", "Unexpected output on the grading channel",
       "The worker's reply channel carried something that is not a reply (student code writing "
       "to it, or a reply over the size bound)."),
    _o("zygote_killed", "Your code disturbed the grading process",
       "The worker's parent process (the zygote) was killed or stopped; restarted and charged "
       "to this submission.", serious=True),
    _o("zygote_restart", "Grading process restarted",
       "The zygote was restarted while grading this submission."),
    _o("restart", "Worker restarted", "The worker was restarted after a crash or timeout.",
       category="note"),
])


def flag(code: str, detail: str) -> dict:
    """A flag as plain data ``{"code", "message"}`` (what the reading of a notebook and the
    sandbox's worker report); ``code`` must be declared in ``OUTCOMES``."""
    if code not in OUTCOMES:
        raise KeyError(f"undeclared outcome code {code!r}: declare it in autograder/outcomes.py")
    return {"code": code, "message": str(detail)}


@dataclass(frozen=True)
class Flag:
    """One flag of a result: an outcome code and its detail (``message``).

    ``Flag.of`` makes a new one and refuses an undeclared code; ``Flag.from_json`` reads one
    from a results file, where an old or unknown code is kept as it is (``OUTCOMES`` counts an
    unknown code as needing a look)."""
    code: str
    message: str = ""

    @classmethod
    def of(cls, code: str, detail: str) -> "Flag":
        data = flag(code, detail)
        return cls(data["code"], data["message"])

    @classmethod
    def from_json(cls, data: object) -> "Flag":
        """ValueError when ``data`` is not ``{"code": str, "message"?: ...}``."""
        if not isinstance(data, dict) or not isinstance(data.get("code"), str):
            raise ValueError(f"a flag must be an object with a string 'code', not "
                             f"{str(data)[:100]!r}")
        message = data.get("message", "")
        return cls(data["code"], "" if message is None else str(message))

    def to_json(self) -> dict:
        return {"code": self.code, "message": self.message}
