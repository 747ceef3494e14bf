"""The per-iteration cost of trusted training: what the round trip of each student call costs.

    .venv/bin/python bench/relay_bench.py [--seed 1234] [--repeat 2] [--write docs/calibration.md]

Starts a trusted reference worker and a student worker (the answer key loaded in it, no sandbox:
the relay's cost does not depend on the sandbox), then runs Part 1's two trainers twice over:

- as grading does (``StudentProxy.train``): every student call one round trip from the trusted
  worker to the student's worker and back, on the pipes this process hands over
  (``autograder/sandbox/direct.py``);
- relayed: the same with every call passing through this process (what grading did before the
  direct line, and still does where the trusted worker cannot take descriptors);
- in place, in this process: the same trainer, the same functions called in place (no wire, no
  processes), which is what the training itself costs.

It reports wall time and CPU time (this process plus both workers, from ``/proc``) per run and
per round trip, and the difference per round trip against the third: the overhead of the wire.
With ``--write`` the numbers replace the ``calibration:relay`` section of that file (kept by
``make calibrate``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BEGIN = "<!-- calibration:relay:begin (written by bench/relay_bench.py) -->"
END = "<!-- calibration:relay:end -->"


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def direct_student(ns: dict):
    """A ``relay.Student`` whose calls run the functions of ``ns`` in place (no wire)."""
    from autograder.harness import relay

    class Direct(relay.Student):
        def call(self, fn, args, kwargs=None, *, grad=(), output=None, outputs=None):
            self.round_trips += 1
            return relay._run_trusted(self.ns[fn], args, dict(kwargs or {}), grad, output,
                                      outputs)

        def map(self, fn, columns, kwargs=None):
            import numpy as np

            self.round_trips += 1
            out = []
            for i in range(len(columns[0])):
                value = self.ns[fn](*[np.asarray(c[i]).tolist() for c in columns],
                                    **dict(kwargs or {}))
                out.append(np.asarray(value.detach() if hasattr(value, "detach") else value,
                                      dtype=np.float64).reshape(-1))
            return out

    return Direct(None, ns, seed=0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--write", default=None)
    args = ap.parse_args(argv)

    import torch

    from autograder import REPO_ROOT
    from autograder.assignments import load_assignment
    from autograder.calibration import reference_namespace
    from autograder.config import load_settings
    from autograder.grade.submission import reference_cells
    from autograder.hints import mutant_cells
    from autograder.plugins import module_of
    from autograder.proxy import StudentProxy
    from autograder.sandbox.client import Worker

    T = module_of("ppo", "training")
    bandit = module_of("ppo", "trainers.bandit")
    contextual = module_of("ppo", "trainers.contextual")

    torch.set_num_threads(1)
    settings = load_settings(REPO_ROOT)
    asg = load_assignment("ppo", REPO_ROOT)
    runs = {
        "bandit": (bandit, T.bandit_params(args.seed, T.kit_source(asg, ["BanditPolicy"])),
                   T.check_params(asg, args.seed, {"reinforce_loss": 500})),
        "contextual": (contextual, T.contextual_params(
            args.seed, T.kit_source(asg, ["ContextualBandit", "PPOPolicy"])),
            T.check_params(asg, args.seed, {"compute_gae": 200, "ppo_combined_loss": 800})),
    }
    ns = reference_namespace(asg)
    ref = Worker(settings.limits, backend="trusted", device="cpu", trusted=True)
    stu = Worker(settings.limits, backend="unsafe", device="cpu")
    rows = []
    try:
        ref.spawn()
        stu.spawn()
        ref.start()
        stu.start()
        ref.load(reference_cells(asg) + mutant_cells(asg))
        stu.load(reference_cells(asg))
        trusted, student = StudentProxy(ref), StudentProxy(stu)
        ends = stu.direct_ends

        def timed_train(name, params, check, through_parent: bool) -> dict:
            stu.direct_ends = (lambda: None) if through_parent else ends
            t, c = time.perf_counter(), time.process_time()
            c_ref, c_stu = cpu_of(ref.pid), cpu_of(stu.pid)
            out = trusted.train(T.trainer(name), student, **params, check=check)
            assert "error" not in out, out
            return {"wall": time.perf_counter() - t, "trips": out["round_trips"],
                    "cpu": time.process_time() - c + cpu_of(ref.pid) - c_ref
                    + cpu_of(stu.pid) - c_stu}

        for name, (module, params, check) in runs.items():
            for _ in range(args.repeat):
                graded = timed_train(name, params, check, through_parent=False)
                relayed = timed_train(name, params, check, through_parent=True)
                t, c = time.perf_counter(), time.process_time()
                module.train(direct_student(ns), **params)
                direct = {"wall": time.perf_counter() - t, "cpu": time.process_time() - c}
                rows.append((name, graded, relayed, direct))
    finally:
        ref.close()
        stu.close()

    lines = ["| trainer | round trips | as graded: wall / CPU (s) | relayed: wall / CPU (s) | "
             "in place: wall / CPU (s) | overhead per round trip, as graded: wall / CPU (ms) | "
             "relayed: CPU (ms) |", "|---|---|---|---|---|---|---|"]
    per_trip, per_trip_relayed = [], []
    for name, g, r, d in rows:
        ow, oc = (g["wall"] - d["wall"]) / g["trips"], (g["cpu"] - d["cpu"]) / g["trips"]
        orc = (r["cpu"] - d["cpu"]) / r["trips"]
        per_trip.append(oc)
        per_trip_relayed.append(orc)
        lines.append(f"| {name} | {g['trips']} | {g['wall']:.2f} / {g['cpu']:.2f} | "
                     f"{r['wall']:.2f} / {r['cpu']:.2f} | {d['wall']:.2f} / {d['cpu']:.2f} | "
                     f"{ow * 1e3:.2f} / {oc * 1e3:.2f} | {orc * 1e3:.2f} |")
    load = os.getloadavg()[0]
    text = (f"{BEGIN}\n## Per-iteration cost of trusted training\n\n"
            f"Measured by `bench/relay_bench.py` on {_dt.date.today().isoformat()} "
            f"({platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f} at the end; "
            f"Python {platform.python_version()}, torch {torch.__version__}). Each student call "
            "of a training run is one round trip (one `call`, or one `map` for a batch of "
            "one-step GAE episodes): \"as graded\", trusted worker -> student's worker and "
            "back on the pipes the grading process hands over (`autograder/sandbox/direct.py`); "
            "\"relayed\", through the grading process both ways. CPU is the sum over the three "
            "processes. \"In place\" runs the same trainer with the same functions called in "
            "one process: the difference is what the wire costs.\n\n" + "\n".join(lines) +
            f"\n\nMedian overhead as graded: {median(per_trip) * 1e3:.2f} ms of CPU per round "
            f"trip (relayed: {median(per_trip_relayed) * 1e3:.2f} ms); Part 1 makes 1,500 "
            "round trips per submission (500 REINFORCE steps, 800 PPO loss steps, 200 GAE "
            f"batches).\n{END}\n")
    print(text)
    if args.write:
        path = Path(args.write)
        old = path.read_text() if path.exists() else ""
        if BEGIN.split(" (")[0] in old:
            old = re.sub(r"<!-- calibration:relay:begin.*?<!-- calibration:relay:end -->\n?",
                         lambda m: text, old, flags=re.S)
        else:
            old = old.rstrip() + "\n\n" + text
        path.write_text(old)
    return 0


if __name__ == "__main__":
    sys.exit(main())
