"""The source notebook of Part 1 (source/ppo/ppo.ipynb): its structure, its reference solutions
(the answer key of the whole kit) and a clean run top to bottom on the CPU."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder import REPO_ROOT as ROOT
from kernels import kernel_data_dir, kernel_env
SOURCE = ROOT / "source" / "ppo" / "ppo.ipynb"
NBGRADER = Path(sys.executable).parent / "nbgrader"

# The contracts (DESIGN.md): solution cell -> the one function it defines, with its arguments.
SOLUTIONS = {
    "reinforce_loss_answer": ("reinforce_loss", ["log_probs", "rewards"], []),
    "compute_gae_answer": ("compute_gae", ["rewards", "values", "gamma", "lam"], [0.99, 0.95]),
    "ppo_combined_loss_answer": (
        "ppo_combined_loss",
        ["log_probs_new", "log_probs_old", "advantages", "values", "returns", "epsilon",
         "vf_coeff"],
        [0.2, 0.5],
    ),
}
POINTS = {"reinforce_loss": 3, "compute_gae": 5, "ppo_combined_loss": 5,
          "reinforce_training": 1, "ppo_training": 2}
# Given code the reference solutions need (ppo_combined_loss reuses ppo_loss).
GIVEN_FOR_REFERENCE = ["ppo_loss_given"]


def nbgrader_meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


@pytest.fixture(scope="module")
def source_nb():
    return nbformat.read(SOURCE, as_version=4)


# --- running notebooks ----------------------------------------------------------------------

def execute(nb, cwd: Path, data_dir: Path, *, allow_errors: bool):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    km = KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(
        kernel_dirs=[str(data_dir / "kernels")]))
    client = NotebookClient(nb, km=km, timeout=600, allow_errors=allow_errors,
                            resources={"metadata": {"path": str(cwd)}})
    client.execute(env=kernel_env(data_dir), cleanup_kc=True)
    return nb


WARNINGS_AS_ERRORS = ("import warnings\n"
                      "warnings.simplefilter('error', DeprecationWarning)\n"
                      "warnings.simplefilter('error', PendingDeprecationWarning)")


def stream_text(cell, name="stdout") -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.output_type == "stream" and o.name == name)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return kernel_data_dir(tmp_path_factory.mktemp("jupyter"))


@pytest.fixture(scope="module")
def executed(source_nb, data_dir):
    """The source notebook run once in a fresh kernel, DeprecationWarnings raised as errors."""
    nb = nbformat.from_dict(json.loads(json.dumps(source_nb)))
    nb.cells.insert(0, nbformat.v4.new_code_cell(WARNINGS_AS_ERRORS, id="warnings-as-errors"))
    execute(nb, SOURCE.parent, data_dir, allow_errors=True)
    return {cell.id: cell for cell in nb.cells}


# --- structure ------------------------------------------------------------------------------

def test_notebook_is_valid_with_stable_unique_ids(source_nb):
    nbformat.validate(source_nb)
    ids = [c.id for c in source_nb.cells]
    assert len(ids) == len(set(ids)), "cell ids must be unique"
    grade_ids = [nbgrader_meta(c)["grade_id"] for c in source_nb.cells if nbgrader_meta(c)]
    assert len(grade_ids) == len(set(grade_ids)), "grade_ids must be unique"
    # Stable ids: every nbgrader cell uses its grade_id as its cell id.
    for c in source_nb.cells:
        if nbgrader_meta(c):
            assert c.id == nbgrader_meta(c)["grade_id"]


def test_outputs_are_cleared(source_nb):
    for c in source_nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, f"cell {c.id} has outputs"


def test_every_code_cell_is_an_nbgrader_cell_of_schema_3(source_nb):
    for c in source_nb.cells:
        meta = nbgrader_meta(c)
        if c.cell_type == "code":
            assert meta, f"code cell {c.id} has no nbgrader metadata"
        if meta:
            assert meta["schema_version"] == 3
            assert meta["task"] is False
            assert "grade_id" in meta


def test_exactly_three_solution_cells_with_the_contract_signatures(source_nb):
    cells = {c.id: c for c in source_nb.cells if nbgrader_meta(c).get("solution")}
    assert set(cells) == set(SOLUTIONS)
    for cell_id, (fn, args, defaults) in SOLUTIONS.items():
        cell = cells[cell_id]
        meta = nbgrader_meta(cell)
        assert meta["grade"] is False and meta["locked"] is False
        assert meta["grade_id"] == cell_id
        tree = ast.parse(cell.source)
        defs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert [d.name for d in defs] == [fn], f"{cell_id} must define exactly {fn}"
        assert len(tree.body) == 1, f"{cell_id} must hold nothing but the function"
        d = defs[0]
        assert [a.arg for a in d.args.args] == args
        assert [ast.literal_eval(x) for x in d.args.defaults] == defaults
        assert ast.get_docstring(d), f"{fn} needs its docstring (students see it)"
        lines = cell.source.splitlines()
        begin = [i for i, line in enumerate(lines) if line.strip() == "### BEGIN SOLUTION"]
        end = [i for i, line in enumerate(lines) if line.strip() == "### END SOLUTION"]
        assert len(begin) == 1 and len(end) == 1 and begin[0] < end[0]
        # The region is the body after the docstring: the release keeps signature + docstring.
        assert begin[0] > d.body[0].end_lineno - 1
        assert end[0] == len(lines) - 1


def test_grade_cells_carry_the_points_and_are_locked(source_nb):
    grade = {nbgrader_meta(c)["grade_id"]: c for c in source_nb.cells
             if nbgrader_meta(c).get("grade")}
    assert {k: nbgrader_meta(c)["points"] for k, c in grade.items()} == POINTS
    for cell_id, c in grade.items():
        meta = nbgrader_meta(c)
        assert meta["locked"] is True and meta["solution"] is False
        assert "HIDDEN TESTS" not in c.source
        assert c.source.lstrip().startswith("#") and "require_implemented(" in c.source, \
            f"grade cell {cell_id} must first check that the functions it uses are written"


def test_given_code_cells_are_locked_read_only(source_nb):
    for c in source_nb.cells:
        meta = nbgrader_meta(c)
        if c.cell_type == "code" and not meta.get("solution") and not meta.get("grade"):
            assert meta["locked"] is True and meta["solution"] is False \
                and meta["grade"] is False, c.id


def test_seed_fixes_are_in(source_nb):
    code = "\n".join(c.source for c in source_nb.cells if c.cell_type == "code")
    assert "!pip" not in code
    lines = [line.strip() for line in code.splitlines()]
    for seeding in ("random.seed(", "np.random.seed(", "torch.manual_seed("):
        assert sum(line.startswith(seeding) for line in lines) == 1, \
            f"the global seeds are set once: {seeding}"
    assert "tick_labels=" in code and "labels=[" not in code.replace("tick_labels=", "")
    assert "HIDDEN TESTS" not in code


def test_cells_that_use_student_functions_check_them_first(source_nb):
    cells = {c.id: c.source for c in source_nb.cells}
    for cell_id, names in [("reinforce_loop", ["reinforce_loss"]),
                           ("ppo_loop", ["compute_gae", "ppo_combined_loss"]),
                           ("comparison", ["compute_gae", "ppo_combined_loss"])]:
        first = next(line for line in cells[cell_id].splitlines()
                     if line.strip() and not line.startswith("#"))
        assert first == "require_implemented(" + ", ".join(f'"{n}"' for n in names) + ")"


# --- the reference solutions, against the exact values of grading-validity.md --------------

@pytest.fixture(scope="module")
def ref(source_nb):
    import torch
    import torch.nn.functional as F

    ns = {"torch": torch, "F": F}
    cells = {c.id: c for c in source_nb.cells}
    for cell_id in GIVEN_FOR_REFERENCE + list(SOLUTIONS):
        tree = ast.parse(cells[cell_id].source)
        defs = ast.Module([n for n in tree.body if isinstance(n, ast.FunctionDef)], [])
        exec(compile(defs, cell_id, "exec"), ns)
    return ns


def close(actual, expected, tol=1e-6):
    import torch

    expected = torch.as_tensor(expected, dtype=torch.float64)
    actual = torch.as_tensor(actual).detach().to(torch.float64)
    return actual.shape == expected.shape \
        and bool(torch.allclose(actual, expected, atol=tol, rtol=0))


GAE_R = [1.0, 0.5, 2.0, 0.0, 1.0]
GAE_V = [0.5, 0.6, 0.4, 0.8, 0.3, 0.0]


def test_reference_gae_exact_values(ref):
    import torch

    gae = ref["compute_gae"]
    f64 = dict(dtype=torch.float64)
    seed = gae(torch.tensor(GAE_R, **f64), torch.tensor(GAE_V, **f64))
    assert close(seed, [3.6174455, 2.6830893, 2.5381067, 0.15535, 0.7], 1e-6)
    boot = gae(torch.tensor(GAE_R, **f64), torch.tensor(GAE_V[:-1] + [1.0], **f64))
    assert close(boot, [4.3920329, 3.5066803, 3.4138015, 1.086445, 1.69], 1e-6)
    # lam = 0 gives exactly the deltas
    assert close(gae(GAE_R, GAE_V, lam=0.0), [1.094, 0.296, 2.392, -0.503, 0.700], 1e-6)
    # lam = 1: the bootstrapped discounted return minus V(s_t)
    v_boot = GAE_V[:-1] + [1.0]
    expected = []
    for t in range(5):
        g = sum(0.99 ** k * GAE_R[t + k] for k in range(5 - t)) + 0.99 ** (5 - t) * v_boot[5]
        expected.append(g - v_boot[t])
    assert close(gae(torch.tensor(GAE_R, **f64), torch.tensor(v_boot, **f64), lam=1.0),
                 expected, 1e-9)
    assert close(gae([1.0], [0.5, 2.0]), [2.48], 1e-6)
    # float32 from lists, close to the float64 values
    out = gae(GAE_R, GAE_V)
    assert out.dtype == torch.float32
    assert close(out, [3.6174455, 2.6830893, 2.5381067, 0.15535, 0.7], 1e-5)


def test_reference_gae_types_and_inputs(ref):
    import torch

    gae = ref["compute_gae"]
    for dtype in (torch.float32, torch.float64):
        r, v = torch.tensor(GAE_R, dtype=dtype), torch.tensor(GAE_V, dtype=dtype)
        r0, v0 = r.clone(), v.clone()
        out = gae(r, v)
        assert type(out) is torch.Tensor and out.dtype == dtype and out.shape == (5,)
        assert out.device == v.device
        out.add_(100.0)  # the output must not alias an input
        assert torch.equal(r, r0) and torch.equal(v, v0)
    # a list for the rewards, a tensor for the values: the values decide
    out = gae(GAE_R, torch.tensor(GAE_V, dtype=torch.float64))
    assert out.dtype == torch.float64
    r, v = list(GAE_R), list(GAE_V)
    gae(r, v)
    assert r == GAE_R and v == GAE_V


def test_reference_ppo_policy_loss_seed_and_case_q(ref):
    import torch

    combined = ref["ppo_combined_loss"]
    f64 = dict(dtype=torch.float64)
    cases = [  # logp_new, logp_old, A, loss, d loss / d logp_new
        ([-0.5, -1.0, -0.3], [-0.7, -0.8, -0.5], [2.0, -1.0, 0.5], -0.7270897, [0, 0.2729103, 0]),
        ([-0.5, -1.5, -0.5, -1.5, -0.9], [-1.0] * 5, [1.0, 1.0, -1.0, -1.0, 0.5], 0.0179210,
         [0, -0.1213061, 0.3297443, 0, -0.1105171]),
    ]
    for new, old, adv, loss, grad in cases:
        lp = torch.tensor(new, requires_grad=True, **f64)
        zeros = torch.zeros(len(new), **f64)
        total, policy_loss, value_loss = combined(lp, torch.tensor(old, **f64),
                                                  torch.tensor(adv, **f64), zeros, zeros)
        assert close(policy_loss, loss, 1e-6) and close(total, loss, 1e-6)
        assert close(value_loss, 0.0)
        policy_loss.backward()
        assert close(lp.grad, grad, 1e-6)


def test_reference_combined_loss(ref):
    import torch

    combined = ref["ppo_combined_loss"]
    lp = torch.tensor([-0.5, -1.0, -0.3], requires_grad=True)
    values = torch.tensor([0.5, 1.0, -0.5], requires_grad=True)
    out = combined(lp, torch.tensor([-0.7, -0.8, -0.5]), torch.tensor([2.0, -1.0, 0.5]),
                   values, torch.tensor([1.0, 0.0, 0.5]), vf_coeff=0.5)
    assert isinstance(out, tuple) and len(out) == 3
    assert all(type(t) is torch.Tensor and t.dim() == 0 for t in out)
    total, policy_loss, value_loss = out
    assert close(value_loss, 0.75, 1e-6)
    assert close(policy_loss, -0.7270897, 1e-6)
    assert close(total, -0.3520897, 1e-6)
    total.backward()
    assert close(lp.grad, [0, 0.2729103, 0], 1e-5)
    assert close(values.grad, [-1 / 6, 1 / 3, -1 / 3], 1e-6)
    # vf_coeff and epsilon are used
    total2, _, _ = combined(lp, torch.tensor([-0.7, -0.8, -0.5]), torch.tensor([2.0, -1.0, 0.5]),
                            values, torch.tensor([1.0, 0.0, 0.5]), vf_coeff=1.0)
    assert close(total2, -0.7270897 + 0.75, 1e-6)
    _, wide, _ = combined(lp, torch.tensor([-0.7, -0.8, -0.5]), torch.tensor([2.0, -1.0, 0.5]),
                          values, torch.tensor([1.0, 0.0, 0.5]), epsilon=0.5)
    ratio = torch.exp(torch.tensor([0.2, -0.2, 0.2], dtype=torch.float64))
    assert close(wide, -(ratio * torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)).mean(), 1e-6)


def test_reference_reinforce_loss(ref):
    import torch
    import torch.nn.functional as F

    loss_fn = ref["reinforce_loss"]
    logits = torch.tensor([1.0, 2.0, 0.5, -1.0, 0.0], dtype=torch.float64, requires_grad=True)
    loss = loss_fn(F.log_softmax(logits, dim=0)[1], 2.0)
    assert type(loss) is torch.Tensor and loss.dim() == 0
    assert close(loss, 1.1488759, 1e-6)
    loss.backward()
    assert close(logits.grad, [0.4142479, -0.8739575, 0.2512540, 0.0560624, 0.1523933], 1e-6)
    # a batch: the mean, rewards as a tensor
    lp = torch.log(torch.tensor([0.3, 0.5], dtype=torch.float64))
    assert close(loss_fn(lp, torch.tensor([2.0, -1.0])), -(lp[0] * 2 - lp[1]) / 2, 1e-9)
    mixed = loss_fn(lp.float(), torch.tensor([2.0, -1.0], dtype=torch.float64))
    assert mixed.dtype == torch.float32


# --- the run ---------------------------------------------------------------------------------

@pytest.mark.slow   # end to end: make test-all
def test_runs_clean_with_deprecation_warnings_as_errors(executed):
    errors = {cid: f"{o.ename}: {o.evalue}" for cid, c in executed.items()
              for o in c.get("outputs", []) if o.output_type == "error"}
    assert errors == {}
    warned = {cid: stream_text(c, "stderr") for cid, c in executed.items()
              if "Warning" in stream_text(c, "stderr")}
    assert warned == {}


@pytest.mark.slow   # end to end: make test-all
def test_visible_checks_pass(executed):
    for cell_id in POINTS:
        assert "✅" in stream_text(executed[cell_id]), \
            f"grade cell {cell_id} did not report success"


@pytest.mark.slow   # end to end: make test-all
def test_reinforce_finds_the_best_arm(executed):
    match = re.search(r"Best action \(action 2\) probability: ([0-9.]+)",
                      stream_text(executed["reinforce_loop"]))
    assert match, "the REINFORCE cell prints the best action's probability"
    assert float(match.group(1)) > 0.9


@pytest.mark.slow   # end to end: make test-all
def test_comparison_prints_the_gap_closed(executed):
    text = stream_text(executed["comparison"])
    match = re.search(r"PPO closes (-?\d+)% of the gap between random and optimal!", text)
    assert match, text
    # The reference closes 82-98% of the gap over 30 seeds (20,000 evaluation states).
    assert 60 < int(match.group(1)) <= 105
    means = dict(re.findall(r"(Random|PPO|Optimal) mean reward:\s+(-?[0-9.]+)", text))
    assert float(means["Random"]) < float(means["PPO"]) <= float(means["Optimal"])


@pytest.mark.slow   # end to end: make test-all
def test_figures_are_embedded(executed):
    for cell_id in ("clipping_figure", "reinforce_loop", "ppo_loop", "comparison"):
        kinds = [o.output_type for o in executed[cell_id].outputs
                 if "image/png" in o.get("data", {})]
        assert kinds, f"{cell_id} shows no figure"


@pytest.mark.slow   # end to end: make test-all
def test_nbgrader_validate_passes(data_dir):
    proc = subprocess.run(
        [str(NBGRADER), "validate", str(SOURCE)], cwd=ROOT, env=kernel_env(data_dir),
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Success! Your notebook passes all the tests." in proc.stdout, proc.stdout[-3000:]
