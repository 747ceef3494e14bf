"""What the student wrote runs as written (README "Security model", "What runs").

The student's own cells (answer cells and cells they added) run in the worker in notebook order,
top-level statements included; the given cells the source marks as set-up run in full; the other
given cells contribute their definitions only. A statement that raises stops the rest of its
cell, later cells still run, and the error is shown with its cell and line. Shell and magic lines
are dropped, flagged (``magic_lines_dropped``) and listed. A name that only a training loop, plot
or demo binds gets a message saying so.

Submissions are the source notebook (the answer key, solution markers removed) with cells
replaced or added, graded like any other: one through the real command line, the others with
``grade_submission`` on one worker pool.
"""
from __future__ import annotations

import ast
import copy
import json

import nbformat
import pytest

from autograder import REPO_ROOT
from autograder.assignments import AssignmentError, load_assignment
from autograder.course.feedback import render_feedback
from autograder.load.extract import run_as_written
from autograder.load.notebook import read_submission
from autograder.suites import mutant_corpus
from autograder.suites.mutant_corpus import MutantGrade

from kernels import kernel_data_dir, kernel_env  # the kit's kernel set-up (tests/kernels.py)

ASSIGNMENT = "ppo"
FUNCTION_CELLS = ("reinforce_loss", "compute_gae", "ppo_combined_loss")

# --- the submissions -------------------------------------------------------------------------

# Correct answers that lean on top-level code of their own cells: a lambda, a constant made by
# a call, the given set-up's `device`, a small helper class.
REINFORCE_HELPERS = '''\
as_like = lambda x, like: torch.as_tensor(x, dtype=like.dtype, device=like.device)
NEG = torch.tensor(-1.0, device=device)      # the given set-up's device


def reinforce_loss(log_probs, rewards):
    return NEG.to(log_probs) * (log_probs * as_like(rewards, log_probs)).mean()
'''
GAE_HELPERS = '''\
TINY = torch.finfo(torch.float32).tiny       # a constant made by a call


def compute_gae(rewards, values, gamma=0.99, lam=0.95):
    if torch.is_tensor(values):
        dtype = values.dtype if values.is_floating_point() else torch.float32
        where = values.device
    else:
        dtype = torch.float32
        where = rewards.device if torch.is_tensor(rewards) else torch.device("cpu")
    r = torch.as_tensor(rewards, dtype=dtype, device=where)
    v = torch.as_tensor(values, dtype=dtype, device=where)
    out = torch.zeros(len(r), dtype=dtype, device=where)
    running = 0.0 * TINY / EPS                    # EPS: from the student's own cell above
    for t in range(len(r) - 1, -1, -1):
        running = r[t] + gamma * v[t + 1] - v[t] + gamma * lam * running
        out[t] = running
    return out
'''
COMBINED_HELPERS = '''\
class Clip:
    """The clipped ratio, as a small helper class."""

    def __init__(self, epsilon):
        self.low, self.high = 1 - epsilon, 1 + epsilon

    def __call__(self, ratio):
        return torch.clamp(ratio, self.low, self.high)


def ppo_combined_loss(log_probs_new, log_probs_old, advantages,
                      values, returns, epsilon=0.2, vf_coeff=0.5):
    ratio = torch.exp(log_probs_new - log_probs_old)
    policy_loss = -torch.min(ratio * advantages, Clip(epsilon)(ratio) * advantages).mean()
    value_loss = ((values - returns.reshape(values.shape)) ** 2).mean()
    return policy_loss + vf_coeff * value_loss, policy_loss, value_loss
'''
OWN_CELL = "EPS = torch.finfo(torch.float32).eps\nprint(f'EPS = {EPS}')\n"


def setup_names_cell(asg) -> str:
    """A student cell that uses, at top level, every name the given set-up cells bind."""
    names = dict.fromkeys(n for c in asg.cells if c.setup for n in run_as_written(c.source).names)
    return f"SETUP_SEEN = [{', '.join(names)}]\n"


def key_source(asg, function: str) -> str:
    return mutant_corpus.MARKERS.sub("", mutant_corpus.solution_cell(asg, function).source)


def insert_after(nb: dict, grade_id: str, source: str) -> int:
    """A student's own cell (no nbgrader metadata) after the cell ``grade_id``; its 1-based
    number in the notebook."""
    at = next(i for i, c in enumerate(nb["cells"])
              if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id) + 1
    nb["cells"].insert(at, {"cell_type": "code", "id": f"student-{at}-{len(nb['cells'])}",
                            "metadata": {}, "source": source, "outputs": [],
                            "execution_count": None})
    return at + 1


def helpers_everywhere(asg) -> tuple[dict, dict]:
    nb = mutant_corpus.submission_notebook(asg, {"reinforce_loss": REINFORCE_HELPERS,
                                                 "compute_gae": GAE_HELPERS,
                                                 "ppo_combined_loss": COMBINED_HELPERS})
    insert_after(nb, "setup", setup_names_cell(asg))
    insert_after(nb, "ppo_loss_given", OWN_CELL)
    return nb, {}


def first_statement_raises(asg) -> tuple[dict, dict]:
    """A cell whose first line needs the demo's `policy`, and an answer cell whose first
    statement raises: each stops there, and every later cell still loads."""
    nb = mutant_corpus.submission_notebook(
        asg, {"reinforce_loss": "1 / 0\n\n" + key_source(asg, "reinforce_loss")})
    number = insert_after(nb, "simple_bandit", "print(policy())\nAFTER = 1\n")
    return nb, {"scratch": number}


def magic_lines(asg) -> tuple[dict, dict]:
    gae = ("!pip install numpy\n%load_ext autoreload\n" + key_source(asg, "compute_gae")
           + "\n%timeit compute_gae([1.0], [0.0, 0.0])\n"
           "get_ipython().run_line_magic('matplotlib', 'inline')\n")
    nb = mutant_corpus.submission_notebook(asg, {"compute_gae": gae})
    number = insert_after(nb, "compute_gae_answer",
                          "%%time\nWARMED = compute_gae([1.0], [0.0, 0.0])\n")
    return nb, {"timed": number}


def loop_name_at_call(asg) -> tuple[dict, dict]:
    """reinforce_loss reads `env`, which only the given demo cell (not set-up) makes."""
    source = key_source(asg, "reinforce_loss").replace(
        "    rewards = torch.as_tensor(", "    n_arms = len(env.true_rewards)\n"
        "    rewards = torch.as_tensor(", 1)
    assert "env.true_rewards" in source
    return mutant_corpus.submission_notebook(asg, {"reinforce_loss": source}), {}


CASES = {"helpers_everywhere": helpers_everywhere, "first_statement_raises": first_statement_raises,
         "magic_lines": magic_lines, "loop_name_at_call": loop_name_at_call}
VIA_CLI = {"helpers_everywhere"}


@pytest.fixture(scope="module")
def asg():
    return load_assignment(ASSIGNMENT, REPO_ROOT)


@pytest.fixture(scope="module")
def written(asg, tmp_path_factory):
    """{case: (notebook path, facts)} written to disk."""
    out = {}
    directory = tmp_path_factory.mktemp("as-written")
    for name, build in CASES.items():
        nb, facts = build(asg)
        path = directory / f"{name}.ipynb"
        path.write_text(json.dumps(nb))
        out[name] = (path, facts)
    return out


@pytest.fixture(scope="module")
def graded(written):
    """{case: MutantGrade}."""
    directory = next(iter(written.values()))[0].parent
    records = {name: MutantGrade(name, "variant") for name in CASES}
    result = {name: mutant_corpus.grade_cli(records[name], written[name][0], directory,
                                            ASSIGNMENT)[0] for name in VIA_CLI}
    api = [(records[n], written[n][0]) for n in CASES if n not in VIA_CLI]
    result.update({g.name: g for g in mutant_corpus.grade_api(api, ASSIGNMENT, directory)})
    return result


def codes(g: MutantGrade) -> list[str]:
    return [f.code for f in g.flags]


def lost(g: MutantGrade) -> dict[str, float]:
    return {c: p for c, p in g.lost.items() if p > 1e-9}


# --- correct answers with top-level helpers ----------------------------------------------------

@pytest.mark.slow   # end to end: make test-all
def test_top_level_helpers_get_full_marks(graded):
    g = graded["helpers_everywhere"]
    assert g.via == "cli" and not g.grader_errors, g.flags
    assert not lost(g), (lost(g), g.outputs)
    assert g.score == g.max_score == 16
    assert "While your notebook was run for grading" not in g.result.output
    assert "magic_lines_dropped" not in codes(g)


@pytest.mark.slow   # end to end: make test-all
def test_the_same_answers_run_top_to_bottom_in_a_fresh_kernel(written, tmp_path):
    """The rule of thumb's premise: run in Jupyter, the notebook's visible checks pass (so the
    answers above are ones a student would submit), and grading gives them full marks."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    data_dir = kernel_data_dir(tmp_path)
    nb = nbformat.read(written["helpers_everywhere"][0], as_version=4)
    km = KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(
        kernel_dirs=[str(data_dir / "kernels")]))
    NotebookClient(nb, km=km, timeout=600, allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}
                   ).execute(env=kernel_env(data_dir), cleanup_kc=True)
    errors = {c.get("id"): f"{o.ename}: {o.evalue}" for c in nb.cells if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"}
    assert errors == {}
    checks = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert len(checks) == 5 and all(c.execution_count for c in checks)


# --- errors at load ----------------------------------------------------------------------------

@pytest.mark.slow   # end to end: make test-all
def test_a_statement_that_raises_stops_its_cell_and_later_cells_load(graded, written):
    g = graded["first_statement_raises"]
    assert not g.grader_errors, g.flags
    # reinforce_loss was never defined (its cell stopped at line 1): that costs its questions
    assert set(lost(g)) == {"reinforce_loss", "reinforce_training"}
    assert "ZeroDivisionError at line 1" in g.outputs["reinforce_loss"]
    # every later cell loaded: the other functions keep full marks
    assert all(g.lost[c] < 1e-9 for c in ("compute_gae", "ppo_combined_loss", "ppo_training"))
    output = g.result.output
    number = written["first_statement_raises"][1]["scratch"]
    assert f"your cell {number} (counting every cell from the top), line 1: NameError: " \
           "name 'policy' is not defined" in output
    assert "your answer cell for reinforce_loss, line 1: ZeroDivisionError" in output
    page = render_feedback(g.result)                   # the student's feedback page shows it
    assert f"your cell {number} (counting every cell from the top), line 1: NameError" in page


@pytest.mark.slow   # end to end: make test-all
def test_a_name_only_a_given_demo_or_loop_makes_is_explained(graded):
    at_load = graded["first_statement_raises"].result.output
    assert "'policy' is made only by the given cell 'simple_bandit', whose top-level code is " \
           "not run at grading" in at_load
    g = graded["loop_name_at_call"]
    assert not g.grader_errors, g.flags
    assert "reinforce_loss" in lost(g)
    message = g.outputs["reinforce_loss"]
    assert "NameError" in message and "name 'env' is not defined" in message
    assert "'env' is made only by the given cell 'simple_bandit'" in message
    assert "Define 'env' in your own cell, or pass it in as an argument" in message


# --- shell and magic lines ----------------------------------------------------------------------

@pytest.mark.slow   # end to end: make test-all
def test_magic_lines_are_dropped_flagged_and_shown(graded, written):
    g = graded["magic_lines"]
    assert not lost(g) and not g.grader_errors, (lost(g), g.flags)
    [flag] = [f for f in g.flags if f.code == "magic_lines_dropped"]
    number = written["magic_lines"][1]["timed"]
    where = "your answer cell for compute_gae"
    expected = [f"{where}, line 1: !pip install numpy", f"{where}, line 2: %load_ext autoreload",
                "%timeit compute_gae([1.0], [0.0, 0.0])",
                "get_ipython().run_line_magic('matplotlib', 'inline')",
                f"your cell {number} (counting every cell from the top), line 1: %%time"]
    for text in expected:
        assert text in flag.message, (text, flag.message)
    page = render_feedback(g.result)
    assert "magic lines dropped" in page.lower() or "not run at grading" in page
    assert "!pip install numpy" in page and "%%time" in page


# --- which cells run, without a worker ----------------------------------------------------------

def test_the_set_up_cells_are_marked_in_the_source_and_kept_in_the_release():
    for name in ("ppo", "ppo_lm"):
        asg = load_assignment(name, REPO_ROOT)
        setup = {c.id for c in asg.cells if c.setup}
        assert "setup" in setup, name
        release = nbformat.read(REPO_ROOT / "release" / name / f"{name}.ipynb", as_version=4)
        released = {c.id for c in release.cells if c.metadata.get("autograder", {}).get("setup")}
        assert released == setup, name
        # set-up runs before any answer: it must not use a student's function
        functions = set(asg.solution_functions.values())
        for cell in asg.cells:
            if cell.setup:
                tree = ast.parse(run_as_written(cell.source).code)
                used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} & functions
                assert not used, (name, cell.id, used)


def test_what_only_non_set_up_given_cells_bind_is_known(asg, written):
    sub = read_submission(written["helpers_everywhere"][0], asg)
    assert sub.readable and sub.cell_problems == {}
    assert {"policy", "env", "optimizer", "gap_closed", "fig"} <= set(sub.given_only)
    assert sub.given_only["env"] == "simple_bandit"
    bound_by_setup = {n for c in asg.cells if c.setup for n in run_as_written(c.source).names}
    defined_by_definitions = {"ppo_loss", "SimpleBandit", "ContextualBandit", "GAMMA"}
    assert not (bound_by_setup | defined_by_definitions) & set(sub.given_only)
    # the student's own names are theirs, whatever the given cells also bind
    assert not {"EPS", "TINY", "NEG", "as_like", "Clip"} & set(sub.given_only)


def test_only_given_code_cells_may_be_marked_set_up(tmp_path, monkeypatch):
    (tmp_path / "assignments" / "toy").mkdir(parents=True)
    (tmp_path / "source" / "toy").mkdir(parents=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "def f():\n    return 1\n", metadata={
            "autograder": {"setup": True},
            "nbgrader": {"grade": False, "solution": True, "locked": False, "grade_id": "f_answer",
                         "schema_version": 3}})])
    nbformat.write(nb, str(tmp_path / "source" / "toy" / "toy.ipynb"))
    with pytest.raises(AssignmentError, match="marked as set-up"):
        load_assignment("toy", tmp_path)
    nb.cells[0].metadata["autograder"] = {"setup": "yes"}      # only true marks a cell
    nbformat.write(copy.deepcopy(nb), str(tmp_path / "source" / "toy" / "toy.ipynb"))
    assert not load_assignment("toy", tmp_path).cells[0].setup


@pytest.mark.parametrize("name", ["ppo", "ppo_lm"])
def test_every_set_up_name_is_there_for_the_students_cells_in_the_sandbox(name, tmp_path):
    """The rule of thumb for every name the given set-up binds, in both assignments: the
    release with one more student cell that uses them all at top level, and an answer that
    reads one inside its function, loads in the grading sandbox without an error."""
    from autograder.config import load_settings
    from autograder.sandbox import protocol
    from autograder.sandbox.backends import BackendUnavailable, resolve_backend
    from autograder.sandbox.client import Worker

    asg = load_assignment(name, REPO_ROOT)
    nb = json.loads((REPO_ROOT / "release" / name / f"{name}.ipynb").read_text())
    last_setup = [c.id for c in asg.cells if c.setup][-1]
    insert_after(nb, last_setup, setup_names_cell(asg) + "SEEN_ALL = len(SETUP_SEEN)\n")
    path = tmp_path / f"{name}.ipynb"
    path.write_text(json.dumps(nb))
    sub = read_submission(path, asg)
    assert sub.readable and sub.cell_problems == {} and sub.flags == []
    settings = load_settings(REPO_ROOT)
    try:
        backend = resolve_backend(settings.sandbox)
    except BackendUnavailable:
        backend = "unsafe"
    worker = Worker(settings.limits, backend=backend, device="cpu")
    try:
        worker.start()
        reply = worker.load(sub.cells + [{"id": "probe", "source": "def probe():\n"
                                          "    return SEEN_ALL, str(device)\n"}])
        assert reply["cell_errors"] == []
        assert "probe" in reply["defined"] and "require_implemented" in reply["defined"]
        answer = worker.request({"op": "call", "fn": "probe", "args": [], "kwargs": {},
                                 "leaves": {}, "seed": 0, "backward": None}, 30)
        assert answer["ok"], answer
        seen, device = protocol.decode(answer["value"])[0]
        assert seen == len({n for c in asg.cells if c.setup
                            for n in run_as_written(c.source).names}) and device == "cpu"
    finally:
        worker.close()


@pytest.mark.slow   # end to end: make test-all
def test_the_time_a_notebook_takes_to_load_counts_against_the_workers_budget():
    """Three cells of 5 s each, each under the cell limit (10 s), outlast a 12 s wall-clock
    budget: the load is stopped and flagged limit_wall. One short cell loads (the control)."""
    import dataclasses

    from autograder.config import load_settings
    from autograder.sandbox.client import Worker

    base = load_settings(REPO_ROOT)
    limits = dataclasses.replace(base.limits, wall_seconds=12, call_timeout_seconds=10)
    cell = "import time\ntime.sleep({})\nDONE = True\n"
    short = [{"id": "cell-1", "source": cell.format(0.5)}]
    slow = [{"id": f"cell-{i}", "source": cell.format(5)} for i in (1, 2, 3)]
    for cells, over in ((short, False), (slow, True)):
        worker = Worker(limits, backend="unsafe", device="cpu")
        try:
            worker.start()
            reply = worker.load(cells)
            flags = [f["code"] for f in worker.flags()]
            assert bool(reply.get("load_failed")) == over, reply
            assert ("limit_wall" in flags) == over, flags
        finally:
            worker.close()
