"""The training harnesses: they learn with the answer key, fail with a sign-flipped loss, use
the notebook's own classes whatever the submission defines, and the batched bandit runs do not
influence each other. The harnesses run in this process here (the answer key is trusted code);
``tests/test_mutants.py`` runs them through the sandboxed worker."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from autograder import REPO_ROOT  # noqa: E402
from autograder.assignments import load_assignment  # noqa: E402
from autograder.calibrate import SIGN_FLIPPED, reference_namespace, with_override  # noqa: E402
from autograder.harness import bandit, contextual  # noqa: E402
from autograder.suites.ppo import training as T  # noqa: E402

SEED = 20261123


@pytest.fixture(scope="module")
def assignment():
    return load_assignment("ppo", REPO_ROOT)


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


def bandit_score(ns, kit, seed, **overrides):
    params = {**T.bandit_params(seed, kit), **overrides}
    out = bandit.run(ns, **params)
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
    a = bandit.run(reference, **params)["logits"]
    b = bandit.run(reference, **{**params, "arm_means": changed})["logits"]
    assert not np.allclose(a[0], b[0])
    np.testing.assert_allclose(a[1:], b[1:], rtol=0, atol=1e-6)


def test_batch_size_scaling_does_not_matter(reference, bandit_kit):
    """A loss R times larger (a sum over the R bandits) trains the same logits: Adam is
    invariant to the gradient's scale, so averaging over the batch does not slow any run."""
    summed = with_override(reference, "def reinforce_loss(log_probs, rewards):\n"
                                      "    return -(log_probs * rewards).sum()\n")
    params = T.bandit_params(SEED, bandit_kit, runs=8)
    a = bandit.run(reference, **params)["logits"]
    b = bandit.run(summed, **params)["logits"]
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
    out = bandit.run(as_float, **T.bandit_params(SEED, bandit_kit))
    assert "not a tensor" in out["error"]
    raises = with_override(reference, "def reinforce_loss(log_probs, rewards):\n"
                                      "    raise ValueError('nope')\n")
    out = bandit.run(raises, **T.bandit_params(SEED, bandit_kit))
    assert "ValueError: nope" in out["error"]


def ppo_score(ns, kit, seed, **overrides):
    params = {**T.contextual_params(seed, kit), **overrides}
    out = contextual.run(ns, **params)
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
