"""Calibrate the training tests' pass marks of assignment ``ppo`` on the answer key:
``make calibrate``.

    python -m autograder.calibration --assignment ppo [--seeds 200] [--controls 20]

Runs the source notebook's own solutions (the instructor's code, so in this process, without a
sandbox) through both trusted trainers (``assignments/ppo/trainers/bandit.py``, ``contextual.py``),
every call of a student function served by the worker's own request handler and checked
against the answer key and its mutants as a student's is (``local.local_student``), over ``--seeds`` hidden seeds, drawn exactly as the
suites draw them (``derive_seed(cohort_seed, student id, test key)`` with made-up student ids).
It records the distribution of the best-arm probability (REINFORCE) and of the fraction of the
random-to-optimal gap closed (PPO), runs negative controls (a sign-flipped loss, a loss that
always favours one arm), sets each threshold by one rule, and writes

- ``assignments/ppo/thresholds.json``: the thresholds the suites read (one source of truth);
- ``docs/calibration.md``: the command, the date, the distributions and the thresholds;
- the thresholds table of ``docs/grading.md`` (between its calibration markers).

The rule: the threshold is the worst reference result minus a margin of 0.10, rounded down to a
multiple of 0.05. Calibration fails (exit 1) if any negative control reaches its threshold.
"""
from __future__ import annotations

import datetime as _dt
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

from autograder.calibration import (command_line, finish, set_up, summary, torch_version,
                                    train, with_override, write_keeping_sections)
from autograder.seeding import derive_seed

from . import training as T
from .trainers import bandit, contextual

ASSIGNMENT = "ppo"
MAKE_ARGS = ("--seeds", "200")            # what `make calibrate` runs

MARGIN = 0.10
STEP = 0.05
# The tests' seeding keys (``<file>::<test>``): calibration draws seeds the way the suites do.
REINFORCE_KEY = "test_reinforce_training.py::test_reinforce_finds_best_arm"
PPO_KEY = "test_ppo_training.py::test_ppo_closes_gap"

SIGN_FLIPPED = {
    "reinforce_loss": "def reinforce_loss(log_probs, rewards):\n"
                      "    return (log_probs * torch.as_tensor(rewards, dtype=log_probs.dtype))"
                      ".mean()\n",
    "ppo_combined_loss": "def ppo_combined_loss(log_probs_new, log_probs_old, advantages, values,"
                         " returns, epsilon=0.2, vf_coeff=0.5):\n"
                         "    policy = -ppo_loss(log_probs_new, log_probs_old, advantages, "
                         "epsilon)\n"
                         "    value = ((values - returns) ** 2).mean()\n"
                         "    return policy + vf_coeff * value, policy, value\n",
}
def threshold_rule(worst: float) -> float:
    """The worst reference result minus MARGIN, rounded down to a multiple of STEP."""
    return math.floor(round((worst - MARGIN) / STEP, 9)) * STEP


def run_reinforce(ns: dict, kit: str, seed: int, assignment=None, reference=None) -> float:
    params = T.bandit_params(seed, kit)
    check = T.check_params(assignment, seed, {"reinforce_loss": params["episodes"]})
    out = train(bandit, ns, reference if reference is not None else ns, params, check)
    if "error" in out:
        return float("nan")
    return T.best_arm_probability(out["logits"], params["arm_means"])


def run_ppo(ns: dict, kit: str, seed: int, assignment=None, reference=None) -> float:
    params = T.contextual_params(seed, kit)
    check = T.check_params(assignment, seed, {"compute_gae": params["iterations"],
                                              "ppo_combined_loss": params["iterations"]
                                              * params["ppo_epochs"]})
    out = train(contextual, ns, reference if reference is not None else ns, params, check)
    if "error" in out:
        return float("nan")
    return T.gap_closed(out["actor"], params["weights"], T.evaluation_states(seed))["gap_closed"]


def always_arm_2(seed: int) -> float:
    """The score of a policy that puts all its probability on arm 2 (the notebook's best arm),
    as a loss hard-coded to favour that arm would end up: the hidden arm means defeat it."""
    means = T.bandit_arm_means(seed)
    logits = np.full(means.shape, -30.0)
    logits[:, 2] = 0.0
    return T.best_arm_probability(logits, means)


def main(argv: list[str] | None = None) -> int:
    args, settings, assignment, reference = set_up(
        command_line(ASSIGNMENT, __doc__, seeds=200, controls=20), argv)
    bandit_kit = T.kit_source(assignment, ["BanditPolicy"])
    ppo_kit = T.kit_source(assignment, ["ContextualBandit", "PPOPolicy"])
    started = time.monotonic()

    def seeds(key: str, n: int, tag: str) -> list[int]:
        return [derive_seed(settings.cohort_seed, f"calibration-{tag}-{i:04d}", key)
                for i in range(n)]

    results: dict[str, list[float]] = {"reinforce": [], "ppo": []}
    for i, (s1, s2) in enumerate(zip(seeds(REINFORCE_KEY, args.seeds, "ref"),
                                     seeds(PPO_KEY, args.seeds, "ref"))):
        results["reinforce"].append(run_reinforce(reference, bandit_kit, s1, assignment,
                                                  reference))
        results["ppo"].append(run_ppo(reference, ppo_kit, s2, assignment, reference))
        if (i + 1) % 10 == 0:
            print(f"  {i + 1}/{args.seeds} seeds, {time.monotonic() - started:.0f} s: "
                  f"best-arm min {min(results['reinforce']):.4f}, "
                  f"gap-closed min {min(results['ppo']):.4f}", flush=True)
    for name, vals in results.items():
        if not all(np.isfinite(vals)):
            print(f"the reference failed to train ({name}): calibration stops", file=sys.stderr)
            return 1

    controls = {
        "reinforce: sign flipped": [run_reinforce(with_override(reference, SIGN_FLIPPED[
            "reinforce_loss"]), bandit_kit, s, assignment, reference)
            for s in seeds(REINFORCE_KEY, args.controls, "flip")],
        "reinforce: a policy always on arm 2": [always_arm_2(s) for s in seeds(
            REINFORCE_KEY, args.controls, "arm2")],
        "ppo: policy loss sign flipped": [run_ppo(with_override(reference, SIGN_FLIPPED[
            "ppo_combined_loss"]), ppo_kit, s, assignment, reference)
            for s in seeds(PPO_KEY, args.controls, "flip")],
    }
    stats = {"reinforce": summary(results["reinforce"]), "ppo": summary(results["ppo"])}
    thresholds = {
        "reinforce_best_arm_probability": threshold_rule(stats["reinforce"]["min"]),
        "ppo_gap_closed": threshold_rule(stats["ppo"]["min"]),
    }
    control_stats = {k: summary([x if np.isfinite(x) else -np.inf for x in v])
                     for k, v in controls.items()}
    bad = [k for k, s in control_stats.items()
           if s["max"] >= thresholds["reinforce_best_arm_probability" if k.startswith("reinforce")
                                     else "ppo_gap_closed"]]
    seconds = time.monotonic() - started
    record = {
        "thresholds": thresholds,
        "rule": f"worst reference result minus {MARGIN:.2f}, rounded down to a multiple of "
                f"{STEP:.2f}",
        "reference": stats,
        "negative_controls": control_stats,
        "false_fails_at_threshold": {
            "reinforce": int(sum(v < thresholds["reinforce_best_arm_probability"]
                                 for v in results["reinforce"])),
            "ppo": int(sum(v < thresholds["ppo_gap_closed"] for v in results["ppo"]))},
        "seeds": args.seeds, "control_seeds": args.controls,
        "cohort_seed": settings.cohort_seed,
        "date": _dt.date.today().isoformat(),
        "command": "make calibrate",
        "seconds": round(seconds, 1),
        "torch": torch_version(), "python": platform.python_version(),
    }
    def write_docs(docs: Path) -> str:
        write_keeping_sections(docs / "calibration.md", render_markdown(record))
        update_grading_doc(docs / "grading.md", record)
        return "docs/calibration.md and the thresholds section of docs/grading.md"

    return finish(args, record, render_markdown(record), bad, T.THRESHOLDS_FILE, write_docs)


BEGIN, END = "<!-- calibration:begin (written by make calibrate) -->", "<!-- calibration:end -->"


def update_grading_doc(path: Path, r: dict) -> None:
    """Rewrite the thresholds table between the calibration markers of docs/grading.md."""
    if not path.exists():
        return
    text = path.read_text()
    if BEGIN not in text or END not in text:
        return
    ref, ctl, th = r["reference"], r["negative_controls"], r["thresholds"]
    block = f"""| test | pass mark (score above) | answer key over {r['seeds']} seeds: min / median / max | negative controls (max over {r['control_seeds']} seeds) |
|---|---|---|---|
| `reinforce_training`: mean best-arm probability | **{th['reinforce_best_arm_probability']:.2f}** | {ref['reinforce']['min']:.3f} / {ref['reinforce']['p50']:.3f} / {ref['reinforce']['max']:.3f} | sign flipped {ctl['reinforce: sign flipped']['max']:.3f}; always arm 2 {ctl['reinforce: a policy always on arm 2']['max']:.3f} |
| `ppo_training`: fraction of the gap closed | **{th['ppo_gap_closed']:.2f}** | {ref['ppo']['min']:.3f} / {ref['ppo']['p50']:.3f} / {ref['ppo']['max']:.3f} | policy loss sign flipped {ctl['ppo: policy loss sign flipped']['max']:.3f} |

Reference false fails at these marks: {r['false_fails_at_threshold']['reinforce']} of {r['seeds']} (REINFORCE) and
{r['false_fails_at_threshold']['ppo']} of {r['seeds']} (PPO); `make calibrate` of {r['date']}."""
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}")


def render_markdown(r: dict) -> str:
    def row(name: str, s: dict) -> str:
        return (f"| {name} | {s['n']} | {s['min']:.4f} | {s['p1']:.4f} | {s['p5']:.4f} | "
                f"{s['p50']:.4f} | {s['p95']:.4f} | {s['max']:.4f} | {s['mean']:.4f} | "
                f"{s['sd']:.4f} |")

    th = r["thresholds"]
    head = ("| run | seeds | min | p1 | p5 | median | p95 | max | mean | sd |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    controls = "\n".join(row(k, s) for k, s in r["negative_controls"].items())
    return f"""# Calibration of the training tests

Generated by `{r['command']}` (`python -m autograder.calibration`) on {r['date']}, in
{r['seconds']:.0f} s (Python {r['python']}, torch {r['torch']}, cohort seed {r['cohort_seed']}).
Do not edit by hand: rerun `make calibrate` after any change to the harnesses, the notebook's
given classes, or the answer key. The thresholds live in `assignments/ppo/thresholds.json`
(written by the same run); the suites read them from there and nowhere else.

## What is measured

Each run is the suite's own: the trusted trainer, each call of a student function sent through
the worker's request handler as data and its reply checked against the answer key and its
catalogued mistakes (`autograder/harness/relay.py`). A control that is not a catalogued mistake
fails that check (it scores NaN, counted as -inf), which is what grading would do with it.

- **REINFORCE** (`reinforce_training`, trainer `assignments/ppo/trainers/bandit.py`): {T.BANDIT_RUNS}
  independent five-armed bandits per student, trained at once for 500 episodes with Adam
  (lr 0.05) and the notebook's `BanditPolicy`. The arm means are the notebook's levels
  (0.1, 0.2, 0.3, 0.5, 0.8), shuffled per bandit by the hidden seed and jittered by at most
  ±{T.BANDIT_JITTER}. The score is the final probability of each bandit's best arm, averaged
  over the {T.BANDIT_RUNS} bandits.
- **PPO** (`ppo_training`, trainer `assignments/ppo/trainers/contextual.py`): the notebook's PPO loop
  (200 iterations, batch 64, 4 epochs, Adam lr 3e-4, epsilon 0.2, vf_coeff 0.5) on the
  notebook's `ContextualBandit` and `PPOPolicy`, bandit weights drawn from the hidden seed. The
  parent scores the trained actor (greedy action) on {T.EVAL_STATES:,} fixed evaluation states,
  the same states for the random, trained and optimal policies, with the true mean rewards (no
  noise): the score is the fraction of the random-to-optimal gap closed.

Each of the {r['seeds']} reference runs uses a hidden seed drawn exactly like a student's
(`derive_seed(cohort_seed, student id, test)`, with made-up student ids).

## The answer key over {r['seeds']} hidden seeds

{head}
{row("REINFORCE best-arm probability", r['reference']['reinforce'])}
{row("PPO gap closed", r['reference']['ppo'])}

## Negative controls ({r['control_seeds']} seeds each)

{head}
{controls}

## Thresholds

Rule: {r['rule']}.

| test | threshold | reference false fails at the threshold |
|---|---|---|
| `reinforce_training`: best-arm probability above | **{th['reinforce_best_arm_probability']:.2f}** | {r['false_fails_at_threshold']['reinforce']} of {r['seeds']} |
| `ppo_training`: gap closed above | **{th['ppo_gap_closed']:.2f}** | {r['false_fails_at_threshold']['ppo']} of {r['seeds']} |

Every negative control stays below its threshold (the run fails otherwise).
"""


if __name__ == "__main__":
    sys.exit(main())
