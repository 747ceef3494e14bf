"""Memory and time of one Gradescope bundle run, on this machine (the local stand-in for
Gradescope's container): the figures of README "Deploying on Gradescope".

Builds the bundle, unzips it into a scratch ``/autograder`` (``AUTOGRADER_ROOT``), runs
``setup.sh`` without installing (this venv stands in for ``/autograder/venv``), then
``run_autograder`` on the answer key of each assignment, ``--runs`` times. Meanwhile it samples
``/proc`` every 10 ms and sums the resident memory (RSS) of ``run_autograder`` and all its
descendants (the grader, the sandboxed worker, the reference worker).

    .venv/bin/python tools/gradescope_footprint.py [--assignment ppo] [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from autograder.course.demo import copy_course, solutions, submission  # noqa: E402


def children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(d.name))
    return tree


def tree_rss_mb(root: int) -> float:
    tree, total, todo = children(), 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def run_once(root: Path, env: dict) -> tuple[float, float]:
    """(peak summed RSS in MB, wall seconds) of one run_autograder."""
    started = time.monotonic()
    proc = subprocess.Popen([str(root / "source" / "run_autograder")], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0.0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss_mb(proc.pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    proc.wait()
    stop.set()
    sampler.join()
    return peak, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--assignment", default="ppo")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle = tmp / "bundle.zip"
        subprocess.run([sys.executable, "-m", "autograder", "gradescope-bundle", args.assignment,
                        "--out", str(bundle)], cwd=REPO, check=True, capture_output=True)
        root, src = tmp / "autograder", tmp / "autograder" / "source"
        with zipfile.ZipFile(bundle) as zf:
            for info in zf.infolist():
                zf.extract(info, src)
                os.chmod(src / info.filename, info.external_attr >> 16 & 0o777 or 0o644)
        env = dict(os.environ, AUTOGRADER_ROOT=str(root), AUTOGRADER_SKIP_INSTALL="1",
                   AUTOGRADER_PYTHON=sys.executable)
        subprocess.run(["bash", str(src / "setup.sh")], cwd=src, env=env, check=True,
                       capture_output=True)
        (root / "submission").mkdir()
        paths = copy_course(tmp / "course", args.assignment)
        (root / "submission" / f"{args.assignment}.ipynb").write_bytes(
            submission(paths, solutions(paths, args.assignment), assignment=args.assignment))
        figures = []
        for i in range(args.runs):
            peak, seconds = run_once(root, env)
            data = json.loads((root / "results" / "results.json").read_text())
            figures.append((peak, seconds))
            print(f"run {i + 1}: peak RSS summed over processes {peak:.0f} MB, {seconds:.1f} s, "
                  f"score {data['score']:g} / {data['extra_data']['max_score']:g}, "
                  f"sandbox {data['extra_data']['sandbox']}", flush=True)
        print(f"{args.assignment}: peak {max(p for p, _ in figures):.0f} MB; time "
              f"{min(s for _, s in figures):.1f}-{max(s for _, s in figures):.1f} s; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
