"""One outcome vocabulary: every flag code the kit writes is declared in ``autograder/outcomes``.

The scan reads the kit's source with ``ast`` and collects every code written as a literal where a
flag is made: a ``{"code": "..."}`` dict, the first argument of ``flag(...)`` / ``*.flag(...)``,
``Flag.of(...)`` and ``*.add_flag(...)``, and a ``code="..."`` keyword.
"""
from __future__ import annotations

import ast

import pytest

from autograder import REPO_ROOT
from autograder.outcomes import OUTCOMES, Flag, Outcome, OutcomeCollection, flag


def code_literals() -> dict[str, list[str]]:
    """code -> ["path:line", ...] for every code literal in ``autograder/``."""
    found: dict[str, list[str]] = {}

    def note(node, where):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.setdefault(node.value, []).append(where)

    for path in sorted((REPO_ROOT / "autograder").rglob("*.py")):
        rel = path.relative_to(REPO_ROOT)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{rel}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values):
                    if isinstance(k, ast.Constant) and k.value == "code":
                        note(v, where)
            elif isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else \
                    getattr(node.func, "id", "")
                if name in ("flag", "add_flag", "of") and node.args:
                    note(node.args[0], where)
                for kw in node.keywords:
                    if kw.arg == "code":
                        note(kw.value, where)
    return found


def test_every_code_the_kit_writes_is_declared():
    found = code_literals()
    assert "grader_error" in found             # the scan sees the kit's own flags
    missing = {c: w for c, w in found.items() if c not in OUTCOMES}
    assert not missing, f"codes not declared in autograder/outcomes.py: {missing}"


def test_flag_refuses_an_undeclared_code():
    assert flag("grader_error", "x") == {"code": "grader_error", "message": "x"}
    with pytest.raises(KeyError, match="undeclared"):
        flag("made_up_code", "x")
    assert Flag.of("grader_error", "x") == Flag("grader_error", "x")
    with pytest.raises(KeyError, match="undeclared"):
        Flag.of("made_up_code", "x")


def test_a_code_is_declared_once_with_a_known_category():
    with pytest.raises(ValueError, match="twice"):
        OutcomeCollection([Outcome("a", "A", "a"), Outcome("a", "A", "a")])
    with pytest.raises(ValueError, match="category"):
        OutcomeCollection([Outcome("a", "A", "a", category="odd")])
    assert all(o.title and o.staff for o in OUTCOMES)


def test_students_never_read_a_grader_error_detail():
    assert "Traceback" not in OUTCOMES.student_text("grader_error", "Traceback (most recent...")
    assert OUTCOMES.student_text("renamed_notebook", "graded ppo_v2.ipynb") == \
        "graded ppo_v2.ipynb"
