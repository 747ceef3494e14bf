"""Hostile and broken submissions: the adversarial corpus, graded, each against its expected
outcome.

The corpus is data: ``tests/adversarial/cases/*.toml``, one file per submission (the format is
described in ``tests/adversarial/README.md``). A case is a small change to the source notebook
(the answer key with its solution markers removed, as a student's copy has none) or a whole
crafted file, plus what grading it must give: the score of every grade cell, the flags, and
fragments of the messages a student reads.

The harness (case loading, building submissions, grading the corpus one case at a time and as
one ``grade_course`` batch, the probes around the grading) is
``tests/adversarial/corpus_harness.py``; this module holds the tests. One fixture grades the
corpus once (``corpus``), another grades it as a batch (``batch``: the slow end-to-end half,
run by ``make test-all``).

``PYTHONPATH=tests .venv/bin/python tests/adversarial/corpus_harness.py [CASE ...]`` grades the
corpus and prints the table.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from corpus_harness import (ASSIGNMENT, BATCH_LIMITS, CASES, CELLS, GROUPS, MEMORY_FLOOR, REPO,
                            SCORE_WORDS, Batch, Case, Context, Corpus, build, cell_outputs, check,
                            diff, grade_batch, grade_corpus, make_course, solution_sources, table)


# --- the tests ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    result = grade_corpus(tmp_path_factory.mktemp("adversarial"), CASES)
    print("\n" + table(result))
    return result


def test_the_corpus_is_complete():
    names = [c.name for c in CASES]
    assert len(names) >= 30 and len(set(names)) == len(names)
    assert {c.group for c in CASES} == set(GROUPS), {c.group for c in CASES}
    for c in CASES:
        assert c.title and c.edits, c.name
        assert c.suite in ("functions", "full") and c.via in ("api", "cli"), c.name
        assert set(c.expect) <= {"scores", "flags", "no_flags", "messages", "output",
                                 "forbidden"}, c.name
        for cell, want in c.expect.get("scores", {}).items():
            assert want in SCORE_WORDS or isinstance(want, (int, float)), (c.name, cell)
        # an expected loss is always explained to the student
        for cell, want in c.expect.get("scores", {}).items():
            if want != "full":
                assert cell in c.expect.get("messages", {}), (c.name, cell)
    assert sum(c.via == "cli" for c in CASES) >= 3
    assert sum(c.suite == "full" for c in CASES) >= 5


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_case(corpus, name):
    g = corpus.graded[name]
    problems = check(g.case, g, corpus.slack)
    assert not problems, f"{name} ({g.case.title}):\n  " + "\n  ".join(problems)


def test_nothing_outside_the_scratch_changed(corpus):
    """The course directory (source, release, solutions, gradebook, config) is byte-identical,
    the canary files in /tmp are untouched, and no sandboxed uid left anything in the shared
    temporary directories."""
    assert diff(corpus.course_before, corpus.course_after) == []
    assert diff(corpus.canary_before, corpus.canary_after) == []
    assert corpus.tmp_changes == []


def test_nothing_reached_the_network_listener(corpus):
    assert corpus.listener_connections == 0


def test_no_sandboxed_process_outlives_the_pool(corpus):
    assert corpus.sandbox_uids, "no sandboxed process was seen: the corpus did not run sandboxed"
    assert corpus.leftover == []


def test_memory_bombs_keep_the_machine_available(corpus):
    watched = {c.name for c in CASES if c.watch_memory}
    assert watched and set(corpus.memory) == watched
    for name, (lowest, samples) in corpus.memory.items():
        assert samples >= 10, (name, samples)
        assert lowest > MEMORY_FLOOR, f"{name}: MemAvailable fell to {lowest / 2**30:.1f} GiB"


def test_time_is_bounded_by_the_limits(corpus):
    """No case's grading took longer than its wall limit plus the allowance measured in this
    run (``SLACK_COLD_STARTS`` cold starts: about 7 s on a quiet machine). A limit that is not
    enforced lets a loop run to the CPU limit (30 s) or forever, far beyond it, on a busy
    machine too."""
    slowest = max(corpus.graded.values(), key=lambda g: g.seconds - g.case.wall_seconds)
    assert slowest.seconds <= slowest.case.wall_seconds + corpus.slack, \
        (slowest.case.name, slowest.seconds, corpus.slack)


def test_the_grading_parent_survives(corpus):
    """Every case recorded exactly one result and every CLI run exited 0."""
    assert all(g.result is not None and g.results_recorded == 1 for g in corpus.graded.values())
    assert all(g.exit_code == 0 for g in corpus.graded.values() if g.case.via == "cli")


def test_no_escape_marker_anywhere_in_the_kit(corpus):
    """The hostile cases name every file they try to create outside the scratch adv-escape*."""
    assert not list(REPO.glob("**/adv-escape*")), list(REPO.glob("**/adv-escape*"))


def test_the_probes_find_secrets_and_the_listener_when_unconfined(corpus):
    """Control for the "outside" cases (reads_secrets, network): the same kind of probe,
    graded without the sandbox, finds the course's secrets and the grader's listener."""
    result = corpus.controls["unconfined_probe"]
    assert result["extra_data"]["sandbox"] == "unsafe"
    message = cell_outputs(result)["compute_gae"]
    for secret in ("solutions/ppo/ppo.ipynb", "gradebook.db", "source/ppo/ppo.ipynb",
                   "listener"):
        assert secret in message, (secret, message[:500])


def test_a_fault_in_the_suite_costs_only_the_tests_it_hits(corpus):
    """A kit bug during the hidden tests (injected: every trusted training run raises) fails
    the tests it hits with the generic message and a grader_error flag for the staff; the other
    questions are graded as usual and the fault's text never reaches the student."""
    result = corpus.controls["kit_fault"]
    cells = result["extra_data"]["grade_cells"]
    flags = {f["code"]: f["message"] for f in result["extra_data"]["flags"]}
    assert "injected fault in the kit's harness call" in flags["grader_error"]
    for cell in ("reinforce_loss", "compute_gae", "ppo_combined_loss"):
        assert cells[cell]["score"] == cells[cell]["max_score"], cell
    for cell in ("reinforce_training", "ppo_training"):
        assert cells[cell]["score"] == 0, cell
    failed = [t for t in result["tests"] if t["status"] == "failed"]
    assert len(failed) == 2 and all("error in the grader" in t["output"] for t in failed)
    assert "injected" not in json.dumps(result["tests"])


def test_a_broken_reference_is_a_grader_error_not_the_students(corpus):
    """When the answer key itself fails (here: its imports left out), no check blames the
    student: each failed check says the grader failed, and the staff get a grader_error."""
    result = corpus.controls["broken_reference"]
    flags = {f["code"]: f["message"] for f in result["extra_data"]["flags"]}
    assert "the answer key did not load in the reference worker" in flags["grader_error"]
    failed = [t for t in result["tests"] if t["status"] == "failed"]
    assert failed and all("error in the grader" in t["output"] for t in failed)
    assert "NameError" not in json.dumps(result["tests"])


# --- the whole corpus as one grade-course batch ---------------------------------------------------
# A second grading of the whole corpus, end to end (slot processes, gradebook, feedback pages):
# about a minute, so it runs in `make test-all` (marked slow).

@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Batch:
    result = grade_batch(tmp_path_factory.mktemp("batch"), CASES)
    print(f"\ngrade-course: {len(result.run.results)} submissions in {result.seconds:.0f} s, "
          f"MemAvailable >= {result.memory[0] / 2**30:.1f} GiB")
    return result


@pytest.mark.slow
def test_the_batch_grades_every_submission_once(batch):
    """``grade-course`` over the whole corpus completes: each student folder holds exactly one
    results.json (no temporary file left), each result is that student's, none is a grader
    error, and each has its feedback page."""
    names = sorted(c.name for c in CASES)
    assert sorted(batch.run.graded_now) == names and batch.run.skipped == []
    assert sorted(batch.run.results) == names
    assert batch.folders == {n: [f"{ASSIGNMENT}.ipynb", "results.json", "submission_secret.txt",
                                 "timestamp.txt"] for n in names}
    for name, data in batch.run.results.items():
        flags = [f["code"] for f in data["extra_data"]["flags"]]
        assert data["extra_data"]["student"] == name
        assert "grader_error" not in flags, (name, data["extra_data"]["flags"])
        page = batch.course / "feedback" / name / ASSIGNMENT / f"{ASSIGNMENT}.html"
        assert page.is_file(), name


@pytest.mark.slow
def test_the_batch_records_each_submission_in_the_gradebook(batch):
    """One nbgrader submission per student, each grade cell holding the result's score (the
    training questions, not run by this batch's grader, hold 0)."""
    assert sorted(batch.gradebook) == sorted(c.name for c in CASES)
    for name, grades in batch.gradebook.items():
        cells = batch.run.results[name]["extra_data"]["grade_cells"]
        assert set(grades) == set(CELLS), name
        for cell in CELLS:
            want = cells[cell]["score"] if cell in cells else 0.0
            assert grades[cell] == pytest.approx(want), (name, cell)


@pytest.mark.slow
def test_the_batch_changes_nothing_but_its_outputs(batch):
    """source/, release/, solutions/, the configuration and every submission are byte-identical
    after the batch."""
    assert diff(batch.kept_before, batch.kept_after) == []


@pytest.mark.slow
def test_the_batch_keeps_the_machine_available(batch):
    lowest, samples = batch.memory
    assert samples >= 100, samples
    assert lowest > MEMORY_FLOOR, f"MemAvailable fell to {lowest / 2**30:.1f} GiB"


@pytest.mark.slow
def test_the_batch_time_is_bounded_by_the_limits(batch):
    """No submission's grading took longer than the wall clock limit plus the allowance
    measured around the batch (see ``test_time_is_bounded_by_the_limits``)."""
    slowest = max(batch.run.results.items(), key=lambda kv: kv[1]["execution_time"])
    assert slowest[1]["execution_time"] <= BATCH_LIMITS["wall_seconds"] + batch.slack, \
        (slowest[0], slowest[1]["execution_time"], batch.slack)


@pytest.mark.slow
def test_the_batch_agrees_with_one_by_one_grading(corpus, batch):
    """Graded in a batch (slot processes, a shared pool) or on its own, a case scores the same
    on every question, wherever both graded it the same way (function questions, the corpus's
    own limits)."""
    same = [c for c in CASES if c.suite == "functions" and c.via == "api" and not c.limits]
    assert len(same) >= 30
    for case in same:
        alone = corpus.graded[case.name].result["extra_data"]["grade_cells"]
        batched = batch.run.results[case.name]["extra_data"]["grade_cells"]
        assert {k: v["score"] for k, v in batched.items()} == \
            {k: v["score"] for k, v in alone.items()}, case.name


# --- crash safety ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_course(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    course = make_course(root)
    ctx = Context(course=course, canary=root, port=0, out_dir=root,
                  solutions=solution_sources(course))
    path = build(Case("answer_key", "the answer key", "notebook", [], {}), ctx, root)
    return course, path


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """The CLI's ``main`` called in this process: as a library it must leave the process's own
    limits alone (only the program, ``python -m autograder``, bounds its address space)."""
    import resource

    from autograder.__main__ import main

    before = resource.getrlimit(resource.RLIMIT_AS)
    code = main(argv)
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def grade_small_course(course, path, out, capsys) -> tuple[str, dict]:
    """``python -m autograder grade`` of ``path`` into ``out`` (in-process): it must exit 0;
    what it printed and the result it wrote."""
    code, printed = run_cli(["grade", str(path), "--assignment", ASSIGNMENT, "--out", str(out),
                             "--course-dir", str(course)], capsys)
    assert code == 0
    return printed, json.loads(out.read_text())


def test_a_fault_in_the_kit_is_recorded_and_reported(small_course, tmp_path, monkeypatch, capsys):
    """An unexpected exception inside grading (injected into the session start) still records
    exactly one result, a grader error with every question at 0, and the CLI says so, exit 0."""
    from autograder.grade import submission as submission_module

    course, path = small_course

    class Broken:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("injected fault in the kit")

    monkeypatch.setattr(submission_module, "Session", Broken)
    out = tmp_path / "r.json"
    printed, result = grade_small_course(course, path, out, capsys)
    flags = {f["code"]: f["message"] for f in result["extra_data"]["flags"]}
    assert "injected fault in the kit" in flags["grader_error"]
    assert result["score"] == 0 and set(result["extra_data"]["grade_cells"]) == {
        "reinforce_loss", "reinforce_training", "compute_gae", "ppo_combined_loss", "ppo_training"}
    assert all("error in the grader" in t["output"] for t in result["tests"])
    assert "grader_error" in printed and "injected fault in the kit" in printed
    assert list(tmp_path.iterdir()) == [out]             # no temporary file left behind


def test_a_fault_while_reading_is_recorded(small_course, tmp_path, monkeypatch, capsys):
    from autograder.load import notebook

    course, path = small_course

    def broken(*args, **kwargs):
        raise KeyError("injected fault while reading")

    monkeypatch.setattr(notebook, "build", broken)
    out = tmp_path / "r.json"
    printed, result = grade_small_course(course, path, out, capsys)
    codes = [f["code"] for f in result["extra_data"]["flags"]]
    assert "grader_error" in codes and "unreadable_notebook" in codes
    assert "injected fault while reading" in json.dumps(result["extra_data"]["flags"])
    assert result["score"] == 0 and "grader_error" in printed


def test_results_are_written_atomically(tmp_path, monkeypatch):
    """GradingResult.write goes through write_atomic: a write that fails midway leaves the old
    file whole and no temporary file behind."""
    from autograder import results
    from autograder.results import GradingResult, TestResult

    calls = []
    real = results.write_atomic
    monkeypatch.setattr(results, "write_atomic", lambda p, t: (calls.append(p), real(p, t)))
    r = GradingResult(1.0, 0.1, "ok", [TestResult("t", 1.0, 1.0, "passed", "", ["c"])])
    target = tmp_path / "results.json"
    r.write(target)
    assert calls == [target] and json.loads(target.read_text())["score"] == 1.0
    before = target.read_bytes()

    def fail(fd):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "fsync", fail)
    r.score = 0.0
    with pytest.raises(OSError):
        r.write(target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


# --- grade-course: renamed notebooks, two notebooks in one folder ----------------------------

@pytest.mark.slow      # python -m autograder grade-course end to end: about 12 s
def test_grade_course_renamed_and_doubled_notebooks(tmp_path):
    """Through ``python -m autograder grade-course``: a renamed notebook is graded and flagged;
    a folder with ppo.ipynb and a copy grades ppo.ipynb and flags the extra; a folder with two
    notebooks, neither named ppo.ipynb, records a zero result that says why. Exit 0."""
    course = make_course(tmp_path, gradebook=False)        # grade-course makes its own
    release = (REPO / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_bytes()
    layout = {"alice": ["my final PPO (1).ipynb"], "bob": ["ppo.ipynb", "ppo-Copy1.ipynb"],
              "carol": ["draft.ipynb", "final.ipynb"]}
    for student, names in layout.items():
        folder = course / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        for name in names:
            (folder / name).write_bytes(release)
    proc = subprocess.run([sys.executable, "-m", "autograder", "grade-course", ASSIGNMENT,
                           "--course-dir", str(course), "--jobs", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {s: json.loads((course / "autograded" / s / ASSIGNMENT / "results.json")
                             .read_text()) for s in layout}
    codes = {s: [f["code"] for f in r["extra_data"]["flags"]] for s, r in results.items()}
    assert "renamed_notebook" in codes["alice"] and "grader_error" not in codes["alice"]
    assert "extra_notebooks" in codes["bob"] and "grader_error" not in codes["bob"]
    assert "ambiguous_submission" in codes["carol"] and results["carol"]["score"] == 0
    assert all("draft.ipynb" in t["output"] and "final.ipynb" in t["output"]
               for t in results["carol"]["tests"])
    for r in (results["alice"], results["bob"]):     # graded: every answer is still a stub
        outputs = " ".join(t["output"] for t in r["tests"])
        assert r["score"] == 0 and "NotImplementedError" in outputs

