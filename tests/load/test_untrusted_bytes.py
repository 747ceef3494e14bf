"""Every byte from a student is untrusted input with a bounded cost (README "Security model").

- Regular files only: links (to the answer key, to a classmate, to /proc/self/mem), a linked
  student folder, a FIFO, a folder where the notebook should be are refused with a reason, and
  never read: ``read_submission``, ``grade`` and ``grade-course``.
- Bounded cost: the JSON values of a notebook and of a reply line are counted before parsing
  (``count_json_values`` checked against the values a real parse builds); a maximal
  pathological notebook, an oversized file and a maximal pathological reply line keep every
  trusted process (the ``grade`` command, the ``grade-course`` coordinator with its hashing,
  each slot) under ``bounds.TRUSTED_PROCESS_MAX_BYTES``, measured as VmHWM by
  ``tests/untrusted/sitecustomize.py``.
- One student never stops the cohort: a cohort with all the hostile submissions above and a
  folder whose name is not UTF-8 gives every honest student the same score, gradebook row,
  feedback page and report entry as the same cohort without them, and exits 0 naming each one.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autograder import REPO_ROOT as REPO
from autograder import bounds
from autograder.load import untrusted
from corpus_harness import (ASSIGNMENT, BATCH_GRADER_DIR, SUITE_ENV, base_notebook,
                            make_course)
from timing import allowance

PROBE_DIR = REPO / "tests" / "untrusted"
HONEST = ("alice", "bob", "carol")
CELLS = ("reinforce_loss", "reinforce_training", "compute_gae", "ppo_combined_loss",
         "ppo_training")


# --- files -------------------------------------------------------------------------------------

def write_nb(path: Path, nb: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb))
    return path


def pathological_notebook(nb: dict, width: int = 1) -> bytes:
    """The answer key, plus a metadata entry of tiny containers and a padding string, so that
    the file is just under the size cap, the values cap and the parse estimate for text of
    ``width`` bytes a character (one character of that width in the padding): it must still
    be graded."""
    text = json.dumps(nb).encode()
    have = untrusted.count_json_values(text, 10 * bounds.NOTEBOOK_MAX_VALUES)
    n = (bounds.NOTEBOOK_MAX_VALUES - have - 10) // 2            # "[]," is two values
    body = b"[" + b"[]," * n + b"[]]"
    wide = {1: "a", 2: "\u4e2d", 4: "\U0001F600"}[width].encode()
    head, tail = text[:-1], b', "x": ' + body + b', "pad": "' + wide
    size = min(bounds.NOTEBOOK_MAX_BYTES, bounds.NOTEBOOK_MAX_PARSE_BYTES // (1 + 2 * width))
    pad = size - len(head) - len(tail) - 3
    return head + tail + b"a" * pad + b'"}'


def oversized(path: Path, nb: dict) -> Path:
    """A notebook followed by zeros (sparse) up to 1.5 times the size cap."""
    write_nb(path, nb)
    os.truncate(path, bounds.NOTEBOOK_MAX_BYTES * 3 // 2)
    return path


def junk_line(kind: str) -> str:
    """Python source of a bytes literal builder: one line student code writes to the worker's
    reply descriptor (fd 4, autograder/sandbox/worker.py). ``parsed``: just under the byte cap
    and the values cap, so the parent parses it (and skips it: no such request); ``values``:
    over the values cap; ``bytes``: over the byte cap."""
    n, cap = bounds.REPLY_MAX_VALUES, bounds.REPLY_MAX_BYTES
    if kind == "parsed":
        return (f'(lambda v: v + b"a" * ({cap} - len(v) - 4) + b\'"}}\\n\')('
                f'b\'{{"id": "junk", "v": [\' + b"[]," * {n // 2 - 20} + b\'[]], "pad": "\')')
    if kind == "values":
        return f'b"[" + b"[]," * {n} + b"[]]\\n"'
    return f'b"[" + b"0" * {cap + (16 << 20)} + b"]\\n"'


def reply_notebook(nb: dict) -> dict:
    """The answer key whose functions first write a junk line to the reply channel, once:
    reinforce_loss a maximal line within the bounds, compute_gae one over the values cap,
    ppo_combined_loss one over the byte cap."""
    nb = json.loads(json.dumps(nb))
    which = {"reinforce_loss_answer": ("reinforce_loss", "parsed"),
             "compute_gae_answer": ("compute_gae", "values"),
             "ppo_combined_loss_answer": ("ppo_combined_loss", "bytes")}
    for cell in nb["cells"]:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in which:
            fn, kind = which[gid]
            src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            head = f"def {fn}("
            junk = (f"    if not globals().setdefault('_junk_{fn}', []):\n"
                    f"        globals()['_junk_{fn}'].append(1)\n"
                    f"        import os as _os\n"
                    f"        _view = memoryview({junk_line(kind)})\n"
                    f"        while _view:\n"
                    f"            _view = _view[_os.write(4, _view):]\n")
            i = src.index(head)
            j = src.index(":\n", src.index(")", i)) + 2
            doc_end = src.find('"""', src.find('"""', j) + 3)
            at = doc_end + 4 if src[j:].lstrip().startswith('"""') else j
            cell["source"] = src[:at] + junk + src[at:]
    return nb


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    return make_course(tmp_path_factory.mktemp("untrusted"), gradebook=False)


@pytest.fixture(scope="module")
def answer_key(course) -> dict:
    return base_notebook(course)


# --- regular files only ------------------------------------------------------------------------

def hostile_layout(submitted: Path, course: Path, nb: dict) -> dict[str, str]:
    """The refused submissions, each in its own student folder: name -> what it is."""
    made = {}

    def folder(student: str) -> Path:
        d = submitted / student / ASSIGNMENT
        d.mkdir(parents=True)
        return d

    os.symlink(course / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb",
               folder("mallory") / "ppo.ipynb")
    made["mallory"] = "a link to the answer key"
    os.symlink(Path("..") / ".." / "alice" / ASSIGNMENT / "ppo.ipynb",
               folder("copycat") / "ppo.ipynb")
    made["copycat"] = "a link to a classmate's notebook"
    os.symlink("/proc/self/mem", folder("eve") / "ppo.ipynb")
    made["eve"] = "a link to /proc/self/mem"
    os.mkfifo(folder("piper") / "ppo.ipynb")
    made["piper"] = "a FIFO"
    (folder("dora") / "ppo.ipynb").mkdir()
    made["dora"] = "a folder named ppo.ipynb"
    os.symlink(submitted / "alice", submitted / "linus")
    made["linus"] = "a linked student folder"
    return made


@pytest.mark.parametrize("student", ["mallory", "copycat", "eve", "piper", "dora", "linus"])
def test_read_submission_refuses_what_is_not_a_regular_file(course, answer_key, tmp_path,
                                                           student):
    from autograder.assignments import load_assignment
    from autograder.load.notebook import read_submission

    submitted = tmp_path / "submitted"
    write_nb(submitted / "alice" / ASSIGNMENT / "ppo.ipynb", answer_key)
    what = hostile_layout(submitted, course, answer_key)[student]
    asg = load_assignment(ASSIGNMENT, course)
    started = time.monotonic()
    sub = read_submission(submitted / student / ASSIGNMENT / "ppo.ipynb", asg, base=submitted)
    # a FIFO is never opened (opening one with no writer would block for good)
    assert time.monotonic() - started < allowance(), f"{what}: blocked"
    assert not sub.readable and not sub.cells, what
    assert "not a regular file" in sub.problem, (what, sub.problem)
    assert [f["code"] for f in sub.flags] == [untrusted.CODE], what
    # the control: the same walk reads the honest notebook
    honest = read_submission(submitted / "alice" / ASSIGNMENT / "ppo.ipynb", asg,
                             base=submitted)
    assert honest.readable and honest.flags == []


def test_each_level_below_the_base_is_walked_without_links(tmp_path):
    (tmp_path / "real" / "a").mkdir(parents=True)
    (tmp_path / "real" / "a" / "f.txt").write_text("secret")
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert untrusted.read_regular(tmp_path / "real" / "a" / "f.txt", tmp_path, 100) == b"secret"
    with pytest.raises(untrusted.Refused, match="symbolic link"):
        untrusted.read_regular(tmp_path / "link" / "a" / "f.txt", tmp_path, 100)
    with pytest.raises(untrusted.TooBig):
        untrusted.read_regular(tmp_path / "real" / "a" / "f.txt", tmp_path, 5)
    (tmp_path / "outside.txt").write_text("outside")
    with pytest.raises(ValueError):             # ".." is resolved by name, never above the base
        untrusted.read_regular(tmp_path / "real" / ".." / ".." / tmp_path.name / "outside.txt",
                               tmp_path / "real", 100)


def test_a_timestamp_link_is_not_read(tmp_path):
    from autograder.course.gradebook import read_timestamp

    folder = tmp_path / "s" / ASSIGNMENT
    folder.mkdir(parents=True)
    (tmp_path / "elsewhere.txt").write_text("2020-01-01 00:00:00")
    os.symlink(tmp_path / "elsewhere.txt", folder / "timestamp.txt")
    assert read_timestamp(folder, tmp_path) is None
    os.unlink(folder / "timestamp.txt")
    (folder / "timestamp.txt").write_text("2020-01-01 00:00:00")
    assert read_timestamp(folder, tmp_path).year == 2020
    (folder / "timestamp.txt").write_text("2020-01-01 00:00:00" + " " * 5000)
    assert read_timestamp(folder, tmp_path) is None          # over SMALL_FILE_MAX_BYTES


def test_gradescope_refuses_a_linked_notebook(course, answer_key, tmp_path):
    from autograder.gradescope import find_notebook

    folder = tmp_path / "submission"
    folder.mkdir()
    os.symlink(course / "source" / ASSIGNMENT / "ppo.ipynb", folder / "ppo.ipynb")
    job = find_notebook(folder, ASSIGNMENT, "s1")
    assert job.notebook is None and job.flags[-1]["code"] == untrusted.CODE
    nested = tmp_path / "submission2" / "repo"
    write_nb(nested / "ppo.ipynb", answer_key)
    os.symlink(nested, tmp_path / "submission2" / "alias")
    job = find_notebook(tmp_path / "submission2", ASSIGNMENT, "s1")
    assert job.notebook == nested / "ppo.ipynb" and not job.problem


# --- the structural pre-scan -------------------------------------------------------------------

def values_built(value) -> int:
    """What ``count_json_values`` must give: ``[``/``{`` per container, ``,`` between items,
    ``:`` per key, from the parsed value (an independent count)."""
    if isinstance(value, list):
        return 1 + max(len(value) - 1, 0) + sum(values_built(v) for v in value)
    if isinstance(value, dict):
        return 1 + max(len(value) - 1, 0) + len(value) + sum(values_built(v)
                                                              for v in value.values())
    return 0


TEXT = st.text(alphabet=st.sampled_from(list('ab"\\[]{},:\n é😀')), max_size=12)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | TEXT, lambda inner: st.lists(inner, max_size=5)
                    | st.dictionaries(TEXT, inner, max_size=5), max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(JSON, st.booleans())
def test_count_json_values_counts_what_a_parse_builds(value, ascii_only):
    data = json.dumps(value, ensure_ascii=ascii_only).encode()
    n = values_built(value)
    assert untrusted.count_json_values(data, 10 ** 6) == n
    if n:
        assert untrusted.count_json_values(data, n - 1) == n      # stops just past the limit


@pytest.mark.slow   # end to end: make test-all
def test_the_values_cap_refuses_a_notebook_of_tiny_containers(answer_key):
    from autograder.load.notebook import Unreadable, parse_notebook

    data = pathological_notebook(answer_key)
    assert len(data) <= bounds.NOTEBOOK_MAX_BYTES
    cells, _ = parse_notebook(data)                      # just under both caps: read
    assert len(cells) == len(answer_key["cells"])
    over = data.replace(b'"x": [', b'"x": [' + b'[],' * 10, 1)          # 20 values more
    with pytest.raises(Unreadable, match="values"):
        parse_notebook(over)
    wide = data.replace(b'"pad": "', '"pad": "\U0001F600'.encode(), 1)
    with pytest.raises(Unreadable, match="emoji"):       # 4 bytes a character once decoded
        parse_notebook(wide)
    cells, _ = parse_notebook(pathological_notebook(answer_key, width=4))
    assert len(cells) == len(answer_key["cells"])


def test_reply_lines_are_bounded_before_they_are_decoded():
    """A Channel fed a reply line over the byte cap, one over the values cap, a non-ASCII one
    and an honest one: each of the first three fails only the pending request (ReplyTooLarge
    or junk); the buffer never holds more than the cap plus one read; the honest reply is
    returned."""
    from autograder.sandbox import channel

    r, w = os.pipe()
    chan = channel.Channel(r, None, channel.OutputTail(1024))
    cpu_started = time.process_time()

    def feed(data: bytes) -> None:
        view = memoryview(data)
        while view:
            chan.buf += view[:channel.READ_CHUNK]
            view = view[channel.READ_CHUNK:]
            assert len(chan.buf) <= bounds.REPLY_MAX_BYTES + channel.READ_CHUNK
            msg = chan._buffered_reply("r1")
            if msg is not None:
                return msg
        return chan._buffered_reply("r1")

    big = feed(b"[" + b"0" * (bounds.REPLY_MAX_BYTES + 1) + b"]\n")
    assert big["error"]["type"] == "ReplyTooLarge" and big["id"] == "r1"
    many = feed(b"[" + b"[]," * bounds.REPLY_MAX_VALUES + b"[]]\n")
    assert many["error"]["type"] == "ReplyTooLarge"
    assert feed('{"id": "r1", "ok": true, "value": "é"}\n'.encode()) is None   # not ASCII
    good = feed(b'{"id": "r1", "ok": true, "value": 3}\n')
    assert good == {"id": "r1", "ok": True, "value": 3} and chan.junk == 3
    assert time.process_time() - cpu_started < 60      # CPU time, however busy the machine
    os.close(r)
    os.close(w)


# --- whole runs: the grade command, the cohort, and their memory -------------------------------

def probe_env(memory_dir: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PROBE_DIR), str(BATCH_GRADER_DIR), str(REPO)])
    env["UNTRUSTED_MEMORY_DIR"] = str(memory_dir)
    return env


def peaks(memory_dir: Path) -> dict[int, tuple[int, str]]:
    """pid -> (VmHWM in bytes, command line) of every probed process of the trusted side."""
    return {pid: (hwm, cmd) for pid, (hwm, _, cmd) in probed(memory_dir).items()}


def probed(memory_dir: Path) -> dict[int, tuple[int, int, str]]:
    """pid -> (VmHWM in bytes, soft RLIMIT_AS, command line) of every probed process."""
    out = {}
    for f in memory_dir.iterdir():
        if f.name.isdigit():
            kib, soft, cmd = f.read_text().split("\n", 2)
            if "worker.py" not in cmd:
                out[int(f.name)] = (int(kib) * 1024, int(soft), cmd.strip())
    return out


def expected_address_limit(course: Path) -> int:
    """The soft RLIMIT_AS a slot or the grade command sets here: the bound on the CPU, none
    where the workers run on CUDA (they would inherit it)."""
    import resource

    from autograder.config import load_settings
    from autograder.course.slot import on_cpu

    if on_cpu(load_settings(course).device):
        return bounds.SLOT_ADDRESS_SPACE_BYTES
    return resource.getrlimit(resource.RLIMIT_AS)[0]


def address_limited(memory_dir: Path, marker: str) -> list[int]:
    """The soft RLIMIT_AS of every probed process whose command line holds ``marker``."""
    return [soft for _, soft, cmd in probed(memory_dir).values() if marker in cmd]


def assert_bounded(found: dict[int, tuple[int, str]]) -> None:
    assert found
    for hwm, cmd in found.values():
        print(f"VmHWM {hwm >> 20:5d} MiB  {cmd[:100]}")
    over = {pid: (hwm >> 20, cmd) for pid, (hwm, cmd) in found.items()
            if hwm > bounds.TRUSTED_PROCESS_MAX_BYTES}
    assert not over, f"over {bounds.TRUSTED_PROCESS_MAX_BYTES >> 20} MiB: {over}"


@pytest.mark.slow   # end to end: make test-all
@pytest.mark.parametrize("case", ["pathological_notebook", "pathological_wide_notebook",
                                  "oversized", "pathological_reply", "link_to_answer_key"])
def test_the_grade_command_stays_bounded(course, answer_key, tmp_path, case):
    path = tmp_path / "submitted" / "s1" / ASSIGNMENT / "ppo.ipynb"
    path.parent.mkdir(parents=True)
    if case == "pathological_notebook":
        path.write_bytes(pathological_notebook(answer_key))
    elif case == "pathological_wide_notebook":
        path.write_bytes(pathological_notebook(answer_key, width=4))
    elif case == "oversized":
        oversized(path, answer_key)
    elif case == "pathological_reply":
        write_nb(path, reply_notebook(answer_key))
    else:
        os.symlink(course / "source" / ASSIGNMENT / "ppo.ipynb", path)
    memory = tmp_path / "memory"
    memory.mkdir()
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "autograder", "grade", str(path),
                           "--assignment", ASSIGNMENT, "--out", str(out),
                           "--course-dir", str(course)], cwd=REPO, env=probe_env(memory),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    codes = [f["code"] for f in result["extra_data"]["flags"]]
    cells = {c: v["score"] for c, v in result["extra_data"]["grade_cells"].items()}
    assert "grader_error" not in codes, result["extra_data"]["flags"]
    if case.startswith("pathological") and case.endswith("notebook"):
        assert result["score"] == result["extra_data"]["max_score"]
    elif case == "oversized":
        assert result["score"] == 0 and "unreadable_notebook" in codes
        assert "Clear all outputs" in result["output"] + result["tests"][0]["output"]
    elif case == "pathological_reply":
        assert cells["reinforce_loss"] == 3 and "protocol_junk" in codes
        assert cells["compute_gae"] < 5 and cells["ppo_combined_loss"] < 5
        text = " ".join(t["output"] for t in result["tests"]
                        if t["tags"][0] in ("compute_gae", "ppo_combined_loss"))
        assert "reply to the grader was" in text
    else:
        assert result["score"] == 0 and codes[:1] == [untrusted.CODE]
        assert "symbolic link" in result["extra_data"]["flags"][0]["message"]
    found = peaks(memory)
    assert any("autograder grade" in cmd for _, cmd in found.values()), found
    assert_bounded(found)
    assert address_limited(memory, "autograder grade") == [expected_address_limit(course)]


COHORT_SCRIPT = """
import functools, json, sys
from autograder.course import batch
batch.grade_course = functools.partial(batch.grade_course, grader="batch_grader:grade")
args = type("Args", (), dict(course_dir=sys.argv[1], assignment="ppo", jobs=2, force=False))
sys.exit(batch.cmd_grade_course(args))
"""


def run_cohort(course: Path, memory: Path, suite: Path) -> subprocess.CompletedProcess:
    env = probe_env(memory)
    env[SUITE_ENV] = str(suite)
    env["COLUMNS"] = "200"
    return subprocess.run([sys.executable, "-c", COHORT_SCRIPT, str(course)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1800)


def honest_outcome(course: Path, student: str) -> dict:
    result = json.loads((course / "autograded" / student / ASSIGNMENT / "results.json")
                        .read_text())
    db = sqlite3.connect(course / "gradebook.db")
    rows = db.execute("select c.name, g.auto_score, g.needs_manual_grade from grade g "
                      "join base_cell c on g.cell_id = c.id join submitted_notebook n on "
                      "g.notebook_id = n.id join submitted_assignment a on n.assignment_id = "
                      "a.id where a.student_id = ? order by c.name", (student,)).fetchall()
    db.close()
    feedback = (course / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    report = (course / "reports" / ASSIGNMENT / "index.html").read_text()
    return {"score": result["score"], "cells": result["extra_data"]["grade_cells"],
            "flags": result["extra_data"]["flags"], "gradebook": rows,
            "feedback": f"{result['score']:g}" in feedback,
            "report": f'{student}/{ASSIGNMENT}/{ASSIGNMENT}.html">{student}' in report}


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory, answer_key):
    """The honest cohort alone, and the same cohort with every hostile submission."""
    root = tmp_path_factory.mktemp("cohorts")
    suite = root / "suite"
    release = json.loads((REPO / "release" / ASSIGNMENT / "ppo.ipynb").read_text())
    out = {}
    for name in ("honest", "hostile"):
        (root / name).mkdir()
        course = make_course(root / name, gradebook=False)
        sub = course / "submitted"
        write_nb(sub / "alice" / ASSIGNMENT / "ppo.ipynb", answer_key)
        write_nb(sub / "bob" / ASSIGNMENT / "ppo.ipynb", release)
        write_nb(sub / "carol" / ASSIGNMENT / "ppo.ipynb", answer_key)
        (sub / "carol" / ASSIGNMENT / "timestamp.txt").write_text("2026-11-20 10:00:00")
        hostile = {}
        if name == "hostile":
            hostile = hostile_layout(sub, course, answer_key)
            odd = Path(os.fsdecode(os.fsencode(str(sub)) + b"/odd\xff\xfe")) / ASSIGNMENT
            write_nb(odd / "ppo.ipynb", answer_key)
            (odd / "timestamp.txt").write_text("2026-11-21 10:00:00")
            (sub / "patho" / ASSIGNMENT).mkdir(parents=True)
            (sub / "patho" / ASSIGNMENT / "ppo.ipynb").write_bytes(
                pathological_notebook(answer_key))
            oversized(sub / "huge" / ASSIGNMENT / "ppo.ipynb", answer_key)
            write_nb(sub / "replier" / ASSIGNMENT / "ppo.ipynb", reply_notebook(answer_key))
        memory = root / f"memory-{name}"
        memory.mkdir()
        proc = run_cohort(course, memory, suite)
        out[name] = (course, proc, peaks(memory), hostile)
        if name == "hostile":     # a rerun: everything up to date, outputs rewritten, exit 0
            (root / "memory-rerun").mkdir()
            again = run_cohort(course, root / "memory-rerun", suite)
            out["rerun"] = (course, again, peaks(root / "memory-rerun"), hostile)
        out[name + "-limits"] = address_limited(memory, "autograder.course.slot")
    return out


@pytest.mark.slow      # three grade-course runs end to end (``cohorts``): about 30 s
def test_honest_students_are_unaffected_by_hostile_classmates(cohorts):
    honest, hostile = cohorts["honest"][0], cohorts["hostile"][0]
    for proc in (cohorts["honest"][1], cohorts["hostile"][1]):
        assert proc.returncode == 0, proc.stderr[-3000:]
    for student in HONEST:
        alone, among = honest_outcome(honest, student), honest_outcome(hostile, student)
        assert alone == among, student
        assert among["gradebook"] and among["feedback"] and among["report"], (student, among)
    assert honest_outcome(hostile, "alice")["score"] > 0            # the answer key scores
    rerun = cohorts["rerun"][1]
    assert rerun.returncode == 0 and "0 graded now" in rerun.stdout, rerun.stdout[-3000:]
    for student in HONEST:
        assert honest_outcome(hostile, student) == honest_outcome(honest, student)


@pytest.mark.slow      # three grade-course runs end to end (``cohorts``): about 30 s
def test_every_hostile_submission_is_its_own_zero_and_is_named(cohorts):
    course, proc, _, hostile = cohorts["hostile"]
    summary = proc.stdout
    for student, what in hostile.items():
        result = json.loads((course / "autograded" / student / ASSIGNMENT / "results.json")
                            .read_text())
        codes = [f["code"] for f in result["extra_data"]["flags"]]
        assert result["score"] == 0 and untrusted.CODE in codes, (what, codes)
        assert "grader_error" not in codes
        assert student in summary, (what, summary[-3000:])
        assert (course / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html").exists()
    huge = json.loads((course / "autograded" / "huge" / ASSIGNMENT / "results.json").read_text())
    assert huge["score"] == 0 and "unreadable_notebook" in str(huge["extra_data"]["flags"])
    patho = json.loads((course / "autograded" / "patho" / ASSIGNMENT / "results.json")
                       .read_text())
    alice = json.loads((course / "autograded" / "alice" / ASSIGNMENT / "results.json")
                       .read_text())
    assert patho["extra_data"]["grade_cells"] == alice["extra_data"]["grade_cells"]


@pytest.mark.slow      # three grade-course runs end to end (``cohorts``): about 30 s
def test_an_undecodable_folder_name_is_graded_under_a_safe_id(cohorts):
    from autograder.course.batch import student_id

    course, proc, _, _ = cohorts["hostile"]
    sid = student_id(os.fsdecode(b"odd\xff\xfe"))
    assert sid.startswith("undecodable-") and sid.isascii()
    outcome = honest_outcome(course, sid)
    alice = honest_outcome(course, "alice")
    assert outcome["cells"] == alice["cells"] and outcome["gradebook"] == alice["gradebook"]
    assert outcome["feedback"] and outcome["report"]
    assert [f["code"] for f in outcome["flags"]] == ["undecodable_folder_name"]
    assert sid in proc.stdout
    db = sqlite3.connect(course / "gradebook.db")
    stamp = db.execute("select timestamp from submitted_assignment where student_id = ?",
                       (sid,)).fetchone()[0]
    db.close()
    assert stamp.startswith("2026-11-21 10:00:00")


@pytest.mark.slow      # three grade-course runs end to end (``cohorts``): about 30 s
def test_every_trusted_process_of_the_cohort_stays_bounded(cohorts):
    for name in ("honest", "hostile"):
        found = cohorts[name][2]
        slots = [p for p, (_, cmd) in found.items() if "autograder.course.slot" in cmd]
        assert len(slots) >= 1, found
        assert_bounded(found)
    hostile = max(h for h, cmd in cohorts["hostile"][2].values()
                  if "autograder.course.slot" in cmd)
    honest = max(h for h, cmd in cohorts["honest"][2].values()
                 if "autograder.course.slot" in cmd)
    assert hostile > honest     # the probe sees the pathological files' cost (a live control)
    for name in ("honest", "hostile"):          # the last line of defence is in place
        limits = cohorts[name + "-limits"]
        assert limits and set(limits) == {expected_address_limit(cohorts[name][0])}, limits


def test_a_failing_gradebook_row_or_feedback_page_is_that_students_only(course, tmp_path,
                                                                      monkeypatch):
    """Injected faults: bob's gradebook row and carol's feedback page fail. Each is recorded as
    a flag in that student's own result and in the run's failures; every other row, page and
    report entry is written."""
    import shutil

    from autograder.config import load_settings
    from autograder.course import feedback, gradebook
    from autograder.course.batch import CourseRun, write_outputs
    from autograder.course.paths import course_paths
    from autograder.results import GradingResult

    own = tmp_path / "course"
    shutil.copytree(course, own)
    paths = course_paths(own)
    results = {}
    for i, student in enumerate(("alice", "bob", "carol")):
        data = {"score": float(i), "execution_time": 0.1, "output": "", "tests": [
            {"name": f"{c}: t", "score": float(i) if c == "compute_gae" else 0.0,
             "max_score": 5.0, "status": "failed", "output": "", "visibility": "visible",
             "tags": [c]} for c in CELLS],
            "extra_data": {"student": student, "assignment": ASSIGNMENT, "flags": [],
                           "max_score": 25.0, "grade_cells": {c: {
                               "score": float(i) if c == "compute_gae" else 0.0,
                               "max_score": 5.0} for c in CELLS}}}
        paths.results(student, ASSIGNMENT).parent.mkdir(parents=True)
        paths.results(student, ASSIGNMENT).write_text(json.dumps(data))
        results[student] = GradingResult.from_json(data)
    real_record, real_feedback = gradebook.record_result, feedback.write_feedback

    def record(gb, result, *args, **kwargs):
        if result.details.student == "bob":
            raise RuntimeError("injected gradebook fault")
        return real_record(gb, result, *args, **kwargs)

    def page(result, path):
        if result.details.student == "carol":
            raise OSError("injected feedback fault")
        return real_feedback(result, path)

    monkeypatch.setattr(gradebook, "record_result", record)
    monkeypatch.setattr(feedback, "write_feedback", page)
    run = CourseRun(ASSIGNMENT, [], [], 0.0, results, paths)
    write_outputs(run, load_settings(own).db_url)
    stored = {s: json.loads(paths.results(s, ASSIGNMENT).read_text()) for s in results}
    codes = {s: [f["code"] for f in d["extra_data"]["flags"]] for s, d in stored.items()}
    assert codes == {"alice": [], "bob": ["gradebook_error"], "carol": ["feedback_error"]}
    assert set(run.failed) == {"bob", "carol"}
    db = sqlite3.connect(own / "gradebook.db")
    students = {r[0] for r in db.execute("select student_id from submitted_assignment")}
    db.close()
    assert students == {"alice", "carol"}
    assert paths.feedback_html("alice", ASSIGNMENT).exists()
    assert paths.feedback_html("bob", ASSIGNMENT).exists()
    assert not paths.feedback_html("carol", ASSIGNMENT).exists()
    report = (paths.report_dir(ASSIGNMENT) / "index.html").read_text()
    assert all(s in report for s in results)
