"""The adversarial corpus's harness: the cases as data, building each submission, grading the
corpus (one case at a time, and all together as one ``grade_course`` batch), the checks of a
graded case against its ``[expect]``, and the probes around the grading (snapshots, canary
files, a TCP listener, a memory sampler, the sandboxed uids). ``test_adversarial.py`` (next to
this file) holds the tests; ``README.md`` here describes the case format.

How the corpus is graded (``grade_corpus``):

- A temporary course directory: ``source/``, ``release/``, a fake ``solutions/`` and
  ``gradebook.db``, and ``nbgrader_config.py`` with tighter limits for the corpus
  (``CORPUS_LIMITS``: call timeout 3 s, wall clock 60 s, ...), so hostile cases end quickly.
  Submissions and results live outside it, so nothing in it may change.
- Most cases are graded by ``grade_submission`` with a ``WorkerPool`` (one shared reference
  worker, a fresh sandboxed worker forked per case), in two lanes side by side: this process
  and one more (``split_lanes``, ``start_lane``); the cases marked
  ``via = "cli"`` go through the real command line. Cases marked ``suite = "functions"`` run the
  hidden tests of the three function questions only (the training questions cost about 10 s
  of CPU per submission); the other cases run the whole suite, training included.
- The whole corpus once more as one cohort, through ``grade_course`` on two slots
  (``grade_batch``; the function questions only, ``batch_grader.py``).
- Around the grading: a snapshot of the course copy and of the shared temporary directories,
  canary files a sandbox escape could change, a TCP listener nothing may reach, a memory
  sampler for the memory bombs, and a check that no sandboxed process outlives the pool.
- A grading's time is bounded by its wall limit plus an allowance (``timing.allowance``:
  ``SLACK_COLD_STARTS`` cold starts of an interpreter, measured in the same run), never by a
  fixed number of seconds: a busy machine stretches the overhead around the limit, not the
  limit.

``PYTHONPATH=tests .venv/bin/python tests/adversarial/corpus_harness.py [CASE ...]`` grades the
corpus and prints the table.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from autograder.assignments import load_assignment
from autograder.sandbox.backends import SANDBOX_UID_BASE
from autograder.sandbox.process_tree import descendants
from batch_grader import SUITE_ENV, functions_only
from timing import allowance

HERE = Path(__file__).resolve().parent           # tests/adversarial, on pytest's pythonpath
REPO = HERE.parents[1]
BATCH_GRADER_DIR = HERE
CASES_DIR = HERE / "cases"
FILES_DIR = HERE / "files"

ASSIGNMENT = "ppo"
CORPUS_LIMITS = dict(cpu_seconds=30, wall_seconds=60, call_timeout_seconds=3,
                     harness_timeout_seconds=30, memory_mb=3072, max_processes=64,
                     max_open_files=256, max_file_mb=64, max_output_kb=64)
MEMORY_FLOOR = 8 << 30               # MemAvailable must stay above this during memory bombs
KIT_SCRATCH = ("ag-worker-", "ag-zygote-", "ppo-probe-")   # the kit's own temporary dirs
SHARED_TMP = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
MARKERS = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n", re.M)
# A grading may exceed its wall limit by this many cold starts measured in the same run (about
# 7 s on a quiet two-core machine): the parent's work around the limit (killing the worker,
# the remaining checks, the reference's calls) stretches with the machine's load, the limit does
# not. Measured: 4.1 cold starts of overhead on a machine loaded 3.4 times over (wall_limit).
SLACK_COLD_STARTS = 6
MAX_RESULT_BYTES = 200_000           # a result stays small whatever the submission printed
GROUPS = ("loops-exits", "resources", "outside", "tampering", "return-values", "notebook")
SCORE_WORDS = ("full", "partial", "lost")


# A probe for the controls: the reads and the connection of the "outside" cases, reporting what
# it found. In the sandbox it finds nothing; unconfined (--unsafe-no-sandbox) it must find all.
PROBE = """
import socket

def compute_gae(rewards, values, gamma=0.99, lam=0.95):
    found = []
    for path in ("@@COURSE@@/solutions/ppo/ppo.ipynb", "@@COURSE@@/gradebook.db",
                 "@@COURSE@@/source/ppo/ppo.ipynb"):
        try:
            data = open(path, "rb").read()
            if b"SOLUTIONS-SECRET" in data or b"GRADEBOOK-SECRET" in data \\
                    or b"### BEGIN SOLUTION" in data:
                found.append(path)
        except OSError:
            pass
    try:
        socket.create_connection(("127.0.0.1", @@PORT@@), timeout=2).close()
        found.append("listener")
    except OSError:
        pass
    raise RuntimeError("FOUND " + " ".join(found))
"""


# --- the corpus as data --------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    title: str
    group: str
    edits: list[dict]
    expect: dict
    suite: str = "functions"          # "functions" | "full"
    via: str = "api"                  # "api" | "cli"
    limits: dict = field(default_factory=dict)
    watch_memory: bool = False

    @property
    def wall_seconds(self) -> float:
        return float(self.limits.get("wall_seconds", CORPUS_LIMITS["wall_seconds"]))


def load_cases() -> list[Case]:
    cases = []
    for path in sorted(CASES_DIR.glob("*.toml")):
        data = tomllib.loads(path.read_text())
        cases.append(Case(name=path.stem, title=data["title"], group=data["group"],
                          edits=data.get("edit", []), expect=data.get("expect", {}),
                          suite=data.get("suite", "functions"), via=data.get("via", "api"),
                          limits=data.get("limits", {}),
                          watch_memory=data.get("watch_memory", False)))
    return cases


CASES = load_cases()


# --- building a submission ----------------------------------------------------------------------

@dataclass
class Context:
    """What a case's text may refer to: ``@@COURSE@@``, ``@@REPO@@``, ``@@PARENT_PID@@``,
    ``@@PORT@@``, ``@@CANARY@@``, ``@@OUT@@`` and ``@@SOLUTION:<grade_id>@@`` (the answer key's
    solution cell, markers removed)."""
    course: Path
    canary: Path
    port: int
    out_dir: Path
    solutions: dict[str, str]

    def fill(self, text: str, case: Case) -> str:
        text = re.sub(r"@@SOLUTION:([\w]+)@@", lambda m: self.solutions[m.group(1)], text)
        for token, value in (("@@COURSE@@", self.course), ("@@REPO@@", REPO),
                             ("@@PARENT_PID@@", os.getpid()), ("@@PORT@@", self.port),
                             ("@@CANARY@@", self.canary),
                             ("@@OUT@@", self.out_dir / f"{case.name}.results.json")):
            text = text.replace(token, str(value))
        return text


def source_notebook(course: Path) -> dict:
    return json.loads((course / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text())


def gid(cell: dict) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def base_notebook(course: Path) -> dict:
    """The answer key as a student would submit it: solution markers removed, no outputs."""
    nb = source_notebook(course)
    for cell in nb["cells"]:
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        cell["source"] = MARKERS.sub("", src)
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return nb


def solution_sources(course: Path) -> dict[str, str]:
    return {gid(c): c["source"] for c in base_notebook(course)["cells"]
            if c.get("metadata", {}).get("nbgrader", {}).get("solution")}


def _index(nb: dict, grade_id: str) -> int:
    hits = [i for i, c in enumerate(nb["cells"]) if gid(c) == grade_id]
    if len(hits) != 1:
        raise LookupError(f"the base notebook has {len(hits)} cells with grade_id {grade_id!r}")
    return hits[0]


def apply_edit(nb: dict, edit: dict, ctx: Context, case: Case):
    """One edit of a case; returns the notebook, or bytes once the file is no longer JSON."""
    op = edit["op"]
    text = ctx.fill(edit.get("source", ""), case)
    if op == "replace":
        nb["cells"][_index(nb, edit["cell"])]["source"] = text
    elif op == "append":
        cell = nb["cells"][_index(nb, edit["cell"])]
        cell["source"] = cell["source"].rstrip("\n") + "\n\n" + text
    elif op == "insert":
        at = _index(nb, edit["after"]) + 1
        new = {"cell_type": edit.get("cell_type", "code"), "id": f"student-{at}-{len(nb['cells'])}",
               "metadata": {}, "source": text}
        if new["cell_type"] == "code":
            new.update(outputs=[], execution_count=None)
        nb["cells"].insert(at, new)
    elif op == "delete":
        del nb["cells"][_index(nb, edit["cell"])]
    elif op == "duplicate":
        i = _index(nb, edit["cell"])
        twin = copy.deepcopy(nb["cells"][i])
        twin["id"] = twin.get("id", "cell") + "-copy"
        if "source" in edit:
            twin["source"] = text
        nb["cells"].insert(i + (0 if edit.get("before") else 1), twin)
    elif op == "set_meta":
        nb["cells"][_index(nb, edit["cell"])]["metadata"]["nbgrader"][edit["key"]] = edit["value"]
    elif op == "drop_meta":
        nb["cells"][_index(nb, edit["cell"])]["metadata"].pop("nbgrader")
    elif op == "set_id":
        nb["cells"][_index(nb, edit["cell"])]["id"] = edit["value"]
    elif op == "set_type":
        cell = nb["cells"][_index(nb, edit["cell"])]
        cell["cell_type"] = edit["value"]
        if edit["value"] != "code":
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
    elif op == "drop_notebook_meta":
        nb["metadata"].pop(edit["key"], None)
    elif op == "outputs":
        cell = nb["cells"][_index(nb, edit["cell"])]
        line = "0123456789abcdef" * 64 + "\n"                     # 1 KiB
        cell["outputs"] = [{"output_type": "stream", "name": "stdout",
                            "text": [line] * (int(edit["mib"]) * 1024)}]
    elif op == "nbformat3":
        import nbformat

        return nbformat.writes(nbformat.convert(nbformat.from_dict(nb), 3), version=3).encode()
    elif op == "truncate":
        raw = json.dumps(nb, indent=1).encode()
        return raw[: int(len(raw) * float(edit["fraction"]))]
    elif op == "raw":
        return (FILES_DIR / edit["file"]).read_bytes() if "file" in edit else text.encode()
    else:
        raise ValueError(f"{case.name}: unknown edit op {op!r}")
    return nb


def build(case: Case, ctx: Context, directory: Path) -> Path:
    """Write the case's submission; returns its path."""
    doc: dict | bytes = base_notebook(ctx.course)
    for edit in case.edits:
        if isinstance(doc, bytes):
            raise ValueError(f"{case.name}: an edit after the file stopped being a notebook")
        doc = apply_edit(doc, edit, ctx, case)
    path = directory / f"{case.name}.ipynb"
    path.write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
    return path


# --- expectations ------------------------------------------------------------------------------

def cell_outputs(result: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    for t in result["tests"]:
        if t["status"] != "passed":
            cell = t["tags"][0] if t.get("tags") else ""
            out[cell] = out.get(cell, "") + t.get("output", "") + "\n"
    return out


def check(case: Case, graded: "CaseGrade", slack: float) -> list[str]:
    """Every way the graded result differs from the case's expected outcome. ``slack``: the
    seconds a grading may take beyond the case's wall limit (``timing.allowance`` measured in
    the same run: a busy machine stretches the overhead around the limit, not the limit)."""
    problems = []
    result, expect = graded.result, case.expect
    if graded.exit_code not in (None, 0):
        problems.append(f"the CLI exited {graded.exit_code}: {graded.stderr[-2000:]}")
    if result is None:
        return problems + ["no result was recorded"]
    if graded.results_recorded != 1:
        problems.append(f"{graded.results_recorded} results were recorded, not exactly one")
    extra = result["extra_data"]
    cells = extra["grade_cells"]
    points = graded.points
    if set(cells) != set(points):
        problems.append(f"grade cells {sorted(cells)}, expected {sorted(points)}")
    if abs(result["score"] - sum(t["score"] for t in result["tests"])) > 1e-6:
        problems.append("the score is not the sum of the tests' scores")
    for cell, pts in points.items():
        got = cells.get(cell, {}).get("score")
        maximum = cells.get(cell, {}).get("max_score")
        want = expect.get("scores", {}).get(cell, "full")
        if maximum is None or abs(maximum - pts) > 1e-6:
            problems.append(f"{cell}: max_score {maximum}, the source gives {pts}")
            continue
        ok = {"full": abs(got - pts) < 1e-6, "partial": 1e-6 < got < pts - 1e-6,
              "lost": got < pts - 1e-6}.get(want) if isinstance(want, str) else \
            abs(got - float(want)) < 1e-6
        if not ok:
            problems.append(f"{cell}: scored {got:g} of {pts:g}, expected {want}")
    outputs = cell_outputs(result)
    for cell, fragments in expect.get("messages", {}).items():
        for fragment in [fragments] if isinstance(fragments, str) else fragments:
            if fragment not in outputs.get(cell, ""):
                problems.append(f"{cell}: the message lacks {fragment!r}; it reads "
                                f"{outputs.get(cell, '')[:600]!r}")
    for fragment in expect.get("output", []):
        if fragment not in result["output"]:
            problems.append(f"the result's output lacks {fragment!r}: {result['output'][:400]!r}")
    codes = [f["code"] for f in extra["flags"]]
    for code in expect.get("flags", []):
        if code not in codes:
            problems.append(f"flag {code} missing; flags: {extra['flags']}")
    for code in ["grader_error", *expect.get("no_flags", [])]:
        if code in codes:
            problems.append(f"unexpected flag {code}: {extra['flags']}")
    text = json.dumps(result)
    for fragment in expect.get("forbidden", []):
        if fragment in text:
            problems.append(f"the result contains {fragment!r}")
    if len(text) > MAX_RESULT_BYTES:
        problems.append(f"the result is {len(text)} bytes")
    if graded.seconds > case.wall_seconds + slack:
        problems.append(f"grading took {graded.seconds:.1f} s; the wall limit is "
                        f"{case.wall_seconds:g} s, the allowance {slack:.1f} s")
    return problems


# --- watching the machine ----------------------------------------------------------------------

def snapshot(root: Path, skip=lambda p: False) -> dict[str, tuple]:
    """{path: (kind, size, mtime_ns, uid, mode, sha256 of files up to 1 MiB)} under ``root``."""
    found: dict[str, tuple] = {}
    stack = [Path(root)]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            path = Path(e.path)
            if skip(path):
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            digest = ""
            if stat.S_ISREG(st.st_mode) and st.st_size <= 1 << 20:
                try:
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                except OSError:
                    digest = "unreadable"
            kind = "d" if stat.S_ISDIR(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else "f"
            found[str(path)] = (kind, st.st_size if kind != "d" else 0, st.st_mtime_ns,
                                st.st_uid, stat.S_IMODE(st.st_mode), digest)
            if kind == "d":
                stack.append(path)
    return found


def diff(before: dict, after: dict) -> list[str]:
    out = [f"created {p}" for p in sorted(set(after) - set(before))]
    out += [f"deleted {p}" for p in sorted(set(before) - set(after))]
    out += [f"changed {p}: {before[p]} -> {after[p]}" for p in sorted(set(before) & set(after))
            if before[p] != after[p]]
    return out


def sandbox_could_have(change: str, before: dict, after: dict, uids: set[int]) -> bool:
    """Whether one of the corpus's sandboxed workers (running as one of ``uids``) could have made
    this change to a shared temporary directory. Other changes come from other processes on a
    shared machine: root's (the grading parent writes nothing there but the kit's scratch, which
    is skipped) and other test runs' sandboxes (other uids)."""
    kind, path = change.split(" ", 1)
    path = path.split(": ", 1)[0]
    old, new = before.get(path), after.get(path)
    if new is not None and new[3] in uids:              # created or changed by our workers
        return True
    if old is not None and old[3] in uids:
        return True
    if old is not None and old[4] & stat.S_IWOTH:       # a world-writable entry was touched
        return True
    parent = before.get(str(Path(path).parent))
    if kind == "deleted" and parent is not None and parent[4] & stat.S_IWOTH \
            and not parent[4] & stat.S_ISVTX:           # removed from an open, non-sticky dir
        return True
    return False


def tmp_skip(path: Path) -> bool:
    """The kit's own scratch, pytest's temporary trees and the canary directories (each run
    compares its own canary on its own) are not part of the /tmp snapshot."""
    name = path.name
    return (path.parent in (Path("/tmp"), Path("/var/tmp"))
            and name.startswith(KIT_SCRATCH + ("adv-canary-",))) \
        or str(path).startswith("/tmp/pytest-of-")


class MemorySampler:
    """MemAvailable from /proc/meminfo every ~10 ms, in a thread, while active (a memory bomb
    that the address-space limit stops at once lasts about half a second: ~50 samples)."""

    def __init__(self):
        self.minimum = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = None

    @staticmethod
    def available() -> int:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no MemAvailable in /proc/meminfo")

    def _run(self):
        while not self._stop.is_set():
            value = self.available()
            self.minimum = value if self.minimum is None else min(self.minimum, value)
            self.samples += 1
            self._stop.wait(0.01)

    def __enter__(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def uid_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# --- grading the corpus ------------------------------------------------------------------------

@dataclass
class CaseGrade:
    case: Case
    result: dict | None
    seconds: float
    points: dict[str, float]
    exit_code: int | None = None     # the CLI's, for cases graded through it
    stderr: str = ""
    stdout: str = ""
    results_recorded: int = 0


@dataclass
class Corpus:
    graded: dict[str, CaseGrade]
    course_before: dict
    course_after: dict
    tmp_changes: list[str]
    canary_before: dict
    canary_after: dict
    memory: dict[str, tuple[int, int]]          # case -> (lowest MemAvailable, samples)
    sandbox_uids: set[int]
    listener_connections: int
    leftover: list[str]
    seconds: float
    controls: dict[str, dict]                   # name -> result of a control grading
    slack: float                                # seconds a grading may exceed its wall limit


def make_course(root: Path, *, gradebook: bool = True, limits: dict = CORPUS_LIMITS) -> Path:
    """A course directory for the corpus: the real source/ and release/, a fake solutions/ and
    (unless ``gradebook`` is false) a fake gradebook.db, and nbgrader_config.py with the
    corpus's ``limits``."""
    course = root / "course"
    course.mkdir()
    for d in ("source", "release"):
        shutil.copytree(REPO / d, course / d)
    (course / "solutions" / ASSIGNMENT).mkdir(parents=True)
    (course / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").write_text(
        json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
                    "note": "SOLUTIONS-SECRET"}))
    if gradebook:
        db = sqlite3.connect(course / "gradebook.db")
        db.execute("create table secrets (student text, score real)")
        db.execute("insert into secrets values ('GRADEBOOK-SECRET', 16)")
        db.commit()
        db.close()
    config = (REPO / "nbgrader_config.py").read_text()
    config += "\n# The adversarial corpus: tighter limits so hostile cases end quickly.\n"
    config += f"c.PPOKit.limits = {limits!r}\n"
    (course / "nbgrader_config.py").write_text(config)
    return course


def make_canary(root: Path) -> Path:
    """Files in /tmp a sandbox escape could change: an open (0777, not sticky) directory with
    world-writable and private files of root."""
    canary = Path(tempfile.mkdtemp(prefix="adv-canary-", dir="/tmp"))
    os.chmod(canary, 0o777)
    (canary / "world-writable.txt").write_text("canary\n")
    os.chmod(canary / "world-writable.txt", 0o666)
    (canary / "private.txt").write_text("canary\n")
    os.chmod(canary / "private.txt", 0o600)
    (canary / "sub").mkdir()
    os.chmod(canary / "sub", 0o777)
    return canary


def grade_cli(case: Case, path: Path, course: Path, out: Path) -> CaseGrade:
    started = time.monotonic()
    if out.exists():
        out.unlink()
    proc = subprocess.run([sys.executable, "-m", "autograder", "grade", str(path),
                           "--assignment", ASSIGNMENT, "--student", case.name, "--out", str(out),
                           "--course-dir", str(course)],
                          cwd=REPO, capture_output=True, text=True,
                          timeout=case.wall_seconds + 120)
    seconds = time.monotonic() - started
    result = json.loads(out.read_text()) if out.exists() else None
    return CaseGrade(case, result, seconds, {}, proc.returncode, proc.stderr, proc.stdout,
                  int(result is not None))


# The corpus is graded in two lanes side by side: most cases wait on a limit (a call timeout,
# the wall clock), not on a core. The first lane runs in this process; the second in a process
# of its own (``python corpus_harness.py --lane SPEC``: pytest, which the suites run through,
# keeps process-wide state, so two lanes cannot share a process). The memory bombs share the
# first lane, so MemAvailable is sampled against one bomb at a time.

def split_lanes(cases: list[Case]) -> list[list[Case]]:
    """The cases in two lanes: every memory-watched case in the first, the rest in turn."""
    lanes: list[list[Case]] = [[c for c in cases if c.watch_memory], []]
    for i, case in enumerate(c for c in cases if not c.watch_memory):
        lanes[(i + 1) % 2].append(case)
    return lanes


def grade_lane(pool, lane: list[Case], *, root: Path, paths: dict[str, Path], settings
               ) -> tuple[dict[str, CaseGrade], dict[str, tuple[int, int]], set[int]]:
    """Grade ``lane`` one case at a time with ``pool``: the grades, each memory-watched case's
    (lowest MemAvailable, samples), and the uids of every sandboxed process seen."""
    from autograder.grade import submission as submission_module

    course, outs = root / "course", root / "results"
    asg = load_assignment(ASSIGNMENT, course)
    points = {g.id: g.points for g in asg.grade_cells}
    trimmed = functions_only(asg, root / "suite-functions")
    graded: dict[str, CaseGrade] = {}
    memory: dict[str, tuple[int, int]] = {}
    uids: set[int] = set()
    for case in lane:
        path, out = paths[case.name], outs / f"{case.name}.results.json"
        case_settings = settings.with_(limits=dataclasses.replace(settings.limits,
                                                                   **case.limits))
        sampler = MemorySampler() if case.watch_memory else None
        if sampler:
            sampler.__enter__()
        try:
            if case.via == "cli":
                g = grade_cli(case, path, course, out)
                g.points = points
            else:
                use = trimmed if case.suite == "functions" else asg
                t0 = time.monotonic()
                with pytest.MonkeyPatch.context() as mp:
                    mp.setattr(submission_module, "load_assignment", lambda name, d: use)
                    result = submission_module.grade_submission(
                        path, ASSIGNMENT, student=case.name, settings=case_settings,
                        pool=pool)
                result.write(out)
                g = CaseGrade(case, json.loads(out.read_text()), time.monotonic() - t0,
                              {gc.id: gc.points for gc in use.grade_cells},
                              results_recorded=1)
        finally:
            if sampler:
                sampler.__exit__(None, None, None)
                memory[case.name] = (sampler.minimum, sampler.samples)
        graded[case.name] = g
        for zyg in list(pool._zygotes.values()):
            if zyg._proc is not None:
                for pid in descendants(zyg._proc.pid) | {zyg._proc.pid}:
                    uid = uid_of(pid)
                    if uid is not None and uid >= SANDBOX_UID_BASE:
                        uids.add(uid)
    return graded, memory, uids


def start_lane(root: Path, lane: list[Case], paths: dict[str, Path]):
    """Start grading ``lane`` in a process of its own (``lane_main``); ``finish_lane`` waits."""
    spec = root / f"lane-{len(list(root.glob('lane-*.json')))}.json"
    spec.write_text(json.dumps({"root": str(root), "cases": [c.name for c in lane],
                                "paths": {c.name: str(paths[c.name]) for c in lane}}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(HERE.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    log = spec.with_suffix(".log").open("w")
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--lane", str(spec)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, spec, log


def finish_lane(started) -> tuple[dict[str, CaseGrade], dict[str, tuple[int, int]], set[int]]:
    """Wait for a lane started by ``start_lane``; its grades, memory samples and uids."""
    proc, spec, log = started
    code = proc.wait()
    log.close()
    done = spec.with_suffix(".out.json")
    if code != 0 or not done.exists():
        raise RuntimeError(f"the corpus lane {spec.name} failed ({code}):\n"
                           + spec.with_suffix(".log").read_text()[-4000:])
    data = json.loads(done.read_text())
    by_name = {c.name: c for c in CASES}
    graded = {name: CaseGrade(by_name[name], **g) for name, g in data["graded"].items()}
    memory = {name: (m[0], m[1]) for name, m in data["memory"].items()}
    return graded, memory, set(data["uids"])


def lane_main(spec_path: Path) -> int:
    """``--lane SPEC``: grade the spec's cases in this process and write ``<spec>.out.json``."""
    from autograder.config import load_settings
    from autograder.grade.pool import WorkerPool

    spec = json.loads(spec_path.read_text())
    root = Path(spec["root"])
    by_name = {c.name: c for c in CASES}
    settings = load_settings(root / "course")
    with WorkerPool(settings) as pool:
        graded, memory, uids = grade_lane(
            pool, [by_name[n] for n in spec["cases"]], root=root,
            paths={n: Path(p) for n, p in spec["paths"].items()}, settings=settings)
    out = {"graded": {name: {f.name: getattr(g, f.name) for f in dataclasses.fields(g)
                             if f.name != "case"} for name, g in graded.items()},
           "memory": memory, "uids": sorted(uids)}
    spec_path.with_suffix(".out.json").write_text(json.dumps(out))
    return 0


def grade_corpus(root: Path, cases: list[Case]) -> Corpus:
    from autograder.config import load_settings
    from autograder.grade.pool import WorkerPool

    slack = allowance(SLACK_COLD_STARTS)        # measured before and after the corpus
    started = time.monotonic()
    course = make_course(root)
    subs, outs = root / "submissions", root / "results"
    subs.mkdir()
    outs.mkdir()
    canary = make_canary(root)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    ctx = Context(course=course, canary=canary, port=listener.getsockname()[1], out_dir=outs,
                  solutions=solution_sources(course))
    paths = {c.name: build(c, ctx, subs) for c in cases}

    settings = load_settings(course)
    asg = load_assignment(ASSIGNMENT, course)
    trimmed = functions_only(asg, root / "suite-functions")
    course_before = snapshot(course)
    tmp_before = {d: snapshot(Path(d), tmp_skip) for d in SHARED_TMP}
    canary_before = snapshot(canary)
    lanes = split_lanes(cases)
    other = start_lane(root, lanes[1], paths)      # a second process grades the second lane
    pool = WorkerPool(settings)
    try:
        graded, memory, uids = grade_lane(pool, lanes[0], root=root, paths=paths,
                                          settings=settings)
        controls = grade_controls(pool, settings, ctx, trimmed, asg, root)
    except BaseException:
        other[0].kill()
        raise
    finally:
        pool.close()
    more, more_memory, more_uids = finish_lane(other)
    graded = {c.name: (graded | more)[c.name] for c in cases}
    memory |= more_memory
    uids |= more_uids
    time.sleep(0.2)
    leftover = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and uid_of(int(entry)) in uids:
            leftover.append(entry)
    connections = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            break
        connections += 1
        conn.close()
    listener.close()
    tmp_after = {d: snapshot(Path(d), tmp_skip) for d in SHARED_TMP}
    changes = []
    for d in SHARED_TMP:
        changes += [c for c in diff(tmp_before[d], tmp_after[d])
                    if sandbox_could_have(c, tmp_before[d], tmp_after[d], uids)]
    corpus = Corpus(graded=graded, course_before=course_before, course_after=snapshot(course),
                    tmp_changes=changes, canary_before=canary_before,
                    canary_after=snapshot(canary), memory=memory, sandbox_uids=uids,
                    listener_connections=connections, leftover=leftover,
                    seconds=time.monotonic() - started, controls=controls,
                    slack=max(slack, allowance(SLACK_COLD_STARTS)))
    shutil.rmtree(canary, ignore_errors=True)
    return corpus


def grade_controls(pool, settings, ctx: Context, trimmed, asg, root: Path) -> dict[str, dict]:
    """Gradings that check the checks, with the corpus's pool:

    - ``unconfined_probe``: ``PROBE`` with ``--unsafe-no-sandbox``'s backend: it must find the
      course's secrets and the listener (so finding nothing in the corpus means the sandbox held).
    - ``kit_fault``: the answer key with a fault injected into the kit (every training-harness
      call raises): those tests fail with the generic message, a grader_error flag is recorded,
      the other questions keep their points.
    - ``broken_reference``: the answer key graded against a broken reference (its set-up cell
      left out, so every reference call raises NameError): a grader error, never the student's.
    """
    from autograder.grade import submission as submission_module
    from autograder.proxy import StudentProxy

    probe_case = Case("control-probe", "probe", "outside",
                      [{"op": "replace", "cell": "compute_gae_answer", "source": PROBE}], {})
    key_case = Case("control-answer-key", "the answer key", "notebook", [], {})
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    probe = build(probe_case, dataclasses.replace(ctx, port=listener.getsockname()[1]), root)
    key = build(key_case, ctx, root)

    def injected(self, name, student, **params):
        raise KeyError("injected fault in the kit's harness call")

    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(submission_module, "load_assignment", lambda name, d: trimmed)
        out["unconfined_probe"] = submission_module.grade_submission(
            probe, ASSIGNMENT, student="probe", settings=settings, backend="unsafe",
            pool=pool).to_json()
        mp.setattr(submission_module, "load_assignment", lambda name, d: asg)
        mp.setattr(StudentProxy, "train", injected)
        out["kit_fault"] = submission_module.grade_submission(
            key, ASSIGNMENT, student="fault", settings=settings, pool=pool).to_json()
    with pytest.MonkeyPatch.context() as mp:   # last: it replaces the pool's reference worker
        real = submission_module.reference_cells
        mp.setattr(submission_module, "load_assignment", lambda name, d: trimmed)
        mp.setattr(submission_module, "reference_cells",
                   lambda a: [c for c in real(a) if c["id"] != "setup"])
        out["broken_reference"] = submission_module.grade_submission(
            key, ASSIGNMENT, student="broken-reference", settings=settings, pool=pool).to_json()
    listener.close()
    return out


def table(corpus: Corpus) -> str:
    lines = [f"{'case':34} {'via':4} {'secs':>5}  scores (rl rt gae ppo pt)          flags"]
    order = ["reinforce_loss", "reinforce_training", "compute_gae", "ppo_combined_loss",
             "ppo_training"]
    for name, g in corpus.graded.items():
        if g.result is None:
            lines.append(f"{name:34} {g.case.via:4} {g.seconds:5.1f}  NO RESULT")
            continue
        cells = g.result["extra_data"]["grade_cells"]
        scores = " ".join(f"{cells[c]['score']:.3g}" if c in cells else "-" for c in order)
        flags = ",".join(f["code"] for f in g.result["extra_data"]["flags"])
        bad = check(g.case, g, corpus.slack)
        lines.append(f"{name:34} {g.case.via:4} {g.seconds:5.1f}  {scores:34} {flags}"
                     + ("  <-- " + "; ".join(bad) if bad else ""))
    lines.append(f"({len(corpus.graded)} cases in {corpus.seconds:.0f} s)")
    return "\n".join(lines)



# --- the whole corpus as one grade-course batch ---------------------------------------------------

BATCH_LIMITS = dict(CORPUS_LIMITS, wall_seconds=15)     # every case ends within its wall clock
BATCH_GRADER = "batch_grader:grade"                    # grade_submission, function questions only
CELLS = ("reinforce_loss", "reinforce_training", "compute_gae", "ppo_combined_loss",
         "ppo_training")


@dataclass
class Batch:
    run: object                                  # grade_course's CourseRun
    course: Path
    folders: dict[str, list[str]]                # student -> files in autograded/<student>/ppo/
    kept_before: dict                            # snapshot of what the batch must not change
    kept_after: dict
    memory: tuple[int, int]                      # (lowest MemAvailable, samples)
    gradebook: dict[str, dict[str, float]]       # student -> {grade cell: auto score}
    seconds: float
    slack: float                                 # seconds a grading may exceed its wall limit


def kept_snapshot(course: Path) -> dict:
    """Everything in the course directory but the batch's outputs (autograded/, feedback/,
    reports/, gradebook.db): the submissions included, so none is lost or changed."""
    outputs = ("autograded", "feedback", "reports", "gradebook.db")
    return snapshot(course, lambda p: p.parent == course and p.name.startswith(outputs))


def grade_batch(root: Path, cases: list[Case]) -> Batch:
    """Every case as one student's ``submitted/<case>/ppo/ppo.ipynb``, graded by one
    ``grade_course`` run on two slots, with MemAvailable sampled throughout."""
    from autograder.assignments import load_assignment
    from autograder.config import load_settings
    from autograder.course.batch import grade_course
    from autograder.course.gradebook import open_gradebook
    from autograder.course.paths import course_paths

    course = make_course(root, gradebook=False, limits=BATCH_LIMITS)
    canary = make_canary(root)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    ctx = Context(course=course, canary=canary, port=listener.getsockname()[1], out_dir=root,
                  solutions=solution_sources(course))
    for case in cases:
        folder = course / "submitted" / case.name / ASSIGNMENT
        folder.mkdir(parents=True)
        build(case, ctx, root).rename(folder / f"{ASSIGNMENT}.ipynb")
    suite = root / "suite-functions"
    functions_only(load_assignment(ASSIGNMENT, course), suite)
    kept_before = kept_snapshot(course)
    with pytest.MonkeyPatch.context() as mp, MemorySampler() as sampler:
        mp.setenv("PYTHONPATH", str(BATCH_GRADER_DIR))
        mp.setenv(SUITE_ENV, str(suite))
        slack = allowance(SLACK_COLD_STARTS)     # measured before and after the batch
        started = time.monotonic()
        run = grade_course(course, ASSIGNMENT, jobs=2, grader=BATCH_GRADER)
        seconds = time.monotonic() - started
        slack = max(slack, allowance(SLACK_COLD_STARTS))
    listener.close()
    shutil.rmtree(canary, ignore_errors=True)
    autograded = course / "autograded"
    folders = {d.name: sorted(f.name for f in (d / ASSIGNMENT).iterdir())
               for d in autograded.iterdir() if d.is_dir()}
    settings = load_settings(course)
    book = {}
    with open_gradebook(settings.db_url, course_paths(course).course_id) as gb:
        for sub in gb.assignment_submissions(ASSIGNMENT):
            book[sub.student.id] = {g.name: g.auto_score for nb in sub.notebooks
                                    for g in nb.grades}
    return Batch(run, course, folders, kept_before, kept_snapshot(course),
                 (sampler.minimum, sampler.samples), book, seconds, slack)



if __name__ == "__main__":
    if sys.argv[1:2] == ["--lane"]:
        sys.exit(lane_main(Path(sys.argv[2])))
    wanted = sys.argv[1:]
    chosen = [c for c in CASES if not wanted or c.name in wanted]
    with tempfile.TemporaryDirectory(prefix="adversarial-") as tmp:
        print(table(grade_corpus(Path(tmp), chosen)))
