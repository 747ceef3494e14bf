"""Checks of a mutant catalogue (``autograder/suites/<assignment>/mutants.py``) that every
assignment's grading tests share: hints in plain words, each mutant applying exactly once to its
function's solution cell, and the reference's mutant cells defining only the renamed function.
"""
from __future__ import annotations

import re

from autograder.hints import apply_mutant, mutant_cells, solution_cell
from autograder.load.extract import extract_definitions

CODE_WORDS = re.compile(r"torch\.|\(\)|\bdef\b|\[t\b|\bnp\.|==|\*\*|\+=|\.item|\.detach")


def check_hints_are_plain_words(mutants) -> None:
    for m in mutants:
        assert len(m.hint) > 40 and not CODE_WORDS.search(m.hint), m.name


def check_every_mutant_applies_exactly_once(assignment, mutants, *,
                                            whole_cell_allowed: bool) -> None:
    """A find/replace mutant's text occurs once in its solution cell; ``whole_cell_allowed``:
    a mutant may instead replace the whole cell (``find`` None)."""
    for m in mutants:
        original = solution_cell(assignment, m.function).source
        if m.find is None:
            assert whole_cell_allowed, m.name
        else:
            assert original.count(m.find) == 1, m.name
        changed = apply_mutant(original, m)
        assert changed != original
        extracted = extract_definitions(changed)
        assert extracted.error is None and m.function in extracted.functions, m.name


def check_mutant_cells_define_only_the_renamed_function(assignment, mutants,
                                                        prelude: str) -> None:
    """Run after ``prelude`` (the imports the answer key gives them), each mutant cell adds
    exactly one name, ``_mutant_<name>``."""
    cells = mutant_cells(assignment)
    assert len(cells) == len(mutants)
    for m, cell in zip(mutants, cells):
        ns: dict = {}
        exec(compile(prelude, "<kit>", "exec"), ns)
        before = set(ns)
        exec(compile(cell["source"], cell["id"], "exec"), ns)
        assert set(ns) - before == {f"_mutant_{m.name}"}, m.name
