"""The notebooks' check cells as a student runs them: every visible check of a question runs and
is listed (✓/✗ with its message), the cell still fails when any failed (so `nbgrader validate`
keeps working), and the last cell sums up every question without nbgrader."""
from __future__ import annotations

import contextlib
import io
import re

import nbformat
import pytest

from autograder import REPO_ROOT
from autograder.course.demo import MARKER as MARKERS  # the solution markers

NOTEBOOKS = {"ppo": REPO_ROOT / "source" / "ppo" / "ppo.ipynb",
             "ppo_lm": REPO_ROOT / "source" / "ppo_lm" / "ppo_lm.ipynb"}


def cells(assignment: str) -> dict[str, str]:
    nb = nbformat.read(NOTEBOOKS[assignment], as_version=4)
    return {c.id: MARKERS.sub("", c.source) for c in nb.cells if c.cell_type == "code"}


def run(namespace: dict, source: str) -> tuple[str, BaseException | None]:
    """Run one cell's code (IPython magics dropped) as the kernel would; (stdout, error)."""
    code = "\n".join(line for line in source.splitlines() if not line.startswith("%"))
    out = io.StringIO()
    error = None
    with contextlib.redirect_stdout(out):
        try:
            exec(compile(code, "<cell>", "exec"), namespace)
        except Exception as exc:       # the cell's error, as the notebook would show it
            error = exc
    return out.getvalue(), error


@pytest.fixture
def ppo():
    src = cells("ppo")
    ns: dict = {}
    for cell_id in ("setup", "helpers", "checks"):
        assert run(ns, src[cell_id])[1] is None, cell_id
    return src, ns


def test_the_helper_is_one_and_the_same_in_both_notebooks_and_needs_no_autograder():
    a, b = cells("ppo")["checks"], cells("ppo_lm")["checks"]
    assert a == b
    assert "autograder" not in a and "nbgrader" not in a.replace("without nbgrader", "")


def test_a_wrong_function_shows_every_failing_check_then_fails(ppo):
    src, ns = ppo
    # values[t] where values[t + 1] belongs: the worked example, lam = 0 and the bootstrap fail
    wrong = src["compute_gae_answer"].replace("gamma * values[t + 1] - values[t]",
                                              "gamma * values[t] - values[t]")
    assert wrong != src["compute_gae_answer"]
    run(ns, wrong)
    out, error = run(ns, src["compute_gae"])
    marks = re.findall(r"^([✓✗]) (.+)$", out, re.M)
    assert len(marks) == 4                                    # all four checks ran
    failed = [title for mark, title in marks if mark == "✗"]
    assert len(failed) == 3 and [m for m, _ in marks].count("✓") == 1
    assert out.count("expected") >= 3                         # each with its own message
    assert isinstance(error, AssertionError)                  # the cell still fails
    assert "3 of 4 checks failed" in str(error)
    assert "✅" not in out

    right = src["compute_gae_answer"]
    run(ns, right)
    out, error = run(ns, src["compute_gae"])
    assert error is None and out.count("✓ ") == 4 and "✅ compute_gae passes all 4" in out


def test_the_last_cell_sums_up_every_question(ppo):
    src, ns = ppo
    run(ns, src["reinforce_loss_answer"])
    assert run(ns, src["reinforce_loss"])[1] is None
    run(ns, src["ppo_combined_loss_answer"].replace("vf_coeff * value_loss", "value_loss"))
    assert isinstance(run(ns, src["ppo_combined_loss"])[1], AssertionError)
    # compute_gae is left as the stub: its check cell stops before any check
    ns["compute_gae"] = lambda *a, **k: (_ for _ in ()).throw(NotImplementedError())
    assert isinstance(run(ns, src["compute_gae"])[1], NotImplementedError)
    out, error = run(ns, src["summary"])
    assert error is None                                       # the summary never fails
    lines = {line.split(":")[0].split()[-1]: line for line in out.splitlines() if ":" in line}
    assert lines["reinforce_loss"].startswith("✅")
    assert "all 3 checks passed" in lines["reinforce_loss"]
    assert lines["ppo_combined_loss"].startswith("❌")
    assert "failing:" in lines["ppo_combined_loss"]
    assert "not written yet" in lines["compute_gae"]
    assert "not checked yet" in lines["ppo_training"]
    assert "not checked yet" in lines["reinforce_training"]


@pytest.mark.parametrize("assignment", sorted(NOTEBOOKS))
def test_every_check_cell_uses_the_helper_and_the_summary_names_every_question(assignment):
    nb = nbformat.read(NOTEBOOKS[assignment], as_version=4)
    grade = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    for c in grade:
        gid = c.metadata["nbgrader"]["grade_id"]
        assert f'check = Checks("{gid}")' in c.source and c.source.rstrip().endswith("check.done()")
        assert c.source.count("with check(") >= 1
        assert not re.search(r"^assert ", c.source, re.M), f"{gid}: an assert outside a check"
    last = nb.cells[-1]
    assert last.id == "summary" and last.metadata["nbgrader"]["locked"]
    named = re.findall(r'"(\w+)"', last.source)
    assert named == [c.metadata["nbgrader"]["grade_id"] for c in grade]
