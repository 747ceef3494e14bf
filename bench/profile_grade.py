"""Where one cold ``grade`` spends its time, phase by phase.

    .venv/bin/python bench/profile_grade.py [--assignment ppo] [--repeat 3] [--readme README.md]

Each repeat starts a fresh interpreter (``--child``) that grades the assignment's answer key
(``solutions/<a>/<a>.ipynb``) the way ``python -m autograder grade`` does, through
``grade_submission``, with timers around the phases:

- *start-up*: the interpreter's start (``/proc/self/stat``) to the kit's grading code imported;
- *loading*: starting both workers (each imports torch) and loading the
  notebook's cells into them (``Session`` opened);
- *suites*: the hidden tests of each grade cell, wall time from pytest's own per-test duration
  (set-up and call), the training runs taken out and listed on their own;
- *training run <trainer>*: each ``StudentProxy.train`` of the trusted reference worker, relay
  round trips included;
- *pytest start-up and collection*: the suite's pytest run less its tests' durations;
- *the rest*: reading the notebook, the result, closing the workers.

It prints the median over the repeats of every phase, in seconds. With ``--readme`` the table
replaces the ``profile:<assignment>`` block of that file's "## Performance" section (appended to
the section when missing). Timings are wall-clock on this machine: read them as shares.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def process_age() -> float:
    """Seconds since this process started (its start time in /proc, against /proc/uptime)."""
    start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def child(assignment: str) -> dict:
    """Grade the answer key once in this process; phase -> seconds."""
    started_age = process_age()
    t0 = time.perf_counter()
    from autograder import REPO_ROOT
    from autograder.config import load_settings
    from autograder.grade import runner, submission
    from autograder.proxy import StudentProxy

    phases: dict[str, float] = {"start-up": started_age + time.perf_counter() - t0}
    training: list[tuple[str, float]] = []
    tests: dict[str, float] = {}

    real_train, real_open = StudentProxy.train, submission.Session._open

    def train(self, trainer, student, **kw):
        t = time.perf_counter()
        try:
            return real_train(self, trainer, student, **kw)
        finally:      # the trainer's file name: trainers/contextual.py -> contextual
            training.append((Path(trainer.file).stem, time.perf_counter() - t))

    def open_(self):
        t = time.perf_counter()
        try:
            return real_open(self)
        finally:
            phases["loading (workers started, cells loaded)"] = time.perf_counter() - t

    class Timed(runner.KitPlugin):
        def pytest_runtest_logreport(self, report):
            if report.when in ("setup", "call"):
                cell = report.nodeid.split("/")[-1].split("::")[0]
                cell = cell.removeprefix("test_").removesuffix(".py")
                tests[cell] = tests.get(cell, 0.0) + report.duration

    real_run_suite = runner.run_suite

    def run_suite(ctx):
        t = time.perf_counter()
        try:
            return real_run_suite(ctx)
        finally:
            phases["suites, whole"] = time.perf_counter() - t

    StudentProxy.train, submission.Session._open = train, open_
    runner.KitPlugin, submission.run_suite = Timed, run_suite
    settings = load_settings(REPO_ROOT)
    path = REPO_ROOT / "solutions" / assignment / f"{assignment}.ipynb"
    t = time.perf_counter()
    result = submission.grade_submission(path, assignment, student="profile", settings=settings)
    total = time.perf_counter() - t
    from autograder.assignments import load_assignment

    assert result.score == load_assignment(assignment, REPO_ROOT).max_score, result.output
    trained = sum(s for _, s in training)
    for name, seconds in training:
        key = f"training run `{name}`"
        phases[key] = phases.get(key, 0.0) + seconds
    # the training runs happen inside their grade cell's tests: take them out of the suites
    suites = sum(tests.values()) - trained
    for cell, seconds in sorted(tests.items()):
        phases[f"suite `{cell}`"] = seconds
    phases["suites, training runs taken out"] = suites
    whole = phases.pop("suites, whole")
    phases["pytest start-up and collection of the suite"] = whole - sum(tests.values())
    loading = phases.get("loading (workers started, cells loaded)", 0.0)
    phases["the rest (reading, result, closing the workers)"] = total - loading - whole
    phases["total"] = phases["start-up"] + total
    return phases


BEGIN = "<!-- profile:{a}:begin (written by bench/profile_grade.py) -->"
END = "<!-- profile:{a}:end -->"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assignment", default="ppo")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--readme", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.assignment)))
        return 0

    runs = []
    for _ in range(args.repeat):
        done = subprocess.run([sys.executable, __file__, "--child", "--assignment",
                               args.assignment], cwd=REPO, capture_output=True, text=True,
                              check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    keys = list(dict.fromkeys(k for r in runs for k in r))
    order = [k for k in keys if k not in ("total",)]
    median = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in keys}
    total = median["total"]
    lines = [f"| phase of one cold `grade` of `{args.assignment}`'s answer key | seconds "
             f"(median of {args.repeat}) | share |", "|---|---|---|"]
    for k in order:
        if k.startswith("suite `"):
            continue
        lines.append(f"| {k} | {median[k]:.2f} | {100 * median[k] / total:.0f} % |")
    lines.append(f"| **total** | **{total:.2f}** | |")
    per_cell = ", ".join(f"{k[7:-1]} {median[k]:.2f}" for k in order if k.startswith("suite `"))
    a = args.assignment
    text = (f"{BEGIN.format(a=a)}\nMeasured by `.venv/bin/python bench/profile_grade.py "
            f"--assignment {a} --repeat {args.repeat}` ({platform.machine()}, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end):\n\n"
            + "\n".join(lines) + f"\n\nSuites per grade cell, training runs included (s): "
            f"{per_cell}.\n{END.format(a=a)}\n")
    print(text)
    if args.readme:
        path = Path(args.readme)
        old = path.read_text()
        block = re.compile(re.escape(BEGIN.format(a=a)) + r".*?" + re.escape(END.format(a=a))
                           + r"\n?", re.S)
        if block.search(old):
            old = block.sub(lambda m: text, old)
        else:
            head, sep, rest = old.partition("## Performance\n")
            nxt = rest.find("\n## ")
            nxt = len(rest) if nxt < 0 else nxt + 1
            old = head + sep + rest[:nxt].rstrip() + "\n\n" + text + "\n" + rest[nxt:]
        path.write_text(old)
    return 0


if __name__ == "__main__":
    sys.exit(main())
