"""Cohort seeding: a regrade is byte-identical, and two students get different hidden inputs.

One wrong submission (GAE with lambda ignored) is graded three times for the same student: once
through the command line with fresh workers, twice in-process through the shared worker pool.
The three results must be the same JSON except ``execution_time``. The same notebook graded for
another student must see other hidden inputs: the numeric differences its messages quote differ.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from autograder import REPO_ROOT
from autograder.assignments import load_assignment
from autograder.config import load_settings
from autograder.grade.pool import WorkerPool
from autograder.grade.submission import grade_submission
from autograder.seeding import derive_seed
from autograder.plugins import module_of
from autograder.suites.mutant_corpus import sandbox_arguments

mutant_source = module_of("ppo", "corpus").mutant_source
submission_notebook = module_of("ppo", "corpus").submission_notebook
MUTANTS = module_of("ppo", "mutants").MUTANTS


def without_time(result: dict) -> str:
    result = dict(result)
    result.pop("execution_time")
    return json.dumps(result, sort_keys=True)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("regrade")
    assignment = load_assignment("ppo", REPO_ROOT)
    mutant = next(m for m in MUTANTS if m.name == "gae_lambda_ignored")
    nb = tmp / "ppo.ipynb"
    nb.write_text(json.dumps(submission_notebook(assignment, mutant.function,
                                                 mutant_source(assignment, mutant))))
    out = tmp / "cli.json"
    proc = subprocess.run([sys.executable, "-m", "autograder", "grade", str(nb), "--assignment",
                           "ppo", "--student", "alice", "--out", str(out), *sandbox_arguments()],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = {"alice-cli": json.loads(out.read_text())}
    settings = load_settings(REPO_ROOT)
    pool = WorkerPool(settings)
    try:
        for name, student in (("alice-pool-1", "alice"), ("alice-pool-2", "alice"),
                              ("bob", "bob")):
            runs[name] = grade_submission(nb, "ppo", student=student, settings=settings,
                                          pool=pool).to_json()
    finally:
        pool.close()
    return runs


@pytest.mark.slow   # end to end: make test-all
def test_regrading_three_times_gives_identical_json(graded):
    first = without_time(graded["alice-cli"])
    assert graded["alice-cli"]["score"] < graded["alice-cli"]["extra_data"]["max_score"]
    assert without_time(graded["alice-pool-1"]) == first
    assert without_time(graded["alice-pool-2"]) == first


@pytest.mark.slow   # end to end: make test-all
def test_two_students_get_different_hidden_inputs(graded):
    def gae_messages(run):
        return [t["output"] for t in run["tests"]
                if t["tags"] == ["compute_gae"] and t["status"] == "failed"]

    alice, bob = gae_messages(graded["alice-cli"]), gae_messages(graded["bob"])
    assert alice and bob
    # The seed examples are shared; the hidden random inputs are not.
    assert alice != bob
    assert graded["bob"]["score"] == graded["alice-cli"]["score"]


def test_seeds_depend_on_cohort_student_and_test():
    base = derive_seed(1, "alice", "test_x")
    assert base == derive_seed(1, "alice", "test_x")
    assert len({base, derive_seed(2, "alice", "test_x"), derive_seed(1, "bob", "test_x"),
                derive_seed(1, "alice", "test_y")}) == 4
