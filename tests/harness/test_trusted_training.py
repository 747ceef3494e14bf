"""Training runs on the trusted side: a submission that reaches outside its arguments (the
caller's frames, the garbage collector, the loaded modules) finds nothing of the training run in
its own process, and cannot earn the training points (Part 2 here; Part 1's cases are in the
adversarial corpus: ``training_reaches_frames``, ``training_reply_forged``,
``training_state_across_calls``). Graded through the command line, as a TA would."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from autograder import REPO_ROOT
from autograder.assignments import load_assignment
from autograder.suites.mutant_corpus import submission_notebook

HUNT = '''
import gc
import sys

import torch


def _hunt():
    """The models, optimizer or loop state, wherever they could be reached from here."""
    hits = []
    frame = sys._getframe(1)
    while frame is not None:
        for scope in (frame.f_locals, frame.f_globals):
            for key, value in list(scope.items()):
                if key in ("policy", "ref_model", "value_head", "optimizer", "params") and \\
                        isinstance(value, (torch.nn.Module, torch.optim.Optimizer, list)):
                    hits.append(key)
        frame = frame.f_back
    for obj in gc.get_objects():
        if isinstance(obj, (torch.nn.Module, torch.optim.Optimizer)):
            hits.append(type(obj).__name__)
    hits += [n for n in list(sys.modules) if n.startswith(("autograder.harness",
                                                           "autograder_assignments"))
             and hasattr(sys.modules[n], "train")]
    if hits:
        for obj in gc.get_objects():   # what the old attack did: make the policy say "great"
            if isinstance(obj, torch.nn.Module):
                obj.requires_grad_(True)
        raise RuntimeError("FOUND-TRAINING-STATE " + " ".join(sorted(set(map(str, hits)))))
'''

PER_TOKEN_REWARDS = HUNT + '''

def per_token_rewards(logprobs, ref_logprobs, scores, mask, kl_coef=0.1):
    _hunt()
    real = torch.as_tensor(mask, device=logprobs.device) != 0
    dtype = torch.result_type(logprobs, ref_logprobs)
    penalty = -kl_coef * (logprobs - ref_logprobs.to(dtype))
    rewards = torch.where(real, penalty, torch.zeros((), dtype=dtype, device=logprobs.device))
    next_real = torch.cat([real[:, 1:], torch.zeros_like(real[:, :1])], dim=1)
    last = real & ~next_real
    scores = torch.as_tensor(scores, dtype=dtype, device=logprobs.device)
    return rewards + torch.where(last, scores.unsqueeze(1), torch.zeros((), dtype=dtype))
'''

TOKEN_PPO_LOSS = HUNT + '''

def token_ppo_loss(logprobs_new, logprobs_old, advantages, values, returns, mask,
                   epsilon=0.2, vf_coeff=0.5):
    _hunt()
    zero = torch.zeros((), requires_grad=True)
    return zero, zero, zero
'''


def grade(tmp_path, nb: dict, assignment: str) -> dict:
    path, out = tmp_path / "submission.ipynb", tmp_path / "results.json"
    path.write_text(json.dumps(nb))
    subprocess.run([sys.executable, "-m", "autograder", "grade", str(path), "--assignment",
                    assignment, "--student", "hunter", "--out", str(out)], cwd=REPO_ROOT,
                   check=True, capture_output=True, timeout=900)
    return json.loads(out.read_text())


def by_cell(result: dict) -> dict:
    cells: dict = {}
    for t in result["tests"]:
        score, total, texts = cells.get(t["tags"][0], (0.0, 0.0, []))
        cells[t["tags"][0]] = (score + t["score"], total + t["max_score"], texts + [t["output"]])
    return cells


def test_lm_functions_that_hunt_for_the_models_find_nothing_and_score_0(tmp_path):
    assignment = load_assignment("ppo_lm", REPO_ROOT)
    nb = submission_notebook(assignment, {"per_token_rewards": PER_TOKEN_REWARDS,
                                          "token_ppo_loss": TOKEN_PPO_LOSS})
    result = grade(tmp_path, nb, "ppo_lm")
    cells = by_cell(result)
    text = json.dumps(result)
    assert "FOUND-TRAINING-STATE" not in text            # nothing of the run is in its process
    assert not any(f["code"] == "grader_error" for f in result["extra_data"]["flags"])
    score, total, messages = cells["lm_ppo_training"]
    assert total == 3 and score == 0
    assert any("`token_ppo_loss` returned a loss with no gradient" in m for m in messages)
    # per_token_rewards is the answer key's with a hunt that finds nothing: full marks
    assert cells["per_token_rewards"][0] == cells["per_token_rewards"][1]


# --- the relay itself, with real workers ----------------------------------------------------

EXITS_ON_THIRD_CALL = '''
import os
_calls = [0]

def reinforce_loss(log_probs, rewards):
    _calls[0] += 1
    if _calls[0] == 3:
        os._exit(3)
    return -(log_probs * torch.as_tensor(rewards, dtype=log_probs.dtype)).mean()
'''


def test_a_student_worker_that_dies_mid_run_stops_only_that_run():
    """The student's worker ends mid-run: the run raises WorkerDied (the student's message), the
    trusted trainer is stopped, and the same trusted worker trains the next submission."""
    from autograder.config import load_settings
    from autograder.grade.submission import reference_cells
    from autograder.hints import mutant_cells
    from autograder.proxy import NotDefined, StudentProxy, WorkerDied
    from autograder.sandbox.client import Worker
    from autograder.plugins import module_of

    T = module_of("ppo", "training")

    settings = load_settings(REPO_ROOT)
    asg = load_assignment("ppo", REPO_ROOT)
    key = reference_cells(asg)
    params = dict(T.bandit_params(7, T.kit_source(asg, ["BanditPolicy"])), episodes=20)
    params["check"] = T.check_params(asg, 7, {"reinforce_loss": 20})
    workers = [Worker(settings.limits, backend="trusted", device="cpu", trusted=True)]
    try:
        trusted = workers[0]
        trusted.start()
        trusted.load(key + mutant_cells(asg))

        def student(cells):
            w = Worker(settings.limits, backend="unsafe", device="cpu")
            workers.append(w)
            w.start()
            w.load(cells)
            return StudentProxy(w)

        dying = student(key + [{"id": "exits", "source": EXITS_ON_THIRD_CALL}])
        with pytest.raises(WorkerDied):
            StudentProxy(trusted).train(T.trainer("bandit"), dying, **params)
        missing = student([c for c in key if "def reinforce_loss" not in c["source"]])
        with pytest.raises(NotDefined):
            StudentProxy(trusted).train(T.trainer("bandit"), missing, **params)
        out = StudentProxy(trusted).train(T.trainer("bandit"), student(key), **params)
        assert "error" not in out and out["round_trips"] == 20
    finally:
        for w in workers:
            w.close()


def test_a_sandboxed_student_worker_has_no_trainer_to_run():
    """Under bubblewrap the student's worker has neither the assignment's folder nor the
    loader: a ``train`` request naming a real trainer fails there (the proxy never sends one)."""
    from autograder.config import load_settings
    from autograder.plugins import module_of
    from autograder.sandbox.backends import BackendUnavailable, resolve_backend
    from autograder.sandbox.client import Worker

    try:
        backend = resolve_backend("bwrap")
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    trainer = module_of("ppo", "training").trainer("bandit")
    worker = Worker(load_settings(REPO_ROOT).limits, backend=backend, device="cpu")
    try:
        worker.start()
        reply = worker.request({"op": "train", "trainer": trainer.request(), "params": {}}, 60)
    finally:
        worker.close()
    assert not reply.get("ok") and "need" not in reply, reply
    assert reply["error"]["type"] in ("ImportError", "ModuleNotFoundError"), reply
