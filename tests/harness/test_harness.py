"""The trusted trainers: they learn with the answer key, fail with a sign-flipped loss, use
the notebook's own classes whatever the submission defines, and the batched bandit runs do not
influence each other. The trainers run in this process here, the "student" functions served by
the worker's own request handler (``local.local_student``: the answer key is trusted code);
``tests/assignments/test_mutants.py`` and ``tests/harness/test_trusted_training.py`` run them
through the workers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autograder.calibration import reference_namespace, with_override
from autograder.harness import HarnessStop, local, relay
from autograder.plugins import module_of

T = module_of("ppo", "training")
bandit = module_of("ppo", "trainers.bandit")
contextual = module_of("ppo", "trainers.contextual")
SIGN_FLIPPED = module_of("ppo", "calibration").SIGN_FLIPPED

SEED = 20261123


@pytest.fixture(scope="module")
def reference(assignment):
    return reference_namespace(assignment)


@pytest.fixture(scope="module")
def bandit_kit(assignment):
    return T.kit_source(assignment, ["BanditPolicy"])


@pytest.fixture(scope="module")
def ppo_kit(assignment):
    return T.kit_source(assignment, ["ContextualBandit", "PPOPolicy"])


@pytest.fixture(scope="module")
def thresholds():
    return T.load_thresholds()["thresholds"]


def run(trainer, ns, params, check=None):
    """One trusted run with the functions of ``ns``; replies checked against ``check``'s
    reference namespace when given (``(reference, check params)``)."""
    reference, check = check if check is not None else (None, None)
    try:
        return trainer.train(local.local_student(ns, reference, check), **params)
    except HarnessStop as stop:
        return {"error": str(stop)}


def bandit_score(ns, kit, seed, **overrides):
    params = {**T.bandit_params(seed, kit), **overrides}
    out = run(bandit, ns, params)
    assert "error" not in out, out
    return T.best_arm_probability(out["logits"], params["arm_means"]), out


def test_kit_source_is_the_notebooks_classes_only(bandit_kit, ppo_kit):
    assert "class BanditPolicy" in bandit_kit and "class SimpleBandit" not in bandit_kit
    assert "class ContextualBandit" in ppo_kit and "class PPOPolicy" in ppo_kit
    for kit in (bandit_kit, ppo_kit):
        assert "matplotlib" not in kit and "reinforce_loss" not in kit
        assert "compute_gae(" not in kit and "print(" not in kit


def test_bandit_learns_with_the_answer_key(reference, bandit_kit, thresholds):
    score, _ = bandit_score(reference, bandit_kit, SEED)
    assert score > thresholds["reinforce_best_arm_probability"]


def test_bandit_fails_with_a_sign_flipped_loss(reference, bandit_kit, thresholds):
    flipped = with_override(reference, SIGN_FLIPPED["reinforce_loss"])
    score, _ = bandit_score(flipped, bandit_kit, SEED)
    assert score < 0.05 < thresholds["reinforce_best_arm_probability"]


def test_bandit_arm_means_move_the_best_arm():
    means = T.bandit_arm_means(SEED)
    best = means.argmax(axis=1)
    assert len(set(best.tolist())) == 5          # every arm is the best one somewhere
    assert np.all(np.sort(means, axis=1)[:, -1] - np.sort(means, axis=1)[:, -2] > 0.19)


def test_batched_bandit_runs_do_not_couple(reference, bandit_kit):
    """Changing one bandit's arm means changes nothing in the other bandits of the batch: the
    batch mean only scales each run's gradient, and Adam normalises every logit on its own."""
    params = T.bandit_params(SEED, bandit_kit, runs=6)
    changed = [list(row) for row in params["arm_means"]]
    changed[0] = changed[0][::-1]
    a = run(bandit, reference, params)["logits"]
    b = run(bandit, reference, {**params, "arm_means": changed})["logits"]
    assert not np.allclose(a[0], b[0])
    np.testing.assert_allclose(a[1:], b[1:], rtol=0, atol=1e-6)


def test_batch_size_scaling_does_not_matter(reference, bandit_kit):
    """A loss R times larger (a sum over the R bandits) trains the same logits: Adam is
    invariant to the gradient's scale, so averaging over the batch does not slow any run."""
    summed = with_override(reference, "def reinforce_loss(log_probs, rewards):\n"
                                      "    return -(log_probs * rewards).sum()\n")
    params = T.bandit_params(SEED, bandit_kit, runs=8)
    a = run(bandit, reference, params)["logits"]
    b = run(bandit, summed, params)["logits"]
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_harness_ignores_the_submissions_classes(reference, bandit_kit):
    """A submission that redefines the given classes changes nothing."""
    hijacked = dict(reference, BanditPolicy=None, PPOPolicy=None, ContextualBandit=None)
    a, _ = bandit_score(reference, bandit_kit, SEED)
    b, _ = bandit_score(hijacked, bandit_kit, SEED)
    assert a == b


def test_bandit_reports_an_unusable_loss(reference, bandit_kit):
    as_float = with_override(reference, "def reinforce_loss(log_probs, rewards):\n"
                                        "    loss = -(log_probs * rewards).mean()\n"
                                        "    return float(loss.detach())\n")
    out = run(bandit, as_float, T.bandit_params(SEED, bandit_kit))
    assert "not a tensor" in out["error"] and "`reinforce_loss`" in out["error"]
    raises = with_override(reference, "def reinforce_loss(log_probs, rewards):\n"
                                      "    raise ValueError('nope')\n")
    out = run(bandit, raises, T.bandit_params(SEED, bandit_kit))
    assert "`reinforce_loss` raised ValueError: nope" in out["error"]


def ppo_score(ns, kit, seed, **overrides):
    params = {**T.contextual_params(seed, kit), **overrides}
    out = run(contextual, ns, params)
    assert "error" not in out, out
    return T.gap_closed(out["actor"], params["weights"], T.evaluation_states(seed))


def test_ppo_learns_with_the_answer_key(reference, ppo_kit, thresholds):
    result = ppo_score(reference, ppo_kit, SEED)
    assert result["gap_closed"] > thresholds["ppo_gap_closed"]
    assert result["random"] < result["trained"] <= result["optimal"]


def test_ppo_fails_with_a_sign_flipped_loss(reference, ppo_kit, thresholds):
    flipped = with_override(reference, SIGN_FLIPPED["ppo_combined_loss"])
    result = ppo_score(flipped, ppo_kit, SEED)
    assert result["gap_closed"] < 0 < thresholds["ppo_gap_closed"]


def test_ppo_reads_list_outputs_of_compute_gae(reference, ppo_kit):
    """A compute_gae that returns a list loses points on the type check only: training works."""
    as_list = dict(reference)
    gae = reference["compute_gae"]
    as_list["compute_gae"] = lambda r, v, gamma=0.99, lam=0.95: gae(r, v, gamma, lam).tolist()
    a = ppo_score(reference, ppo_kit, SEED, iterations=20)
    b = ppo_score(as_list, ppo_kit, SEED, iterations=20)
    assert a == b


def test_gap_closed_scale():
    """The parent's numpy evaluation: the optimal linear actor closes exactly 100% of the gap,
    its negation is worse than random, and a non-finite actor scores NaN."""
    weights = T.contextual_weights(SEED)
    states = T.evaluation_states(SEED, n=5000)
    best = [{"type": "linear", "weight": weights.T, "bias": np.zeros(5)}]
    worst = [{"type": "linear", "weight": -weights.T, "bias": np.zeros(5)}]
    assert T.gap_closed(best, weights, states)["gap_closed"] == pytest.approx(1.0)
    assert T.gap_closed(worst, weights, states)["gap_closed"] < -0.5
    broken = [{"type": "linear", "weight": weights.T * np.nan, "bias": np.zeros(5)}]
    assert np.isnan(T.gap_closed(broken, weights, states)["gap_closed"])


def test_best_arm_probability_scale():
    means = T.bandit_arm_means(SEED)
    sure = np.where(means == means.max(axis=1, keepdims=True), 0.0, -50.0)
    assert T.best_arm_probability(sure, means) == pytest.approx(1.0)
    assert T.best_arm_probability(np.zeros_like(means), means) == pytest.approx(0.2)
    assert np.isnan(T.best_arm_probability(np.zeros((3, 5)), means))


def test_thresholds_come_from_calibration():
    record = T.load_thresholds()
    assert record["seeds"] >= 200
    assert record["false_fails_at_threshold"] == {"reinforce": 0, "ppo": 0}
    for key, run in (("reinforce_best_arm_probability", "reinforce"),
                     ("ppo_gap_closed", "ppo")):
        assert record["thresholds"][key] < record["reference"][run]["min"]


def test_the_harness_adam_is_torchs_adam():
    """The harnesses' Adam (written out to spare every worker the import of torch._dynamo that
    constructing torch.optim.Adam triggers) gives exactly torch's parameters."""
    import copy

    from autograder.harness import Adam

    torch.manual_seed(0)
    for lr in (0.05, 3e-4):
        a = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))
        b = copy.deepcopy(a)
        steps = [(a, torch.optim.Adam(a.parameters(), lr=lr)), (b, Adam(b.parameters(), lr=lr))]
        for _ in range(100):
            x = torch.randn(64, 4)
            for model, optimizer in steps:
                loss = (model(x) ** 2).mean() - model(x)[:, 0].mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.equal(p, q)


# --- the trusted side checks what the student's worker sends back ------------------------------

BEST_ARM_SO_FAR = '''
_best = {}

def reinforce_loss(log_probs, rewards):
    """Statistics across calls: only the runs whose reward beats their best so far count."""
    rewards = torch.as_tensor(rewards, dtype=log_probs.dtype)
    key = len(rewards)
    best = _best.get(key, torch.full_like(rewards, -1e9))
    keep = (rewards >= best).to(rewards.dtype)
    _best[key] = torch.maximum(best, rewards)
    return -(log_probs * rewards * keep).mean()
'''


def bandit_check(assignment, seed=SEED):
    return T.check_params(assignment, seed, {"reinforce_loss": 500})


def test_a_loss_with_state_across_calls_fails_the_comparison(reference, bandit_kit, assignment):
    cheat = with_override(reference, BEST_ARM_SO_FAR)
    out = run(bandit, cheat, T.bandit_params(SEED, bandit_kit),
              (reference, bandit_check(assignment)))
    assert "`reinforce_loss` did not give the same result during training" in out["error"]
    # without the comparison the same loss trains, and better than chance: it is worth catching
    score, _ = bandit_score(cheat, bandit_kit, SEED)
    assert score > 0.5


def test_the_answer_key_and_a_catalogued_mistake_pass_the_comparison(reference, bandit_kit,
                                                                     assignment):
    params = T.bandit_params(SEED, bandit_kit)
    out = run(bandit, reference, params, (reference, bandit_check(assignment)))
    assert "error" not in out and out["checked"] >= 8
    assert out["round_trips"] == params["episodes"]
    summed = with_override(reference, "def reinforce_loss(log_probs, rewards):\n"
                                      "    return -(log_probs * rewards).sum()\n")
    assert "reinforce_sum" in {m.name for m in __import__("autograder.hints", fromlist=["x"])
                               .load_mutants(assignment)}
    out = run(bandit, summed, params, (reference, bandit_check(assignment)))
    assert "error" not in out


def test_switching_between_the_key_and_a_mistake_fails_the_comparison(reference, bandit_kit,
                                                                      assignment):
    """Each reply alone matches a candidate (the key or the sign-flipped mistake), but one
    function must be one candidate for the whole run: steering call by call does not pay."""
    switching = with_override(reference, '''
_calls = [0]

def reinforce_loss(log_probs, rewards):
    _calls[0] += 1
    rewards = torch.as_tensor(rewards, dtype=log_probs.dtype)
    sign = 1.0 if _calls[0] % 2 else -1.0
    return -sign * (log_probs * rewards).mean()
''')
    out = run(bandit, switching, T.bandit_params(SEED, bandit_kit),
              (reference, bandit_check(assignment)))
    assert "`reinforce_loss` did not give the same result during training" in out["error"]


def test_training_messages_name_the_function_and_the_cause(reference, ppo_kit, bandit_kit):
    params = T.contextual_params(SEED, ppo_kit, iterations=2)
    in_place = with_override(reference, '''
_key = ppo_combined_loss

def ppo_combined_loss(log_probs_new, log_probs_old, advantages, values, returns,
                      epsilon=0.2, vf_coeff=0.5):
    out = _key(log_probs_new, log_probs_old, advantages, values, returns, epsilon, vf_coeff)
    returns.sub_(values.detach())
    return out
''')
    out = run(contextual, in_place, params)
    assert "`ppo_combined_loss` changed one of its inputs in place (returns)" in out["error"]
    detached = with_override(reference, "def reinforce_loss(log_probs, rewards):\n"
                                        "    return -(log_probs * rewards).mean().detach()"
                                        ".requires_grad_()\n")
    out = run(bandit, detached, T.bandit_params(SEED, bandit_kit))
    assert "`reinforce_loss` returned a loss with no gradient" in out["error"]
    unreduced = with_override(reference, "def reinforce_loss(log_probs, rewards):\n"
                                         "    return -(log_probs * rewards)\n")
    out = run(bandit, unreduced, T.bandit_params(SEED, bandit_kit))
    assert "`reinforce_loss`" in out["error"] and "single number" in out["error"]
    for text in (out["error"],):
        assert "harness" not in text and "relay" not in text and "HarnessStop" not in text


def test_the_student_gets_only_each_calls_inputs(reference, bandit_kit, ppo_kit):
    """What goes to the student's worker: call and map requests of the student's functions,
    holding arrays of the batch's own shapes, never the arm means or the bandit's weights."""
    from autograder.sandbox import protocol

    sent = []
    ask = local.local_ask(reference)

    def spy(msg):
        sent.append(protocol.loads(protocol.dumps(msg)))
        return ask(msg)

    bparams = T.bandit_params(SEED, bandit_kit, runs=4)
    bandit.train(relay.Student(spy, None, seed=1), **{**bparams, "episodes": 20})
    cparams = T.contextual_params(SEED, ppo_kit, iterations=2)
    contextual.train(relay.Student(spy, None, seed=1), **cparams)
    secrets = [np.asarray(bparams["arm_means"], dtype=np.float32),
               np.asarray(cparams["weights"], dtype=np.float32)]
    arrays = []

    def collect(v):
        if isinstance(v, dict):
            for tag, body in v.items():
                if tag in ("$tensor", "$ndarray"):
                    arrays.append(protocol.payload_array(body))
                else:
                    collect(body)
        elif isinstance(v, list):
            for x in v:
                collect(x)

    for msg in sent:
        assert msg["op"] in ("call", "map")
        assert msg["fn"] in ("reinforce_loss", "compute_gae", "ppo_combined_loss")
        collect(msg)
    assert len(sent) == 20 + 2 + 2 * 4
    assert arrays and all(a.shape[0] in (4, 64) and a.ndim <= 2 for a in arrays)
    values = np.concatenate([a.reshape(-1).astype(np.float32) for a in arrays])
    for secret in secrets:
        assert not np.isin(secret.reshape(-1), values).any()


def test_batched_gae_is_the_per_episode_gae(reference):
    """One ``map`` request gives what one call per episode gives, with the trusted check on."""
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(64, 1)), rng.normal(size=(64, 2))
    values[:, 1] = 0.0
    student = relay.Student(local.local_ask(reference), reference, seed=3)
    got = student.map("compute_gae", [rewards, values], {"gamma": 0.99, "lam": 0.95})
    want = [np.asarray(reference["compute_gae"](r.tolist(), v.tolist(), 0.99, 0.95))
            for r, v in zip(rewards, values)]
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate(want).astype(np.float64))
    assert student.checked == {"compute_gae": 1} and student.round_trips == 1


def test_batched_gae_reads_any_sequence_and_names_a_failure(reference):
    """Lists, tensors and tuples of 0-dim tensors all read as the advantages; an exception in one
    episode stops training with the function named and the student's own line."""
    rng = np.random.default_rng(1)
    columns = [rng.normal(size=(8, 1)), np.c_[rng.normal(size=8), np.zeros(8)]]
    want = relay.Student(local.local_ask(reference), None, seed=0).map("compute_gae", columns)
    gae = reference["compute_gae"]
    for wrap in (lambda a: a.tolist(), lambda a: tuple(a.unbind()), lambda a: a.double()):
        ns = dict(reference, compute_gae=lambda r, v, gamma=0.99, lam=0.95, w=wrap:
                  w(gae(r, v, gamma, lam)))
        got = relay.Student(local.local_ask(ns), None, seed=0).map("compute_gae", columns)
        np.testing.assert_allclose(np.concatenate(got), np.concatenate(want), rtol=1e-6)
    broken = with_override(reference, "def compute_gae(rewards, values, gamma=0.99, lam=0.95):\n"
                                      "    return [1.0 / (values[0] > 10)]\n")
    with pytest.raises(HarnessStop, match="`compute_gae` raised ZeroDivisionError"):
        relay.Student(local.local_ask(broken), None, seed=0).map("compute_gae", columns)
