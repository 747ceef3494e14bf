"""Calibrate the RLHF training test of assignment ``ppo_lm`` on the answer key.

    python -m autograder.calibration --assignment ppo_lm [--seeds 100] [--controls 5]

(``make calibrate`` runs it after Part 1's calibration.) The source notebook's own solutions
(the instructor's code, so in this process, without a sandbox) go through the trusted trainer
``assignments/ppo_lm/trainers/lm.py``, every call of a student function served by the worker's own
request handler and checked against the answer key as a student's is (``local.local_student``),
over ``--seeds`` hidden seeds drawn exactly as the suite draws them
(``derive_seed(cohort_seed, student id, test key)`` with made-up student ids), and the parent's
evaluation (``training.evaluate``) scores each run: the rise of the mean score over the
pretrained model, and the KL to it. Negative controls (the KL penalty's sign flipped, no KL
penalty, the score's sign flipped, kl_coef ignored) run the same way.

Every finished run is appended to a log (``build/calibration-ppo_lm.jsonl``) with a fingerprint
of everything that decides its result (harness, suite helpers, notebook cells, weights); with
``--resume`` the runs of the log that match the current fingerprint are reused. So a long
calibration can be stopped and continued, and ``--seeds`` says how many reference runs the
thresholds rest on.

The rules: the reward-rise pass mark is the smallest reference rise minus ``RISE_MARGIN``, rounded
down to a multiple of 0.05; the KL bound is the largest reference KL plus ``KL_MARGIN`` nats,
rounded up to a multiple of 0.5. Calibration fails (exit 1) if any negative control passes both.

Writes ``assignments/ppo_lm/thresholds.json`` (what the suite reads), the Part 2 section of
``docs/calibration.md`` and the Part 2 thresholds table of ``docs/grading.md`` (between their
``calibration:ppo_lm`` markers).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import platform
import sys
import time
from pathlib import Path


from autograder import REPO_ROOT
from autograder.calibration import (command_line, finish, set_up, summary,
                                    torch_version, with_override)
from autograder.seeding import derive_seed
from . import training as T

ASSIGNMENT = "ppo_lm"
MAKE_ARGS = ("--seeds", "100", "--resume")   # what `make calibrate` runs
KEY = "test_lm_ppo_training.py::test_rlhf_raises_reward_within_kl"
RISE_MARGIN, RISE_STEP = 0.10, 0.05
KL_MARGIN, KL_STEP = 1.0, 0.5
LOG = REPO_ROOT / "build" / "calibration-ppo_lm.jsonl"
BEGIN = "<!-- calibration:ppo_lm:begin (written by make calibrate) -->"
END = "<!-- calibration:ppo_lm:end -->"

_PTR = "_answer_per_token_rewards = per_token_rewards\n"
CONTROLS = {
    "KL penalty sign flipped": _PTR + (
        "def per_token_rewards(logprobs, ref_logprobs, scores, mask, kl_coef=0.1):\n"
        "    return _answer_per_token_rewards(logprobs, ref_logprobs, scores, mask, "
        "kl_coef=-kl_coef)\n"),
    "no KL penalty (kl_coef 0)": _PTR + (
        "def per_token_rewards(logprobs, ref_logprobs, scores, mask, kl_coef=0.1):\n"
        "    return _answer_per_token_rewards(logprobs, ref_logprobs, scores, mask, "
        "kl_coef=0.0)\n"),
    "kl_coef ignored (penalty weight 1)": _PTR + (
        "def per_token_rewards(logprobs, ref_logprobs, scores, mask, kl_coef=0.1):\n"
        "    return _answer_per_token_rewards(logprobs, ref_logprobs, scores, mask, "
        "kl_coef=1.0)\n"),
    "score sign flipped": _PTR + (
        "def per_token_rewards(logprobs, ref_logprobs, scores, mask, kl_coef=0.1):\n"
        "    scores = -torch.as_tensor(scores, dtype=logprobs.dtype)\n"
        "    return _answer_per_token_rewards(logprobs, ref_logprobs, scores, mask, "
        "kl_coef=kl_coef)\n"),
}


def rise_rule(smallest: float) -> float:
    return math.floor(round((smallest - RISE_MARGIN) / RISE_STEP, 9)) * RISE_STEP


def kl_rule(largest: float) -> float:
    return math.ceil(round((largest + KL_MARGIN) / KL_STEP, 9)) * KL_STEP


def passes(result: dict, thresholds: dict) -> bool:
    """The suite's criterion (``test_lm_ppo_training.py`` applies the same)."""
    return bool(result.get("finite")) and result["rise"] >= thresholds["reward_rise_min"] \
        and result["kl"] <= thresholds["kl_max"]


def fingerprint(assignment) -> str:
    """A hash of everything that decides a calibration run's result: the notebook's loop and
    answer key, the weights, the harness's training code and the parent's evaluation."""
    import inspect

    from autograder.harness import Adam, relay

    from .trainers import lm

    h = hashlib.sha256()
    h.update(T.weights_path(assignment).read_bytes())
    h.update(T.kit_source(assignment).encode())
    for cell in assignment.cells:
        if cell.kind == "solution":
            h.update(cell.source.encode())
    for obj in (Adam, lm.train, lm.stand_ins, lm.surrogate, relay, lm._torch_with_harness_adam,
                T.torch_seed, T.lm_params,
                T.evaluate, T._evaluate, T.rollout, T.NumpyLM, T.EvalKit, T._sigmoid):
        h.update(inspect.getsource(obj).encode())
    h.update(repr((T.ITERATIONS, T.BATCH_SIZE, T.EVAL_SAMPLES, T.EVAL_SALT, T.TRAIN_SALT,
                   T.VALUE_SALT, KEY)).encode())
    return h.hexdigest()[:16]


def run_one(ns: dict, assignment, seed: int, reference: dict | None = None) -> dict:
    """One run as the suite makes it: the trusted trainer, the functions of ``ns`` served
    through the worker's request handler (``local.local_student``), each reply checked against
    ``reference`` (the answer key and its mutants) like a student's."""
    from autograder.harness import local, relay

    from .trainers import lm

    started = time.monotonic()
    params = T.lm_params(seed, assignment)
    check = T.check_params(assignment, seed, params["iterations"])
    try:
        out = lm.train(local.local_student(ns, reference if reference is not None else ns,
                                           check), **params)
    except relay.HarnessStop as stop:
        out = {"error": str(stop)}
    if "error" in out:
        return {"error": out["error"], "finite": False, "rise": float("nan"),
                "kl": float("nan"), "seconds": time.monotonic() - started}
    result = T.evaluate(out["policy"], params["weights"], seed, T.eval_kit(assignment))
    result.pop("examples", None)
    result["harness_seconds"] = round(float(out["seconds"]), 2)
    result["seconds"] = round(time.monotonic() - started, 2)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = command_line(ASSIGNMENT, __doc__, seeds=100, controls=5)
    ap.add_argument("--log", default=str(LOG))
    ap.add_argument("--resume", action="store_true",
                    help="reuse the runs of --log made with the current code and data")
    args, settings, assignment, reference = set_up(ap, argv)
    fp = fingerprint(assignment)
    log = Path(args.log)
    done: dict[tuple, dict] = {}
    if args.resume and log.exists():
        for line in log.read_text().splitlines():
            row = json.loads(line)
            if row.get("fingerprint") == fp:
                done[(row["run"], row["student"])] = row["result"]
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def seed_of(student: str) -> int:
        return derive_seed(settings.cohort_seed, student, KEY)

    def run(name: str, ns: dict, student: str) -> dict:
        if (name, student) in done:
            return done[(name, student)]
        result = run_one(ns, assignment, seed_of(student), reference)
        with log.open("a") as f:
            f.write(json.dumps({"fingerprint": fp, "run": name, "student": student,
                                "seed": seed_of(student), "result": result}) + "\n")
        done[(name, student)] = result
        return result

    results = []
    for i in range(args.seeds):
        r = run("reference", reference, f"calibration-ref-{i:04d}")
        results.append(r)
        if (i + 1) % 5 == 0 or i + 1 == args.seeds:
            ok = [x for x in results if x.get("finite")]
            print(f"  {i + 1}/{args.seeds} seeds, {time.monotonic() - started:.0f} s: rise min "
                  f"{min((x['rise'] for x in ok), default=float('nan')):.3f}, KL max "
                  f"{max((x['kl'] for x in ok), default=float('nan')):.3f}", flush=True)
    broken = [r for r in results if not r.get("finite")]
    if broken:
        print(f"the reference failed to train on {len(broken)} seeds: calibration stops "
              f"({broken[0]})", file=sys.stderr)
        return 1
    controls = {}
    for name, source in CONTROLS.items():
        ns = with_override(reference, source)
        tag = "".join(ch if ch.isalnum() else "-" for ch in name.lower())
        controls[name] = [run(name, ns, f"calibration-{tag}-{i:04d}")
                          for i in range(args.controls)]
        print(f"  control {name}: done", flush=True)

    rises, kls = [r["rise"] for r in results], [r["kl"] for r in results]
    thresholds = {"reward_rise_min": round(rise_rule(min(rises)), 6),
                  "kl_max": round(kl_rule(max(kls)), 6)}
    control_stats = {}
    bad = []
    for name, runs in controls.items():
        finite = [r for r in runs if r.get("finite")]
        control_stats[name] = {
            "runs": len(runs), "finished": len(finite),
            "rise": summary([r["rise"] for r in finite]) if finite else None,
            "kl": summary([r["kl"] for r in finite]) if finite else None,
            "pass": int(sum(passes(r, thresholds) for r in runs))}
        if control_stats[name]["pass"]:
            bad.append(name)
    seconds = [r["harness_seconds"] for r in results]
    record = {
        "thresholds": thresholds,
        "rules": {"reward_rise_min": f"smallest reference rise minus {RISE_MARGIN:.2f}, rounded "
                                     f"down to a multiple of {RISE_STEP:.2f}",
                  "kl_max": f"largest reference KL plus {KL_MARGIN:.1f} nats, rounded up to a "
                            f"multiple of {KL_STEP:.1f}"},
        "reference": {"rise": summary(rises), "kl": summary(kls),
                      "score_before": summary([r["score_before"] for r in results]),
                      "score_after": summary([r["score_after"] for r in results]),
                      "length": summary([r["length"] for r in results]),
                      "harness_seconds": summary(seconds)},
        "negative_controls": control_stats,
        "false_fails_at_threshold": int(sum(not passes(r, thresholds) for r in results)),
        "seeds": len(results), "control_seeds": args.controls,
        "iterations": T.ITERATIONS, "batch_size": T.BATCH_SIZE, "eval_samples": T.EVAL_SAMPLES,
        "cohort_seed": settings.cohort_seed, "fingerprint": fp,
        "date": _dt.date.today().isoformat(),
        "command": f"python -m autograder.calibration --assignment ppo_lm --seeds {args.seeds}",
        "seconds": round(time.monotonic() - started, 1),
        "run_seconds": round(sum(r.get("seconds", 0.0) for r in results)
                             + sum(r.get("seconds", 0.0) for runs in controls.values()
                                   for r in runs), 1),
        "torch": torch_version(), "python": platform.python_version(),
    }
    def write_docs(docs: Path) -> str:
        replace_section(docs / "calibration.md", render_markdown(record))
        replace_section(docs / "grading.md", grading_block(record))
        return "the ppo_lm sections of docs/calibration.md and docs/grading.md"

    return finish(args, record, render_markdown(record), bad, T.THRESHOLDS_FILE, write_docs)


def replace_section(path: Path, body: str) -> None:
    """Put ``body`` between the ppo_lm calibration markers of ``path`` (appended if absent)."""
    text = path.read_text() if path.exists() else ""
    block = f"{BEGIN}\n{body.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        path.write_text(f"{head}{block}{tail}")
    else:
        path.write_text(text.rstrip() + "\n\n" + block + "\n")


def grading_block(r: dict) -> str:
    th, ref = r["thresholds"], r["reference"]
    controls = "\n".join(
        f"- {name}: rise at most {s['rise']['max']:+.3f}, KL at least {s['kl']['min']:.2f} nats"
        if s["rise"] else f"- {name}: no run finished"
        for name, s in r["negative_controls"].items())
    return f"""| criterion | pass mark | answer key over {r['seeds']} seeds: min / median / max |
|---|---|---|
| rise of the mean score over the pretrained model | at least **{th['reward_rise_min']:.2f}** | {ref['rise']['min']:.3f} / {ref['rise']['p50']:.3f} / {ref['rise']['max']:.3f} |
| KL to the pretrained model (nats per completion) | at most **{th['kl_max']:.1f}** | {ref['kl']['min']:.2f} / {ref['kl']['p50']:.2f} / {ref['kl']['max']:.2f} |

Negative controls ({r['control_seeds']} seeds each; none passes both criteria on any seed):

{controls}

Reference false fails at these marks: {r['false_fails_at_threshold']} of {r['seeds']};
`{r['command']}` of {r['date']}."""


def render_markdown(r: dict) -> str:
    def row(name: str, s: dict, fmt: str = ".3f") -> str:
        return (f"| {name} | {s['n']} | {s['min']:{fmt}} | {s['p1']:{fmt}} | {s['p5']:{fmt}} | "
                f"{s['p50']:{fmt}} | {s['p95']:{fmt}} | {s['max']:{fmt}} | {s['mean']:{fmt}} | "
                f"{s['sd']:{fmt}} |")

    head = ("| measure | seeds | min | p1 | p5 | median | p95 | max | mean | sd |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    ref, th = r["reference"], r["thresholds"]
    controls = []
    for name, s in r["negative_controls"].items():
        if s["rise"] is None:
            controls.append(f"| {name} | {s['runs']} | no run finished | | {s['pass']} |")
            continue
        controls.append(f"| {name} | {s['finished']} of {s['runs']} | {s['rise']['min']:+.3f} / "
                        f"{s['rise']['max']:+.3f} | {s['kl']['min']:.2f} / {s['kl']['max']:.2f} "
                        f"| {s['pass']} |")
    controls_text = "\n".join(controls)
    return f"""# Calibration of Part 2 (`ppo_lm`): the RLHF training test

Generated by `{r['command']}` (also run by `make calibrate`) on {r['date']}
(Python {r['python']}, torch {r['torch']}, cohort seed {r['cohort_seed']}, fingerprint
`{r['fingerprint']}`). The {r['seeds']} reference runs and the negative controls took
{r['run_seconds'] / 60:.0f} minutes of wall time in all, niced, on two cores shared with other
work. Do not edit by hand: rerun after any change
to the harness, the notebook's loop, the pretrained weights or the answer key. The thresholds
live in `assignments/ppo_lm/thresholds.json`, written by the same run; the suite reads them
from there and nowhere else.

## What is measured

`lm_ppo_training` (harness `assignments/ppo_lm/trainers/lm.py`): the notebook's own `make_rlhf_models`
and `rlhf_train`, {r['iterations']} iterations of batch {r['batch_size']} (the notebook's other
defaults: 4 PPO epochs of 2 minibatches, Adam lr 3e-4, kl_coef 0.1, gamma 1, lam 0.95, epsilon
0.2, vf_coeff 0.5, gradient norm 1), with the student's four functions; the loop's seed and the
critic's initialisation come from the hidden seed. The parent then samples {r['eval_samples']}
completions (the notebook's prompts in turn) from the trained policy and from the pretrained
model with the same random numbers, drawn from the hidden seed, in its own numpy copy of the
model, and measures:

- the **rise** of the mean sentiment score (trained minus pretrained);
- the **KL** to the pretrained model: the mean over the trained policy's completions of
  sum_t (log pi - log pi_ref) over their real tokens, in nats.

Each of the {r['seeds']} reference runs uses a hidden seed drawn exactly like a student's
(`derive_seed(cohort_seed, student id, "{KEY}")`, with made-up student ids).

## The answer key over {r['seeds']} hidden seeds

{head}
{row("rise of the mean score", ref['rise'])}
{row("KL (nats per completion)", ref['kl'])}
{row("mean score, pretrained", ref['score_before'])}
{row("mean score, trained", ref['score_after'])}
{row("completion length (tokens)", ref['length'], ".1f")}
{row("harness run time (s)", ref['harness_seconds'], ".1f")}

## Negative controls ({r['control_seeds']} seeds each)

| control | runs finished | rise min / max | KL min / max | runs passing |
|---|---|---|---|---|
{controls_text}

## Thresholds

- rise: {r['rules']['reward_rise_min']};
- KL: {r['rules']['kl_max']}.

| criterion | threshold | reference false fails at the thresholds |
|---|---|---|
| rise of the mean score at least | **{th['reward_rise_min']:.2f}** | {r['false_fails_at_threshold']} of {r['seeds']} (both criteria together) |
| KL at most (nats) | **{th['kl_max']:.1f}** | |

Every negative control fails at least one criterion on every seed (the run fails otherwise).
"""


if __name__ == "__main__":
    sys.exit(main())
