"""Reading the answer key and students' notebooks: autograder.assignments and autograder.load.

A toy assignment ("toy") is built with nbformat; its student version is made by nbgrader's own
release preprocessors, so checksums are compared with what nbgrader really ships.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import time
import tracemalloc
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder import REPO_ROOT
from autograder.assignments import (AssignmentError, UnknownAssignment, list_assignments,
                                    load_assignment)
from autograder.load import notebook as nbmod
from autograder.load.extract import extract_cells, extract_definitions, run_as_written
from autograder.load.notebook import MAX_FILE_BYTES, read_submission

KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}


def nbg(gid, *, solution=False, grade=False, locked=False, points=None):
    meta = {"grade": grade, "solution": solution, "locked": locked, "grade_id": gid,
            "schema_version": 3}
    if grade:
        meta["points"] = points
    return {"nbgrader": meta}


def code(source, gid=None, **flags):
    cell = new_code_cell(source, metadata=nbg(gid, **flags) if gid else {})
    if gid:
        cell.id = gid
    return cell


ADD_ANSWER = "def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION\n"
SCALE_ANSWER = ("def scale(x, k=GAMMA):\n    ### BEGIN SOLUTION\n    return x * k\n"
                "    ### END SOLUTION\n")
ADD_GRADE = ("assert add(1, 2) == 3\n### BEGIN HIDDEN TESTS\nassert add(2, 2) == 4\n"
             "### END HIDDEN TESTS\n")


def toy_source():
    return new_notebook(metadata=copy.deepcopy(KERNEL), cells=[
        new_markdown_cell("# Toy assignment"),
        new_markdown_cell("Read this first.", metadata=nbg("intro", locked=True), id="intro"),
        code("import math\nGAMMA = 0.5\n", "setup", locked=True),
        code("def helper(x):\n    return x + 1\n", "helpers", locked=True),
        code(ADD_ANSWER, "add_answer", solution=True),
        code(ADD_GRADE, "add", grade=True, locked=True, points=2),
        code("ratio = list(range(3))\nscaled = ratio * 2\nWINDOW = 5\nfor i in range(3):\n"
             "    print(add(i, i))\n", "loop", locked=True),
        code(SCALE_ANSWER, "scale_answer", solution=True),
        code("assert scale(2.0) == 1.0\n", "scale", grade=True, locked=True, points=3),
        new_code_cell("# try it here\nprint(scale(4.0))\n", id="try-it"),
    ])


def nbgrader_release(nb):
    """The student version, made by nbgrader's own generate_assignment preprocessors (all but
    the ones that need the gradebook database)."""
    from nbgrader.preprocessors import (CheckCellMetadata, ClearHiddenTests, ClearMarkScheme,
                                        ClearOutput, ClearSolutions, ComputeChecksums, LockCells)
    nb, resources = copy.deepcopy(nb), {}
    for step in (LockCells(), ClearSolutions(), ClearOutput(), CheckCellMetadata(),
                 ComputeChecksums(), ClearHiddenTests(), ClearMarkScheme(), ComputeChecksums(),
                 CheckCellMetadata()):
        nb, resources = step.preprocess(nb, resources)
    return nb


@pytest.fixture
def course(tmp_path, monkeypatch):
    """A course dir with the toy assignment (and its assignment folder) on disk."""
    course = tmp_path / "course"
    (course / "assignments" / "toy").mkdir(parents=True)
    (course / "source" / "toy").mkdir(parents=True)
    nbformat.write(toy_source(), str(course / "source" / "toy" / "toy.ipynb"))
    return course


@pytest.fixture
def toy(course):
    return load_assignment("toy", course)


@pytest.fixture(scope="module")
def release():
    return nbgrader_release(toy_source())


def answered(release_nb, add="def add(a, b):\n    return a + b\n",
             scale="def scale(x, k=GAMMA):\n    return x * k\n"):
    """The release notebook with both answers filled in, as a student saves it."""
    nb = copy.deepcopy(release_nb)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid == "add_answer":
            cell.source = add
        elif gid == "scale_answer":
            cell.source = scale
    return nb


def cell_of(nb, gid):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == gid)


def save(tmp_path, nb, name="submission.ipynb") -> Path:
    path = tmp_path / name
    if isinstance(nb, (str, bytes)):
        path.write_bytes(nb.encode() if isinstance(nb, str) else nb)
    else:
        path.write_text(json.dumps(nb))
    return path


def run_cells(sub, errors: dict | None = None) -> dict:
    """Execute the cells the worker would get (our own toy code) as the worker does: an
    exception stops the rest of its cell (recorded in ``errors``), later cells still run."""
    ns: dict = {}
    for cell in sub.cells:
        try:
            exec(compile(cell["source"], cell["id"], "exec"), ns)
        except Exception as exc:
            if errors is None:
                raise
            errors[cell["id"]] = exc
    return ns


def codes(sub) -> list[str]:
    return [f["code"] for f in sub.flags]


# --- the answer key -------------------------------------------------------------------------
def test_load_assignment_reads_points_kinds_and_functions(toy, course):
    assert [(g.id, g.points) for g in toy.grade_cells] == [("add", 2.0), ("scale", 3.0)]
    assert toy.max_score == 5.0
    assert toy.solution_functions == {"add_answer": "add", "scale_answer": "scale"}
    assert [(c.id, c.kind) for c in toy.cells] == [
        ("setup", "locked"), ("helpers", "locked"), ("add_answer", "solution"), ("add", "grade"),
        ("loop", "locked"), ("scale_answer", "solution"), ("scale", "grade"),
        ("try-it", "other")]
    assert "return a + b" in toy.cells[2].source          # the reference solution is kept
    assert set(toy.locked_checksums) == {"intro", "setup", "helpers", "add", "loop", "scale"}
    assert toy.notebook_name == "toy.ipynb"
    assert toy.source_path == (course / "source" / "toy" / "toy.ipynb").resolve()
    assert toy.folder == (course / "assignments" / "toy").resolve()


def test_checksums_equal_the_ones_nbgrader_ships(toy, release):
    for gid, expected in toy.locked_checksums.items():
        assert cell_of(release, gid).metadata.nbgrader["checksum"] == expected, gid


def test_list_assignments_needs_source_and_suite(course):
    (course / "source" / "nosuite").mkdir()
    nbformat.write(toy_source(), str(course / "source" / "nosuite" / "nosuite.ipynb"))
    (course / "assignments" / "nosource").mkdir()
    (course / "source" / "nosource").mkdir()
    assert list_assignments(course) == ["toy"]
    with pytest.raises(UnknownAssignment):
        load_assignment("nosuite", course)
    with pytest.raises(UnknownAssignment):
        load_assignment("nosource", course)
    with pytest.raises(UnknownAssignment):
        load_assignment("../toy", course)
    assert list_assignments(course / "nowhere") == []


def test_load_assignment_is_cached_until_the_source_changes(course):
    first = load_assignment("toy", course)
    assert load_assignment("toy", course) is first
    path = course / "source" / "toy" / "toy.ipynb"
    nb = toy_source()
    cell_of(nb, "scale").metadata.nbgrader["points"] = 4
    nbformat.write(nb, str(path))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    second = load_assignment("toy", course)
    assert second is not first and second.max_score == 6.0


def test_a_solution_cell_must_define_exactly_one_function(course):
    nb = toy_source()
    cell_of(nb, "add_answer").source = ("def add(a, b):\n    return a + b\n\n"
                                        "def sub(a, b):\n    return a - b\n")
    nbformat.write(nb, str(course / "source" / "toy" / "toy.ipynb"))
    with pytest.raises(AssignmentError, match="exactly one function"):
        load_assignment("toy", course)


def test_the_real_ppo_assignment():
    assert "ppo" in list_assignments(REPO_ROOT)
    asg = load_assignment("ppo", REPO_ROOT)
    assert {g.id: g.points for g in asg.grade_cells} == {
        "reinforce_loss": 3, "compute_gae": 5, "ppo_combined_loss": 5,
        "reinforce_training": 1, "ppo_training": 2}
    assert asg.max_score == 16
    assert asg.solution_functions == {"reinforce_loss_answer": "reinforce_loss",
                                      "compute_gae_answer": "compute_gae",
                                      "ppo_combined_loss_answer": "ppo_combined_loss"}
    assert asg.folder == REPO_ROOT / "assignments" / "ppo"


def test_the_assignment_folder_is_the_courses_else_the_kits(tmp_path):
    """``assignments/NAME/`` of the course dir first, else the kit's own."""
    course = tmp_path / "course"
    (course / "source" / "ppo").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "source" / "ppo" / "ppo.ipynb", course / "source" / "ppo")
    assert load_assignment("ppo", course).folder == REPO_ROOT / "assignments" / "ppo"
    (course / "assignments" / "ppo").mkdir(parents=True)
    assert load_assignment("ppo", course).folder == (course / "assignments" / "ppo").resolve()
    assert list_assignments(course) == ["ppo"]


def test_the_real_ppo_release_reads_cleanly(tmp_path):
    asg = load_assignment("ppo", REPO_ROOT)
    released = nbgrader_release(nbformat.read(str(asg.source_path), as_version=4))
    for gid, expected in asg.locked_checksums.items():
        assert cell_of(released, gid).metadata.nbgrader["checksum"] == expected, gid
    sub = read_submission(save(tmp_path, released), asg)
    assert sub.readable and sub.flags == [] and sub.cell_problems == {}
    assert all("NotImplementedError" in sub.solutions_found[g] for g in asg.solution_functions)
    grade_ids = {g.id for g in asg.grade_cells}
    assert not grade_ids & {c["id"] for c in sub.cells}


def test_the_committed_ppo_release_reads_cleanly():
    asg = load_assignment("ppo", REPO_ROOT)
    sub = read_submission(REPO_ROOT / "release" / "ppo" / "ppo.ipynb", asg)
    assert sub.readable and sub.flags == [] and sub.cell_problems == {}
    assert set(sub.solutions_found) == set(asg.solution_functions)


# --- a good submission ----------------------------------------------------------------------
def test_an_answered_release_reads_cleanly_and_runs(toy, release, tmp_path):
    path = save(tmp_path, answered(release))
    sub = read_submission(path, toy)
    assert sub.readable and sub.problem == ""
    assert sub.flags == [] and sub.cell_problems == {}
    # the student's copy of the unmarked "try it" cell is theirs to edit: it runs as written
    assert [c["id"] for c in sub.cells] == ["setup", "helpers", "add_answer", "loop",
                                         "scale_answer", "cell-10"]
    assert sub.solutions_found == {"add_answer": "def add(a, b):\n    return a + b\n",
                                   "scale_answer": "def scale(x, k=GAMMA):\n    return x * k\n"}
    import hashlib
    assert sub.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    ns = run_cells(sub)                   # no NameError: "scaled = ratio * 2" was dropped
    assert ns["add"](1, 2) == 3 and ns["scale"](2.0) == 1.0 and ns["helper"](1) == 2
    assert ns["WINDOW"] == 5 and "ratio" not in ns and "scaled" not in ns
    # what only the given (non-set-up) loop cell would bind is known, to explain a NameError
    assert sub.given_only == {"ratio": "loop", "scaled": "loop", "i": "loop"}


def test_missing_kernelspec_is_fine(toy, release, tmp_path):
    nb = answered(release)
    nb.metadata = {}
    sub = read_submission(save(tmp_path, nb), toy)
    assert sub.readable and sub.flags == [] and sub.cell_problems == {}


# --- unreadable files -----------------------------------------------------------------------
@pytest.mark.parametrize("content, words", [
    ("hello, I am not a notebook", "not valid JSON"),
    ('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5, "extra": [1, 2}',
     "not valid JSON (line 1"),
    ('{"a": 1}', "not a Jupyter notebook"),
    ("[1, 2, 3]", "not a Jupyter notebook"),
    ("", "empty"),
    (b"\xff\xfe\x00garbage\xff", "not UTF-8"),
    ('{"cells": [{"cell_type": "code", "source": 5, "metadata": {}}], "metadata": {}, '
     '"nbformat": 4, "nbformat_minor": 5}', "damaged"),
    ('{"cells": [], "metadata": {}, "nbformat": 5, "nbformat_minor": 0}', "nbformat 4"),
])
def test_unreadable_files_become_a_message(toy, tmp_path, content, words):
    sub = read_submission(save(tmp_path, content), toy)
    assert not sub.readable and words in sub.problem
    assert sub.cells == [] and sub.sha256


def test_truncated_notebook(toy, release, tmp_path):
    text = json.dumps(answered(release), indent=1)
    for cut in (len(text) // 2, len(text) - 3):
        sub = read_submission(save(tmp_path, text[:cut]), toy)
        assert not sub.readable and "ends in the middle" in sub.problem


def test_nbformat_3_is_refused_with_a_message(toy, tmp_path):
    from nbformat import v3
    nb = v3.new_notebook(worksheets=[v3.new_worksheet(cells=[v3.new_code_cell(input="x = 1")])])
    sub = read_submission(save(tmp_path, v3.writes_json(nb)), toy)
    assert not sub.readable and "nbformat 3" in sub.problem


def test_a_missing_file_or_a_directory_never_raises(toy, tmp_path):
    assert "could not be opened" in read_submission(tmp_path / "nope.ipynb", toy).problem
    assert "not a regular file" in read_submission(tmp_path, toy).problem


def test_too_many_cells(toy, release, tmp_path, monkeypatch):
    monkeypatch.setattr(nbmod, "MAX_CELLS", 5)
    sub = read_submission(save(tmp_path, answered(release)), toy)
    assert not sub.readable and "more than 5 cells" in sub.problem


def test_a_file_over_the_size_cap_is_refused_before_parsing(toy, tmp_path):
    path = tmp_path / "huge.ipynb"
    with open(path, "wb") as f:              # sparse: no disk space used
        f.truncate(MAX_FILE_BYTES + 1)
    sub = read_submission(path, toy)
    assert not sub.readable and "100 MB" in sub.problem and "Clear all outputs" in sub.problem
    assert len(sub.sha256) == 64


def test_huge_outputs_are_dropped_while_parsing(toy, release, tmp_path):
    nb = answered(release)
    blob = "x" * (1 << 20)
    cell_of(nb, "scale_answer").outputs = [
        {"output_type": "stream", "name": "stdout", "text": blob} for _ in range(24)]
    cell_of(nb, "add_answer").outputs = [{"output_type": "display_data", "metadata": {},
                                          "data": {"image/png": blob}}]
    path = save(tmp_path, nb)
    size = path.stat().st_size
    assert size > 25 * (1 << 20)
    tracemalloc.start()
    try:
        sub = read_submission(path, toy)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sub.readable and sub.flags == [] and sub.cell_problems == {}
    assert "scale_answer" in sub.solutions_found
    # the file's bytes and their decoded text, plus at most a few outputs: never all outputs
    # parsed on top of both (that would be about 3x the file)
    assert peak < 2.4 * size, (peak, size)


# --- cells ----------------------------------------------------------------------------------
def test_a_syntax_error_costs_only_its_cell(toy, release, tmp_path):
    nb = answered(release, scale="def scale(x, k=GAMMA):\n    return x * (k\n")
    sub = read_submission(save(tmp_path, nb), toy)
    assert sub.readable
    assert sub.cell_problems["scale_answer"].startswith("SyntaxError at line 2:")
    assert set(sub.cell_problems) == {"scale_answer"}
    assert sub.solutions_found["scale_answer"] == ""
    errors: dict = {}
    ns = run_cells(sub, errors)
    assert "add" in ns and "scale" not in ns
    # the "try it" cell below still runs, and fails as it would in Jupyter
    assert list(errors) == ["cell-10"] and isinstance(errors["cell-10"], NameError)


def test_a_missing_answer_cell(toy, release, tmp_path):
    nb = answered(release)
    nb.cells.remove(cell_of(nb, "scale_answer"))
    sub = read_submission(save(tmp_path, nb), toy)
    assert sub.readable and sub.solutions_found["scale_answer"] == ""
    problem = sub.cell_problems["scale_answer"]
    assert "missing" in problem and "defines scale" in problem
    errors: dict = {}
    assert "scale" not in run_cells(sub, errors) and list(errors) == ["cell-9"]


def test_an_answer_cell_that_defines_no_function(toy, release, tmp_path):
    nb = answered(release, scale="def scale_it(x):\n    return x\n")
    sub = read_submission(save(tmp_path, nb), toy)
    assert "does not define scale" in sub.cell_problems["scale_answer"]


def test_a_students_cell_runs_as_written_less_its_magic_lines(toy, release, tmp_path):
    """The old rule kept only definitions of the student's cells; now every top-level statement
    runs, and only the lines that need IPython are dropped (and listed, with cell and line)."""
    add = ("!pip install torch\n%matplotlib inline\nimport math\nLR = 1e-3\n"
           "def add(a, b):\n    %time x = 1\n    return a + b\n"
           "add?\nTOTAL = 0\nfor step in range(4):\n    TOTAL += add(step, step)\n"
           "PI = math.floor(math.pi)\nprint(add(1, 2))\n")
    sub = read_submission(save(tmp_path, answered(release, add=add)), toy)
    assert sub.cell_problems == {}
    kept = sub.solutions_found["add_answer"]
    for gone in ("pip", "matplotlib", "%time", "add?"):
        assert gone not in kept
    lines = kept.split("\n")
    assert lines[4] == "def add(a, b):" and lines[2] == "import math" and lines[3] == "LR = 1e-3"
    assert lines[9] == "for step in range(4):" and lines[12] == "print(add(1, 2))"
    assert sub.magic_lines == [("add_answer", 1, "!pip install torch"),
                               ("add_answer", 2, "%matplotlib inline"),
                               ("add_answer", 6, "%time x = 1"), ("add_answer", 8, "add?")]
    [flag] = sub.flags
    assert flag["code"] == "magic_lines_dropped"
    assert "your answer cell for add, line 1: !pip install torch" in flag["message"]
    assert "line 8: add?" in flag["message"]
    ns = run_cells(sub)
    assert ns["add"](2, 3) == 5 and ns["LR"] == 1e-3 and ns["TOTAL"] == 12 and ns["PI"] == 3


def test_helpers_in_added_cells_are_kept_in_place(toy, release, tmp_path):
    nb = answered(release, scale="def scale(x, k=GAMMA):\n    return double(x) * k / K\n")
    at = nb.cells.index(cell_of(nb, "scale_answer"))
    nb.cells.insert(at, new_code_cell("def double(x):\n    return 2 * x\nprint(double(3))\n"
                                      "K = GAMMA * 4 + WINDOW - 5\n"))
    nb.cells.append(new_code_cell("TRAILING = 7\nscale(1.0)\n"))
    nb.cells.append(new_code_cell("oops = (\n"))
    sub = read_submission(save(tmp_path, nb), toy)
    ids = [c["id"] for c in sub.cells]
    helper_id, trailing_id = f"cell-{at + 1}", f"cell-{len(nb.cells) - 1}"
    assert ids == ["setup", "helpers", "add_answer", "loop", helper_id, "scale_answer",
                   f"cell-{len(nb.cells) - 2}", trailing_id]      # the "try it" copy, then ours
    assert list(sub.cell_problems) == [f"cell-{len(nb.cells)}"]
    assert sub.cell_problems[f"cell-{len(nb.cells)}"].startswith("SyntaxError at line 1")
    ns = run_cells(sub)
    assert ns["K"] == 2.0 and ns["scale"](3.0) == 1.5 and ns["TRAILING"] == 7


@pytest.mark.parametrize("after, expected", [("setup", 2), ("helpers", 100)])
def test_an_added_cell_runs_where_it_stands_among_the_given_cells(toy, release, tmp_path,
                                                                  after, expected):
    """As in Jupyter: a student's helper above the given cell that defines the same name is
    replaced by it; one below replaces it."""
    nb = answered(release)
    at = nb.cells.index(cell_of(nb, after)) + 1
    nb.cells.insert(at, new_code_cell("def helper(x):\n    return 100\n"))
    sub = read_submission(save(tmp_path, nb), toy)
    ids = [c["id"] for c in sub.cells]
    assert ids.index(f"cell-{at + 1}") == ids.index(after) + 1
    assert run_cells(sub)["helper"](1) == expected


def test_an_answer_written_in_a_new_cell_below_the_stub_wins(toy, release, tmp_path):
    nb = answered(release, scale="def scale(x, k=GAMMA):\n    raise NotImplementedError()\n")
    at = nb.cells.index(cell_of(nb, "scale_answer"))
    nb.cells.insert(at + 1, new_code_cell("def scale(x, k=GAMMA):\n    return x * k\n"))
    sub = read_submission(save(tmp_path, nb), toy)
    assert run_cells(sub)["scale"](4.0) == 2.0


# --- integrity ------------------------------------------------------------------------------
def test_an_edited_locked_cell_is_restored_and_flagged(toy, release, tmp_path):
    nb = answered(release)
    cell_of(nb, "helpers").source = "def helper(x):\n    return 0\n"
    sub = read_submission(save(tmp_path, nb), toy)
    assert codes(sub) == ["locked_cell_modified"] and "'helpers'" in sub.flags[0]["message"]
    assert run_cells(sub)["helper"](1) == 2


def test_a_deleted_locked_cell_is_restored_and_flagged(toy, release, tmp_path):
    nb = answered(release)
    nb.cells.remove(cell_of(nb, "setup"))
    sub = read_submission(save(tmp_path, nb), toy)
    assert codes(sub) == ["locked_cell_deleted"]
    assert run_cells(sub)["GAMMA"] == 0.5


def test_locked_metadata_stripped_does_not_hide_the_edit(toy, release, tmp_path):
    nb = answered(release)
    cell = cell_of(nb, "helpers")
    cell.metadata = {}
    cell.source = "def helper(x):\n    return -1\n"
    sub = read_submission(save(tmp_path, nb), toy)
    assert "locked_cell_deleted" in codes(sub)
    assert sub.cells[1] == {"id": "helpers", "source": "def helper(x):\n    return x + 1\n"}


@pytest.mark.parametrize("edit, code", [
    (lambda nb: setattr(cell_of(nb, "add"), "source", "pass\n"), "grade_cell_modified"),
    (lambda nb: cell_of(nb, "scale").metadata.nbgrader.__setitem__("points", 100),
     "grade_cell_modified"),
    (lambda nb: nb.cells.remove(cell_of(nb, "add")), "grade_cell_deleted"),
    (lambda nb: nb.cells.append(copy.deepcopy(cell_of(nb, "scale"))), "grade_cell_duplicated"),
])
def test_grade_cell_changes_are_flagged_and_never_run(toy, release, tmp_path, edit, code):
    nb = answered(release)
    edit(nb)
    sub = read_submission(save(tmp_path, nb), toy)
    assert codes(sub) == [code]
    assert {"add", "scale"}.isdisjoint(c["id"] for c in sub.cells)
    assert all("assert" not in c["source"] for c in sub.cells)


def test_solution_metadata_removed_is_found_by_function(toy, release, tmp_path):
    nb = answered(release)
    cell_of(nb, "scale_answer").metadata = {}
    sub = read_submission(save(tmp_path, nb), toy)
    assert codes(sub) == ["solution_metadata_missing"]
    assert "scale" in sub.solutions_found["scale_answer"] and sub.cell_problems == {}
    assert [c["id"] for c in sub.cells][-2:] == ["scale_answer", "cell-10"]
    assert run_cells(sub)["scale"](2.0) == 1.0


def test_solution_metadata_changed_is_flagged(toy, release, tmp_path):
    nb = answered(release)
    cell_of(nb, "add_answer").metadata.nbgrader["solution"] = False
    cell_of(nb, "scale_answer").metadata.nbgrader["grade_id"] = "my_scale"
    sub = read_submission(save(tmp_path, nb), toy)
    assert sorted(codes(sub)) == ["solution_metadata_changed", "solution_metadata_changed",
                                  "unknown_grade_id"]
    assert sub.cell_problems == {}
    ns = run_cells(sub)
    assert ns["add"](1, 1) == 2 and ns["scale"](2.0) == 1.0


def test_cell_type_changes_are_flagged(toy, release, tmp_path):
    nb = answered(release)
    for gid in ("scale_answer", "add"):
        cell = cell_of(nb, gid)
        nb.cells[nb.cells.index(cell)] = new_markdown_cell(cell.source, metadata=cell.metadata,
                                                           id=cell.id)
    sub = read_submission(save(tmp_path, nb), toy)
    assert sorted(codes(sub)) == ["cell_type_changed", "cell_type_changed", "grade_cell_modified"]
    assert run_cells(sub)["scale"](2.0) == 1.0      # an answer turned Markdown is still read


def test_changed_cell_ids_and_duplicated_answers(toy, release, tmp_path):
    nb = answered(release, add="def add(a, b):\n    raise NotImplementedError()\n")
    cell_of(nb, "helpers").id = "renamed"
    copy_ = copy.deepcopy(cell_of(nb, "add_answer"))
    copy_.source, copy_.id = "def add(a, b):\n    return a + b + 0\n", "copy-of-add"
    nb.cells.insert(nb.cells.index(cell_of(nb, "add_answer")) + 1, copy_)
    sub = read_submission(save(tmp_path, nb), toy)
    assert sorted(codes(sub)) == ["cell_id_changed", "cell_id_changed", "duplicate_grade_id"]
    # as in Jupyter, run top to bottom: the later copy is the answer, the earlier one still runs
    assert "a + b + 0" in sub.solutions_found["add_answer"]
    assert [c["id"] for c in sub.cells][2:4] == [f"cell-{nb.cells.index(copy_)}", "add_answer"]
    assert run_cells(sub)["add"](1, 2) == 3


def test_a_schema_invalid_but_usable_notebook_is_graded_and_flagged(toy, release, tmp_path):
    nb = json.loads(json.dumps(answered(release)))
    del nb["cells"][0]["metadata"]                   # required by the nbformat 4 schema
    nb["cells"][-1]["source"] = nb["cells"][-1]["source"].splitlines(keepends=True)
    sub = read_submission(save(tmp_path, nb), toy)
    assert sub.readable and codes(sub) == ["notebook_schema_invalid"]
    assert run_cells(sub)["add"](2, 2) == 4


def test_broken_nbgrader_metadata_never_raises(toy, release, tmp_path):
    nb = json.loads(json.dumps(answered(release)))
    by_id = {c["id"]: c for c in nb["cells"]}
    by_id["helpers"]["metadata"]["nbgrader"] = [1, 2]
    by_id["add"]["metadata"]["nbgrader"]["grade_id"] = 7
    by_id["scale"]["metadata"]["nbgrader"]["points"] = "lots"
    sub = read_submission(save(tmp_path, nb), toy)
    assert sub.readable and sub.cell_problems == {}
    assert sorted(codes(sub)) == ["grade_cell_deleted", "grade_cell_modified",
                                  "locked_cell_deleted"]


# --- extract_definitions --------------------------------------------------------------------
def test_extract_keeps_definitions_at_their_line_numbers():
    src = ("import torch; print('hi'); import numpy as np\nGAMMA = 0.99\nEPS: float = 1e-8\n"
           "SIZES = (4, 8)\nA, B = -1, 2 ** 3\nDT = torch.float32\nenv = ContextualBandit()\n"
           "x = (1\n     % 2)\n@torch.no_grad()\ndef f(a):\n    return a\n"
           "class C:\n    pass\nif __name__ == '__main__':\n    f(1)\nwith open('x') as fh:\n"
           "    pass\ntry:\n    import wandb\nexcept ImportError:\n    pass\n")
    e = extract_definitions(src)
    lines = e.code.split("\n")
    assert lines[0] == "import torch; import numpy as np"
    assert lines[1:6] == ["GAMMA = 0.99", "EPS: float = 1e-8", "SIZES = (4, 8)",
                          "A, B = -1, 2 ** 3", "DT = torch.float32"]
    assert lines[6] == "" and lines[7:9] == ["x = (1", "     % 2)"]
    assert lines[9:14] == ["@torch.no_grad()", "def f(a):", "    return a", "class C:", "    pass"]
    assert "__main__" not in e.code and "open" not in e.code and "wandb" not in e.code
    assert e.functions == ("f",) and e.error is None
    assert [d.split(":")[0] for d in e.dropped] == ["line 1", "line 7", "line 15", "line 17",
                                                    "line 19"]


def test_extract_drops_constants_built_from_dropped_names():
    e = extract_definitions("import torch\nratio = torch.linspace(0, 1, 5)\nA = 1.0\n"
                            "scaled = ratio * A\nB = A * 2 + GAMMA\nC = -A\n")
    assert e.code == "import torch\n\nA = 1.0\n\n\nC = -A\n"
    assert e.names == ("torch", "A", "C")
    first, second = extract_cells(["import math\nGAMMA = 0.5\n", "B = GAMMA * math.pi\nD = E\n"])
    assert second.code == "B = GAMMA * math.pi\n" and second.names == ("B",)
    assert extract_definitions("from m import *\nX = anything\n").names == ("*", "X")
    assert extract_definitions("X: make() = 1\nY: float = 2\n").names == ("Y",)


def test_extract_leaves_strings_and_continuations_alone():
    src = 'DOC = """\n!not a shell line\n%not a magic\n"""\nX = (3\n% 2)\n'
    e = extract_definitions(src)
    assert e.code == src and e.dropped == []


def test_extract_cell_magics():
    assert extract_definitions("%%bash\necho hi\n").code == ""
    e = extract_definitions("%%time\ndef f():\n    return 1\nf()\n")
    assert e.code == "\ndef f():\n    return 1\n" and e.functions == ("f",)


def test_extract_shell_continuation_lines():
    e = extract_definitions("!pip install \\\n    torch\ndef f():\n    !ls\n    return 2\n")
    ns: dict = {}
    exec(e.code, ns)
    assert ns["f"]() == 2 and e.error is None


@pytest.mark.parametrize("src, start", [
    ("def f(:\n    pass\n", "SyntaxError at line 1:"),
    ("x = 1\n  y = 2\n", "IndentationError at line 2:"),
    ("a = 1\x00", "SyntaxError"),
    ("x = " + "(" * 500 + ")" * 500, "SyntaxError"),
])
def test_extract_reports_unparseable_cells(src, start):
    e = extract_definitions(src)
    assert e.code == "" and e.error.startswith(start)


# --- run_as_written -------------------------------------------------------------------------
def test_run_as_written_keeps_every_statement_and_every_line_number():
    src = ("import torch\nas_like = lambda x, like: torch.as_tensor(x, dtype=like.dtype)\n"
           "NEG = torch.tensor(-1.0)\nEPS = torch.finfo(torch.float32).eps\n"
           "for k in range(2):\n    LAST = k\nprint(NEG)\n")
    e = run_as_written(src)
    assert e.code == src and e.magics == () and e.dropped == [] and e.error is None
    assert e.names == ("torch", "as_like", "NEG", "EPS", "k", "LAST")
    ns: dict = {}
    exec(e.code, ns)
    assert ns["EPS"] > 0 and ns["LAST"] == 1 and float(ns["as_like"](2, ns["NEG"])) == 2.0


@pytest.mark.parametrize("src, runs, magics", [
    # shell, magic and help lines, at any depth, with a continued shell line
    ("!pip install \\\n    torch\nX = 1\ndef f():\n    %time y = 2\n    return 3\nf?\n",
     "pass\n\nX = 1\ndef f():\n    pass\n    return 3\npass\n",
     ((1, "!pip install \\"), (5, "%time y = 2"), (7, "f?"))),
    # get_ipython statements, also inside if/for and sharing a line (non-ASCII before them)
    (('s = "é"; get_ipython().system("ls")\nif True:\n    get_ipython().magic("x")\n'
      "    Y = 1\nwhile get_ipython():\n    pass\nZ = 2\n"),
     's = "é"; pass\nif True:\n    pass\n    Y = 1\npass\n\nZ = 2\n',
     ((1, 'get_ipython().system("ls")'), (3, 'get_ipython().magic("x")'),
      (5, "while get_ipython():"))),
    # a cell magic with a Python body keeps the body; any other drops the cell
    ("%%time\nW = 3\n", "\nW = 3\n", ((1, "%%time"),)),
    ("%%bash\nrm -rf /\n", "", ((1, "%%bash (the whole cell)"),)),
])
def test_run_as_written_drops_and_lists_what_needs_ipython(src, runs, magics):
    e = run_as_written(src)
    assert e.code == runs and e.magics == magics and e.error is None
    if runs:
        exec(compile(e.code, "cell", "exec"), {"__builtins__": __builtins__})


def test_run_as_written_reports_unparseable_cells_like_extract():
    for src in ("def f(:\n    pass\n", "x = 1\n  y = 2\n", "a = 1\x00"):
        assert run_as_written(src).error == extract_definitions(src).error
        assert run_as_written(src).code == ""
    # a def that uses get_ipython is kept: only running it would need IPython
    e = run_as_written("def f(shell=None):\n    return get_ipython()\n")
    assert e.magics == () and e.functions == ("f",)


@pytest.mark.parametrize("terms", [900, 2000, 5000])
def test_a_cell_nested_deeper_than_the_stack_costs_only_that_cell(terms):
    """A sum of thousands of terms is one very deep expression: reading it never raises (in the
    trusted parent that would be a grader error); it runs, or it is that cell's problem."""
    src = "X = " + " + ".join(["1"] * terms) + "\n"
    for read in (extract_definitions, run_as_written):
        e = read(src)
        assert (e.code == src and e.error is None) or (e.code == "" and "too deeply" in e.error)
    assert run_as_written(src).names in (("X",), ())


def test_an_assignment_folder_is_one_package_whose_modules_import_each_other(tmp_path):
    """``autograder.plugins``: a folder is one package (``autograder_assignments.<name>`` for
    the kit's own, with a hash of the path for any other); its modules import each other
    relatively; two folders of the same name loaded in one process never mix, in either
    order, and the kit's own folder keeps its modules whatever else was loaded."""
    from autograder.plugins import assignment_folder, load_module, module_of, package_name

    first, second = tmp_path / "a" / "toy", tmp_path / "b" / "toy"
    for folder, value in ((first, 1), (second, 2)):
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text('"""toy"""\n')
        (folder / "helper.py").write_text(f"VALUE = {value}\n")
        (folder / "test_toy.py").write_text("from .helper import VALUE\n")
    module = load_module("toy", first, "test_toy")
    assert module.__name__ == package_name("toy", first) + ".test_toy"
    assert module.__name__.startswith("autograder_assignments.toy_")
    assert module.VALUE == 1 and load_module("toy", first, "test_toy") is module
    other = load_module("toy", second, "test_toy")
    assert other.VALUE == 2 and other is not module
    assert load_module("toy", first, "test_toy") is module and module.VALUE == 1
    kit = module_of("ppo", "training")
    assert kit.__name__ == "autograder_assignments.ppo.training"
    copy = tmp_path / "ppo"                    # a trimmed copy of a kit folder, as tools make
    copy.mkdir()
    (copy / "__init__.py").write_text('"""a copy"""\n')
    (copy / "mutants.py").write_text("MUTANTS = []\n")
    assert load_module("ppo", copy, "mutants").MUTANTS == []
    assert module_of("ppo", "training") is kit
    assert module_of("ppo", "mutants").MUTANTS          # the kit's catalogue, not the copy's
    assert assignment_folder("ppo") == (REPO_ROOT / "assignments" / "ppo").resolve()
    with pytest.raises(ValueError):
        load_module("toy", second, "../helper")
