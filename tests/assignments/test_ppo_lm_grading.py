"""Grading of Part 2 (``ppo_lm``): the answer key grades full, the release grades 0 with one clear
message per question, correct variants grade full, and every mutant of
``assignments/ppo_lm/mutants.py`` loses points on its own question and on no other unit
question. Plus the pieces of the training test: the parent's numpy model, the weights reader,
the harness's optimizer and frozen-reference guard, the isolated ``token_ppo_loss`` call and the
calibrated thresholds.

Speed: the notebooks are graded in one process with one shared worker pool
(``assignments/ppo_lm/corpus.py``); the answer key and the release go through the real
command line. The training harness runs once per graded notebook. A unit mutant's own question
and its forbidden questions exclude ``lm_ppo_training``, so its notebook is graded with a
training run of ``corpus.SHORT_ITERATIONS`` iterations; the training question's mutant, the
correct variants, the answer key and ``rewards_kl_sign_flipped`` (to show the training test
catching a mistake) train at full length.

The mutant and variant corpus (the ``graded`` fixture: about a minute on two cores, training
runs included) is marked slow (``make test-all``); ``make test`` grades a sample of the mutants,
every kind of check, and every group of correct variants on the function questions in-process
(``tests/sandbox/test_fake_worker.py``), and the answer key and the release here.
"""
from __future__ import annotations


import numpy as np
import pytest

from autograder import REPO_ROOT
from autograder.plugins import module_of
from mutant_catalogue import (check_every_mutant_applies_exactly_once,
                              check_hints_are_plain_words,
                              check_mutant_cells_define_only_the_renamed_function)

C = module_of("ppo_lm", "corpus")
T = module_of("ppo_lm", "training")
_mutants = module_of("ppo_lm", "mutants")
CORRECT_VARIANTS, MUTANTS, QUESTION = _mutants.CORRECT_VARIANTS, _mutants.MUTANTS, _mutants.QUESTION

ASSIGNMENT = "ppo_lm"
POINTS = {"per_token_rewards": 3, "masked_mean": 2, "compute_token_gae": 4,
          "token_ppo_loss": 4, "lm_ppo_training": 3}
FULL_TRAINING_MUTANTS = {"rewards_kl_sign_flipped"}
# The mistakes the assignment's grading must catch, and the mutants that realise each.
CATALOGUE = {
    "KL sign flipped": ["rewards_kl_sign_flipped"],
    "score at the last padded position instead of the last real token":
        ["rewards_score_at_last_padded_position"],
    "mean over padding": ["mean_includes_padding", "mean_divides_by_all_tokens",
                          "ppo_policy_mean_over_padding"],
    "GAE leaking across rows": ["gae_leaks_across_rows"],
    "GAE leaking through padding": ["gae_leaks_through_padding", "gae_padding_not_zeroed"],
    "unmasked value loss": ["ppo_unmasked_value_loss"],
    "kl_coef missing": ["rewards_kl_coef_missing"],
    "score at the first token": ["rewards_score_at_first_token"],
    "gamma / lam misuse": ["gae_lambda_without_gamma", "gae_lambda_ignored",
                           "gae_lambda_in_delta"],
    "no clipping": ["ppo_no_clipping"],
    "sum instead of mean": ["mean_sum_not_mean", "ppo_sum_not_mean"],
}


@pytest.fixture(scope="module")
def graded(assignment, tmp_path_factory):
    """Every mutant and every group of correct variants graded in this process (one pool)."""
    directory = tmp_path_factory.mktemp("ppo_lm_corpus")
    records = C.write_corpus(assignment, directory, MUTANTS, C.variant_groups(CORRECT_VARIANTS),
                             short_training=True)
    for record, _ in records:
        if record.name in FULL_TRAINING_MUTANTS:
            record.short_training = False
    results = C.grade_api(records, directory)
    print("\n" + C.table(results))
    return {g.name: g for g in results}


@pytest.fixture(scope="module")
def answer_key(assignment, tmp_path_factory):
    """The source notebook, graded through the command line."""
    directory = tmp_path_factory.mktemp("ppo_lm_key")
    return C.grade_cli(C.MutantGrade("answer_key", "answer_key"), assignment.source_path, directory)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The committed release notebook (the student's starting point), through the command line."""
    directory = tmp_path_factory.mktemp("ppo_lm_release")
    path = REPO_ROOT / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    return C.grade_cli(C.MutantGrade("release", "release"), path, directory)


# --- the catalogue -------------------------------------------------------------------------------

def test_catalogue_is_covered():
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names)) >= 20
    listed = [n for group in CATALOGUE.values() for n in group]
    assert set(listed) <= set(names), set(listed) - set(names)
    assert {m.function for m in MUTANTS} == set(POINTS) - {"lm_ppo_training"}
    assert set(QUESTION) <= set(names) and set(QUESTION.values()) <= set(POINTS)


def test_hints_are_plain_words():
    check_hints_are_plain_words(MUTANTS)


def test_every_mutant_applies_exactly_once(assignment):
    check_every_mutant_applies_exactly_once(assignment, MUTANTS, whole_cell_allowed=True)


def test_mutant_cells_define_only_the_renamed_function(assignment):
    check_mutant_cells_define_only_the_renamed_function(assignment, MUTANTS, "import torch\n")


def test_there_are_enough_correct_variants():
    assert len(CORRECT_VARIANTS) >= 4
    assert {v.function for v in CORRECT_VARIANTS} == set(POINTS) - {"lm_ppo_training"}
    assert len({v.name for v in CORRECT_VARIANTS}) == len(CORRECT_VARIANTS)


# --- the answer key and the release, through the command line ----------------------------------

@pytest.mark.slow   # end to end: make test-all
def test_the_answer_key_grades_full(answer_key):
    g, proc = answer_key
    assert proc.returncode == 0
    assert not g.flags, g.flags
    assert g.score == pytest.approx(g.max_score) == pytest.approx(sum(POINTS.values()))
    totals = g.result.details.grade_cells
    assert {c: t["max_score"] for c, t in totals.items()} == pytest.approx(POINTS)
    assert not any(p > 1e-9 for p in g.lost.values()), g.outputs


def test_the_release_grades_zero_with_one_message_per_question(release):
    g, proc = release
    assert proc.returncode == 0
    assert g.score == 0.0 and g.max_score == sum(POINTS.values())
    assert not g.grader_errors, g.grader_errors
    for cell, points in POINTS.items():
        assert g.lost[cell] == pytest.approx(points, abs=1e-4), cell
        messages = {t.output for t in g.result.tests if t.grade_cell == cell}
        assert len(messages) == 1, (cell, messages)   # every test of the question says the same
        [message] = messages
        assert "NotImplementedError" in message, message
        if cell != "lm_ppo_training":
            assert message.startswith(f"{cell} raised NotImplementedError"), message
        else:
            assert message.startswith("RLHF training with your functions stopped: `"), message
    summary = g.result.output.splitlines()
    assert [line.split(":")[0] for line in summary[:len(POINTS)]] == list(POINTS)


# --- correct variants and mutants ----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("group", [" + ".join(v.name for v in g)
                                   for g in C.variant_groups(CORRECT_VARIANTS)])
def test_correct_variants_get_full_marks(graded, group):
    g = graded[group.replace(" + ", "+")]
    assert not g.short_training
    assert not g.grader_errors, g.grader_errors
    lost = {c: p for c, p in g.lost.items() if p > 1e-9}
    assert not lost, f"{group} loses {lost}: {g.outputs}"


@pytest.mark.slow
@pytest.mark.parametrize("name", [m.name for m in MUTANTS])
def test_mutant_loses_points_on_its_own_question_only(graded, name):
    g = graded[name]
    assert not g.grader_errors, g.grader_errors
    assert g.killed, f"{name} keeps full marks on {g.question}"
    assert not g.collateral, f"{name} loses points on unrelated questions {g.collateral}"
    if g.question == "lm_ppo_training":
        assert sum(p for c, p in g.lost.items() if c != g.question) == 0.0
    else:
        assert g.hint_shown or g.numeric_shown, g.outputs.get(g.question)


@pytest.mark.slow
def test_the_kill_rate_is_complete(graded):
    mutants = [g for g in graded.values() if g.kind == "mutant"]
    assert len(mutants) == len(MUTANTS)
    assert all(g.killed for g in mutants)
    unit = [g for g in mutants if g.question != "lm_ppo_training"]
    assert sum(g.hint_shown for g in unit) >= 0.9 * len(unit)


@pytest.mark.slow
def test_training_catches_the_kl_sign_flip(graded):
    """Trained at full length, the KL sign flip also fails the training question: the policy
    drifts far from the pretrained model."""
    g = graded["rewards_kl_sign_flipped"]
    assert not g.short_training
    assert g.lost["lm_ppo_training"] == pytest.approx(POINTS["lm_ppo_training"])
    # first or second of the problems named (the first is capitalised)
    assert "the kl must stay at most" in g.outputs["lm_ppo_training"].lower()


# --- the pieces of the training test -------------------------------------------------------------

def test_weights_reader_matches_torch_and_refuses_other_code(assignment, tmp_path):
    import torch

    arrays = T.pretrained_weights(assignment)
    state = torch.load(T.weights_path(assignment), map_location="cpu", weights_only=True)
    assert set(arrays) == set(state)
    for k, v in state.items():
        assert arrays[k].dtype == np.float32 and np.array_equal(arrays[k], v.numpy()), k
    bad = tmp_path / "bad.pt"
    torch.save({"w": torch.zeros(2), "f": torch.nn.Linear(1, 1)}, bad)
    with pytest.raises(Exception, match="not allowed"):
        T.read_torch_state_dict(bad)


def test_numpy_model_matches_the_notebook_model(assignment):
    torch = pytest.importorskip("torch")
    ns: dict = {}
    exec(T.kit_source(assignment), ns)
    model = ns["TinyLM"]()
    model.load_state_dict({k: torch.from_numpy(v.copy())
                           for k, v in T.pretrained_weights(assignment).items()})
    kit = T.eval_kit(assignment)
    completion, mask = ns["generate"](model, kit.prompts, kit.max_new_tokens,
                                      torch.Generator().manual_seed(0))
    with torch.no_grad():
        logprobs, _ = ns["token_logprobs"](model, kit.prompts, completion)
    lm = T.NumpyLM(T.pretrained_weights(assignment))
    for b, prompt in enumerate(kit.prompts):
        h = lm.read(kit.encode(kit.eos + prompt))
        n = int(mask[b].sum())
        for t in range(n):
            token = int(completion[b, t])
            assert lm.log_probs(h)[0, token] == pytest.approx(float(logprobs[b, t]), abs=1e-4)
            h = lm.step(np.asarray([token]), h)


def test_evaluation_of_the_pretrained_model_is_neutral(assignment):
    w = T.pretrained_weights(assignment)
    r = T.evaluate(w, w, 1234, T.eval_kit(assignment))
    assert r["finite"] and r["rise"] == 0.0 and r["kl"] == 0.0
    assert -0.2 < r["score_before"] < 0.2       # the corpus is a third each pos / neu / neg
    again = T.evaluate(w, w, 1234, T.eval_kit(assignment))
    assert again["score_before"] == r["score_before"]


def test_harness_adam_trains_like_torch_adam(assignment):
    """The trusted trainer (its Adam, the student's functions relayed through the worker's
    request handler, their gradients pushed back) and the notebook's loop run directly with
    torch's own Adam give the same history and weights (two short iterations)."""
    torch = pytest.importorskip("torch")
    from autograder.calibration import reference_namespace
    from autograder.harness import local

    lm = module_of("ppo_lm", "trainers.lm")

    ns = reference_namespace(assignment)
    params = dict(T.lm_params(99, assignment), iterations=2, batch_size=16)
    threads = torch.get_num_threads()
    try:
        ours = lm.train(local.local_student(ns, ns), **params)
        kit: dict = {}
        exec(params["kit_source"], kit)
        kit["load_pretrained"] = lambda path=None, device="cpu": _loaded(kit, params["weights"])
        torch.manual_seed(params["seed"])
        models = kit["make_rlhf_models"](None, "cpu", seed=params["value_seed"])
        history = kit["rlhf_train"](*models, **{n: ns[n] for n in lm.FUNCTIONS}, iterations=2,
                                    batch_size=16, seed=params["seed"], device="cpu",
                                    log_every=0)
    finally:
        torch.set_num_threads(threads)
    assert set(ours["history"]) == set(history)
    for k, v in history.items():
        assert ours["history"][k] == pytest.approx(v, abs=1e-6), k
    for k, v in models[0].state_dict().items():
        assert np.allclose(ours["policy"][k], v.numpy(), atol=1e-6), k


def _loaded(kit, weights):
    import torch

    model = kit["TinyLM"]()
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    return model


def test_isolated_call_uses_the_kit_masked_mean_and_restores_the_student_one():
    pytest.importorskip("torch")
    from autograder.harness import isolated

    ns: dict = {}
    exec("import torch\n"
         "def masked_mean(x, mask):\n    return x.sum() * 0 + 123.0\n"
         "def token_ppo_loss(a, b, c, d, e, mask, epsilon=0.2, vf_coeff=0.5):\n"
         "    p = masked_mean(a, mask)\n    return p, p, p\n", ns)
    student_mean = ns["masked_mean"]
    x = np.asarray([[1.0, 2.0, 50.0]], dtype=np.float32)
    mask = np.asarray([[1.0, 1.0, 0.0]], dtype=np.float32)
    kit_mean = module_of("ppo_lm", "hidden_inputs").KIT_MASKED_MEAN
    out = isolated.run(ns, task="call", function="token_ppo_loss",
                       args=[x, x, x, x, x, mask], names=list("abcde") + ["mask"],
                       tensors=[True] * 6, grad=[True, False, False, False, False, False],
                       backward_output=0, substitutes={"masked_mean": kit_mean})
    assert float(out["value"][1]) == pytest.approx(1.5)       # the kit's mean, not 123
    assert out["grads"]["a"].tolist() == [[0.5, 0.5, 0.0]]
    assert out["meta"][0]["grad_fn"] and not any(out["mutated"].values())
    assert ns["masked_mean"] is student_mean


def test_thresholds_come_from_calibration(assignment):
    calibration = module_of("ppo_lm", "calibration")

    record = T.load_thresholds()
    assert record["fingerprint"] == calibration.fingerprint(assignment), \
        "the harness, the loop, the weights or the answer key changed: run `make calibrate`"
    th = record["thresholds"]
    assert th["reward_rise_min"] == pytest.approx(calibration.rise_rule(
        record["reference"]["rise"]["min"]))
    assert th["kl_max"] == pytest.approx(calibration.kl_rule(record["reference"]["kl"]["max"]))
    assert record["false_fails_at_threshold"] == 0 and record["seeds"] >= 50
    for name, control in record["negative_controls"].items():
        assert control["pass"] == 0, name
