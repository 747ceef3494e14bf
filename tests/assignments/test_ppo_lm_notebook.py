"""Part 2 (assignment ``ppo_lm``): the source notebook, its pretrained model and the pretraining.

The source notebook is executed once (module scope) in a fresh kernel of this interpreter, with
DeprecationWarning turned into an error, and an extra last cell that reports the training run.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

from autograder import REPO_ROOT as ROOT
SOURCE_DIR = ROOT / "source" / "ppo_lm"
NOTEBOOK = SOURCE_DIR / "ppo_lm.ipynb"
WEIGHTS = SOURCE_DIR / "tiny_lm.pt"
PRETRAIN = ROOT / "tools" / "pretrain_lm.py"

POINTS = {"per_token_rewards": 3, "masked_mean": 2, "compute_token_gae": 4,
          "token_ppo_loss": 4, "lm_ppo_training": 3}
# The cells a training harness executes to get the loop: pure definitions, no IPython syntax.
DEFINITION_CELLS = ["corpus", "lm_model", "sampling", "reward_fn", "rlhf_loop"]
RESULTS_MARKER = "@@PPO_LM_RESULTS@@"
TIME_BUDGET_S = 180                  # seconds of the kernel's CPU time

WARNINGS_AS_ERRORS = """\
import warnings
warnings.simplefilter("error", DeprecationWarning)
"""
# The kernel's CPU time (it and its children, user and system): the budget is CPU seconds, which
# do not grow when other processes load the machine (the notebook trains on one thread).
REPORT = f"""\
import json as _json, resource as _resource, sys as _sys
_cpu = sum(_resource.getrusage(_who).ru_utime + _resource.getrusage(_who).ru_stime
           for _who in (_resource.RUSAGE_SELF, _resource.RUSAGE_CHILDREN))
print({RESULTS_MARKER!r} + _json.dumps({{
    "reward": history["reward"], "kl": history["kl"],
    "score_before": score_before, "score_after": score_after,
    "executable": _sys.executable, "cpu_seconds": _cpu}}))
"""


def grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def code_cells(nb) -> dict[str, str]:
    return {grade_id(c): c.source for c in nb.cells if c.cell_type == "code" and grade_id(c)}


def load_pretrain_module():
    spec = importlib.util.spec_from_file_location("pretrain_lm", PRETRAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stream_text(cell, name=None) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.output_type == "stream" and (name is None or o.name == name))


@pytest.fixture(scope="module")
def source_nb():
    return nbformat.read(NOTEBOOK, as_version=4)


@pytest.fixture(scope="module")
def executed():
    """(executed notebook, seconds): the source notebook run top to bottom on the CPU."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(WARNINGS_AS_ERRORS))
    nb.cells.append(nbformat.v4.new_code_cell(REPORT))
    with tempfile.TemporaryDirectory() as specs:
        # a kernel spec that runs this very interpreter, whatever other kernels are installed
        spec = Path(specs, "python3")
        spec.mkdir()
        spec.joinpath("kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (ipykernel)", "language": "python"}))
        km = KernelManager(kernel_name="python3",
                           kernel_spec_manager=KernelSpecManager(kernel_dirs=[specs]))
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="",
                   MPLBACKEND="module://matplotlib_inline.backend_inline")
        start = time.monotonic()
        NotebookClient(nb, km=km, timeout=600, allow_errors=True,
                       resources={"metadata": {"path": str(SOURCE_DIR)}}).execute(env=env)
        seconds = time.monotonic() - start
    return nb, seconds


@pytest.fixture(scope="module")
def results(executed):
    nb, _ = executed
    text = stream_text(nb.cells[-1], "stdout")
    assert RESULTS_MARKER in text, "the notebook did not get as far as the training results"
    return json.loads(text.split(RESULTS_MARKER, 1)[1].strip().splitlines()[0])


# --- the executed notebook ----------------------------------------------------------------------

@pytest.mark.slow   # end to end: make test-all
def test_notebook_runs_without_errors(executed):
    nb, _ = executed
    errors = [f"{grade_id(c) or i}: {o.ename}: {o.evalue}"
              for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, "cells raised:\n" + "\n".join(errors)


@pytest.mark.slow   # end to end: make test-all
def test_no_deprecation_or_other_warnings(executed):
    nb, _ = executed
    warned = [f"{grade_id(c)}: {stream_text(c, 'stderr').strip()[:300]}" for c in nb.cells
              if c.cell_type == "code" and re.search(r"Warning\b", stream_text(c, "stderr"))]
    assert not warned, "warnings in the notebook:\n" + "\n".join(warned)


@pytest.mark.slow   # end to end: make test-all
def test_notebook_runs_within_budget(executed, results):
    """The budget is in CPU seconds of the kernel: a loaded machine stretches the wall time
    (reported) but not the work the notebook does."""
    _, seconds = executed
    assert results["executable"] == sys.executable
    cpu = results["cpu_seconds"]
    assert 0 < cpu < TIME_BUDGET_S, \
        f"the notebook used {cpu:.0f} s of CPU in {seconds:.0f} s (budget {TIME_BUDGET_S} s of CPU)"


@pytest.mark.slow   # end to end: make test-all
def test_visible_checks_pass(executed):
    nb, _ = executed
    outputs = {grade_id(c): stream_text(c, "stdout") for c in nb.cells if c.cell_type == "code"}
    for cell_id in POINTS:
        assert "✅" in outputs[cell_id], f"grade cell {cell_id} did not pass: {outputs[cell_id]!r}"


@pytest.mark.slow   # end to end: make test-all
def test_reward_rises_and_kl_stays_bounded(results):
    reward, kl = results["reward"], results["kl"]
    assert len(reward) == len(kl) == 40
    start, end = sum(reward[:5]) / 5, sum(reward[-10:]) / 10
    # the pretrained model writes as many negative reviews as positive ones
    assert -0.3 < start < 0.4, start
    assert end > 0.6 and end - start > 0.4, (start, end)
    kl_end = sum(kl[-10:]) / 10
    assert 0.1 < kl_end < 4.0, kl_end
    assert max(kl) < 8.0, max(kl)


@pytest.mark.slow   # end to end: make test-all
def test_samples_after_training_are_more_positive(executed, results):
    nb, _ = executed
    (samples,) = [c for c in nb.cells if grade_id(c) == "samples"]
    text = stream_text(samples, "stdout")
    assert "BEFORE RLHF" in text and "AFTER RLHF" in text
    before, after = text.split("AFTER RLHF")
    scores = [[float(s) for s in re.findall(r"^\s+([+-]\d\.\d\d)  \S", part, flags=re.M)]
              for part in (before, after)]
    assert len(scores[0]) == len(scores[1]) == 16, scores
    assert sum(scores[1]) > sum(scores[0]) + 4, scores
    assert results["score_after"] > results["score_before"] + 0.5, results


# --- the notebook's structure -------------------------------------------------------------------

def test_grade_and_solution_cells(source_nb):
    grade = {grade_id(c): c.metadata["nbgrader"].get("points") for c in source_nb.cells
             if c.get("metadata", {}).get("nbgrader", {}).get("grade")}
    assert grade == POINTS
    for c in source_nb.cells:
        meta = c.get("metadata", {}).get("nbgrader")
        if c.cell_type == "code":
            assert meta, "every code cell has nbgrader metadata"
            assert not c.outputs and c.execution_count is None, \
                f"{grade_id(c)}: outputs not cleared"
            assert meta["locked"] != meta["solution"], grade_id(c)
    solutions = {grade_id(c): c.source for c in source_nb.cells
                 if c.get("metadata", {}).get("nbgrader", {}).get("solution")}
    assert set(solutions) == {f"{name}_answer" for name in POINTS if name != "lm_ppo_training"}
    for cell_id, source in solutions.items():
        tree = ast.parse(source)
        assert [type(n).__name__ for n in tree.body] == ["FunctionDef"], cell_id
        assert tree.body[0].name == cell_id.removesuffix("_answer")
        assert "### BEGIN SOLUTION" in source and "### END SOLUTION" in source


def test_definition_cells_are_plain_python(source_nb):
    cells = code_cells(source_nb)
    for cell_id in DEFINITION_CELLS:
        tree = ast.parse(cells[cell_id])  # no magics or shell lines
        for node in tree.body:
            docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            assert docstring or isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef,
                                                  ast.ClassDef, ast.Assign)), \
                f"{cell_id}, line {node.lineno}: {ast.unparse(node)[:80]}"


def test_stubbed_functions_are_named_by_the_helper(source_nb):
    import torch

    cells = code_cells(source_nb)
    namespace = {"torch": torch}  # what the helpers use from the setup cell
    exec(cells["helpers"], namespace)
    for name in POINTS:
        if name == "lm_ppo_training":
            continue
        exec(f"def {name}(*args, **kwargs):\n    raise NotImplementedError()", namespace)
    with pytest.raises(NotImplementedError, match="implement compute_token_gae"):
        namespace["require_implemented"]("compute_token_gae")
    exec(cells["masked_mean_answer"], namespace)
    namespace["require_implemented"]("masked_mean")  # written: no complaint


# --- the training loop as a harness uses it -----------------------------------------------------

def test_rlhf_train_runs_from_the_cells_and_is_reproducible(source_nb):
    import torch

    cells = code_cells(source_nb)
    namespace = {}
    for cell_id in DEFINITION_CELLS + [f"{n}_answer" for n in POINTS if n != "lm_ppo_training"]:
        exec(compile(cells[cell_id], cell_id, "exec"), namespace)
    functions = {n: namespace[n] for n in
                 ("per_token_rewards", "compute_token_gae", "token_ppo_loss", "masked_mean")}
    runs = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the notebook: tiny ops are slowest with several threads
    try:
        for _ in range(2):
            models = namespace["make_rlhf_models"](str(WEIGHTS), "cpu", seed=3)
            runs.append(namespace["rlhf_train"](*models, **functions, iterations=2, batch_size=16,
                                                seed=3, device="cpu", log_every=0))
    finally:
        torch.set_num_threads(threads)
    assert runs[0] == runs[1]
    assert set(runs[0]) >= {"reward", "kl"} and len(runs[0]["reward"]) == 2
    assert runs[0]["kl"][0] == pytest.approx(0.0, abs=1e-5)  # the policy starts as the reference
    assert runs[0]["kl"][1] != 0.0  # and moves after one update


# --- the pretrained model and the pretraining ---------------------------------------------------

def test_weights_are_small_and_load(source_nb):
    import torch

    assert WEIGHTS.stat().st_size < 5 * 2**20
    namespace = load_pretrain_module().load_definitions(NOTEBOOK)
    model = namespace["TinyLM"]()
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(state)  # strict: the same architecture as the notebook's
    assert all(t.dtype == torch.float32 for t in state.values())
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 1_000_000, n_params


def run_pretrain(tmp_path, name, *extra):
    out = tmp_path / f"{name}.pt"
    proc = subprocess.run(
        [sys.executable, str(PRETRAIN), "--steps", "20", "--sentences", "300", "--log-every", "19",
         "--out", str(out), *extra],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    losses = [float(x) for x in re.findall(r"^step\s+\d+\s+loss ([\d.]+)", proc.stdout, flags=re.M)]
    return out, losses


@pytest.mark.slow   # end to end: make test-all
def test_pretraining_is_deterministic(tmp_path):
    import torch

    first, losses = run_pretrain(tmp_path, "a")
    second, _ = run_pretrain(tmp_path, "b")
    other_seed, _ = run_pretrain(tmp_path, "c", "--seed", "1")
    a, b, c = (torch.load(p, weights_only=True) for p in (first, second, other_seed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    # the script trains the notebook's model: same parameter names, and the loss goes down
    reference = torch.load(WEIGHTS, weights_only=True)
    assert a.keys() == reference.keys()
    assert len(losses) == 2 and losses[1] < losses[0] - 0.5, losses
