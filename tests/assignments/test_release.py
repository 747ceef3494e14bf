"""The committed student versions in release/: up to date with source/, free of solutions, and,
run unmodified, failing only where a student function is needed, with a message naming it."""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder import REPO_ROOT as ROOT
from kernels import kernel_data_dir, kernel_env
NBGRADER = Path(sys.executable).parent / "nbgrader"
SOURCES = sorted(ROOT.glob("source/*/*.ipynb"))
ASSIGNMENTS = sorted({p.parent.name for p in SOURCES})
RELEASE_PPO = ROOT / "release" / "ppo" / "ppo.ipynb"

# Part 1, run unmodified: every cell that needs a student function stops with
# "NotImplementedError: implement <function> (TODO n) above, ..."; no other cell fails.
PPO_EXPECTED_FAILURES = {
    "reinforce_loss": "reinforce_loss",        # grade cell
    "reinforce_loop": "reinforce_loss",        # training loop
    "reinforce_training": "reinforce_loss",    # grade cell
    "compute_gae": "compute_gae",              # grade cell
    "ppo_combined_loss": "ppo_combined_loss",  # grade cell
    "ppo_loop": "compute_gae",                 # training loop (first of its two TODOs)
    "comparison": "compute_gae",
    "ppo_training": "compute_gae",             # grade cell
}
ANSI = re.compile(r"\x1b\[[0-9;]*m")
SOLUTION_MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS",
                    "BEGIN MARK SCHEME", "END MARK SCHEME")


def nbgrader_meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def committed_release(source: Path):
    path = ROOT / "release" / source.parent.name / source.name
    assert path.exists(), f"{relative(path)} is missing: run `make release` and commit it"
    return nbformat.read(path, as_version=4)


# --- running notebooks (a kernel of this interpreter, CPU only) ------------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return kernel_data_dir(tmp_path_factory.mktemp("jupyter"))


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    """A fresh `nbgrader generate_assignment` of every assignment, in a copy of the course."""
    course = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "source", course / "source")
    for assignment in ASSIGNMENTS:
        proc = subprocess.run(
            [str(NBGRADER), "generate_assignment", assignment, "--force", "--no-db"],
            cwd=course, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (course / "gradebook.db").exists(), "releasing must not create a gradebook"
    return course / "release"


@pytest.fixture(scope="module")
def executed_ppo_release(data_dir):
    """release/ppo/ppo.ipynb run unmodified, DeprecationWarnings raised as errors."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(RELEASE_PPO, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(
        "import warnings\nwarnings.simplefilter('error', DeprecationWarning)",
        id="warnings-as-errors"))
    km = KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(
        kernel_dirs=[str(data_dir / "kernels")]))
    NotebookClient(nb, km=km, timeout=600, allow_errors=True,
                   resources={"metadata": {"path": str(RELEASE_PPO.parent)}}
                   ).execute(env=kernel_env(data_dir), cleanup_kc=True)
    return {c.id: c for c in nb.cells}


# --- the committed release matches a fresh one ------------------------------------------------

@pytest.mark.parametrize("source", SOURCES, ids=relative)
def test_committed_release_is_up_to_date(source, regenerated):
    committed = committed_release(source)
    fresh = nbformat.read(regenerated / source.parent.name / source.name, as_version=4)
    assert [c.id for c in committed.cells] == [c.id for c in fresh.cells], \
        f"release/{source.parent.name}/{source.name} has other cells than source/: " \
        "run `make release`"
    for old, new in zip(committed.cells, fresh.cells):
        assert old.cell_type == new.cell_type, f"cell {new.id}: run `make release`"
        assert old.source == new.source, f"cell {new.id} differs from source/: run `make release`"
        assert nbgrader_meta(old) == nbgrader_meta(new), \
            f"cell {new.id}: nbgrader metadata differs from source/: run `make release`"


@pytest.mark.parametrize("source", SOURCES, ids=relative)
def test_release_holds_no_solution(source):
    release = committed_release(source)
    for cell in release.cells:
        for marker in SOLUTION_MARKERS:
            assert marker not in cell.source, f"cell {cell.id} of the release contains {marker}"
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.parametrize("source", SOURCES, ids=relative)
def test_solution_cells_become_stubs_that_keep_signature_and_docstring(source):
    src = {c.id: c for c in nbformat.read(source, as_version=4).cells}
    release = committed_release(source)
    stubs = [c for c in release.cells if nbgrader_meta(c).get("solution")]
    assert stubs and len(stubs) == sum(1 for c in src.values() if nbgrader_meta(c).get("solution"))
    for stub in stubs:
        assert "raise NotImplementedError()" in stub.source and "# YOUR CODE HERE" in stub.source
        original = src[stub.id].source
        assert stub.source != original
        stub_defs = [n for n in ast.parse(stub.source).body if isinstance(n, ast.FunctionDef)]
        src_defs = [n for n in ast.parse(original).body if isinstance(n, ast.FunctionDef)]
        assert [ast.dump(d.args) for d in stub_defs] == [ast.dump(d.args) for d in src_defs]
        assert [d.name for d in stub_defs] == [d.name for d in src_defs]
        assert [ast.get_docstring(d) for d in stub_defs] == [ast.get_docstring(d) for d in src_defs]


# --- Part 1 run unmodified -------------------------------------------------------------------

def test_unmodified_release_fails_only_where_a_student_function_is_needed(executed_ppo_release):
    errors = {cid: o for cid, c in executed_ppo_release.items() for o in c.get("outputs", [])
              if o.output_type == "error"}
    assert set(errors) == set(PPO_EXPECTED_FAILURES), \
        {cid: f"{o.ename}: {o.evalue}" for cid, o in errors.items()}
    for cell_id, function in PPO_EXPECTED_FAILURES.items():
        error = errors[cell_id]
        assert error.ename == "NotImplementedError", (cell_id, error.ename, error.evalue)
        assert error.evalue.startswith(f"implement {function} (TODO "), (cell_id, error.evalue)
        assert error.evalue.endswith("above, then run this cell again"), (cell_id, error.evalue)
        # A short traceback: the cell, the helper and the message; not the stub's own error.
        entries = [ANSI.sub("", entry) for entry in error.traceback]
        trace = "\n".join(entries)
        assert "During handling of the above exception" not in trace, cell_id
        assert "raise NotImplementedError()" not in trace, cell_id
        frames = [entry for entry in entries if entry.startswith("Cell In[")]
        assert 1 <= len(frames) <= 2, (cell_id, len(frames))


def test_unmodified_release_still_runs_the_given_code(executed_ppo_release):
    figure = executed_ppo_release["clipping_figure"]
    assert any("image/png" in o.get("data", {}) for o in figure.outputs)
    ppo_loss_test = "".join(o.get("text", "")
                            for o in executed_ppo_release["ppo_loss_given"].outputs)
    assert "PPO Loss: -0.7271" in ppo_loss_test
    for cell_id, cell in executed_ppo_release.items():
        for o in cell.get("outputs", []):
            if o.output_type == "stream" and o.name == "stderr":
                assert "Warning" not in o.text, (cell_id, o.text)


@pytest.mark.slow   # end to end: make test-all
def test_nbgrader_validate_invert_reports_the_stubs_failing(data_dir, tmp_path):
    notebook = tmp_path / "ppo.ipynb"
    shutil.copy(RELEASE_PPO, notebook)
    proc = subprocess.run(
        [str(NBGRADER), "validate", "--invert", str(notebook)], cwd=ROOT,
        env=kernel_env(data_dir), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Success! The notebook does not pass any tests." in proc.stdout, proc.stdout[-3000:]
