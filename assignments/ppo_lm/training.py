"""The RLHF training test's helpers, used in the trusted parent (numpy only, no torch).

The trusted worker trains (``trainers/lm.py`` of this folder: the notebook's own ``rlhf_train``,
each call of the student's four functions relayed to the student's worker as data) and returns the
trained policy's weights and the loop's history. The models never enter the student's worker.
The parent scores the trained policy itself, with its own numpy implementation of the
notebook's GRU language model, against the pretrained weights it sent:

- **reward rise**: ``EVAL_SAMPLES`` completions are sampled from the trained policy and from the
  pretrained model (the weights the parent sent), with the *same* uniform random numbers drawn
  from the hidden seed, for the notebook's prompts taken in turn; each completion is scored with
  the notebook's ``sentiment_score``. The rise is the difference of the two mean scores.
- **KL**: for the trained policy's completions, the mean over completions of
  ``sum_t (log pi(a_t|s_t) - log pi_ref(a_t|s_t))`` over the real tokens (the loop's own KL
  estimate, in nats), the reference's log-probabilities computed on the same tokens.

``assignments/ppo_lm/calibration.py`` uses the very same functions, so the calibrated
pass marks measure exactly what the suite measures.
"""
from __future__ import annotations

import ast
import collections
import contextlib
import ctypes
import pickle
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from autograder import training_support
from autograder.proxy import Trainer
from autograder.training_support import code_cells as _code_cells
from autograder.training_support import generator as _generator
from autograder.training_support import torch_seed

FOLDER = Path(__file__).resolve().parent
ASSIGNMENT = FOLDER.name
THRESHOLDS_FILE = training_support.thresholds_file(FOLDER)
# The source notebook's cells that define the loop (plain definitions, no IPython syntax).
DEFINITION_CELLS = ("corpus", "lm_model", "sampling", "reward_fn", "rlhf_loop")
WEIGHTS_NAME = "tiny_lm.pt"
ITERATIONS = 30             # PPO iterations of the harness (the notebook runs 40)
BATCH_SIZE = 64             # completions per iteration (the notebook's default)
EVAL_SAMPLES = 512          # completions the parent samples from each model to score it
EVAL_SALT = 0xE7A1
TRAIN_SALT = 0x5EED
VALUE_SALT = 0x7A1


def load_thresholds() -> dict:
    """The calibrated pass marks (written by ``make calibrate``; docs/calibration.md)."""
    return training_support.load_thresholds(FOLDER)


def trainer(name: str = "lm"):
    """The trusted trainer ``trainers/<name>.py`` of this folder (``StudentProxy.train``)."""
    return Trainer(ASSIGNMENT, FOLDER, f"trainers/{name}.py")


# --- what the worker gets ------------------------------------------------------------------------

def kit_source(assignment) -> str:
    """The source notebook's definition cells (``DEFINITION_CELLS``), as one block of code for
    the harness: plain definitions only, nothing runs on import."""
    return training_support.kit_cells(assignment, DEFINITION_CELLS)


def weights_path(assignment) -> Path:
    return Path(assignment.source_path).with_name(WEIGHTS_NAME)


def pretrained_weights(assignment) -> dict[str, np.ndarray]:
    """The pretrained model's state dict as float32 arrays, read without torch."""
    path = weights_path(assignment)
    stat = path.stat()
    return _read_state_dict(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _read_state_dict(path: str, mtime_ns: int, size: int) -> dict[str, np.ndarray]:
    out = read_torch_state_dict(path)
    for v in out.values():
        v.setflags(write=False)
    return out


_STORAGE_DTYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
                   "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2",
                   "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?"}


class _StorageType:
    def __init__(self, dtype: str):
        self.dtype = np.dtype(dtype)


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None,
                    metadata=None):
    item = storage.dtype.itemsize
    arr = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                          strides=tuple(s * item for s in stride))
    return np.array(arr, copy=True)


def read_torch_state_dict(path) -> dict[str, np.ndarray]:
    """A state dict saved by ``torch.save`` (zip format) as numpy arrays, without torch.

    The pickle is read with an unpickler that knows only the few names a state dict of plain
    tensors uses; anything else is refused (no code from the file is ever run)."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        [pkl] = [n for n in names if n.endswith("/data.pkl")]
        prefix = pkl[: -len("data.pkl")]
        order = z.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names \
            else "little"
        if order != "little":
            raise ValueError(f"{path}: byte order {order} is not supported")

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                    return _rebuild_tensor
                if (module, name) == ("collections", "OrderedDict"):
                    return collections.OrderedDict
                if module == "torch" and name in _STORAGE_DTYPES:
                    return _StorageType(_STORAGE_DTYPES[name])
                raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a state dict")

            def persistent_load(self, pid):
                kind, storage_type, key, _location, numel = pid
                if kind != "storage" or not isinstance(storage_type, _StorageType):
                    raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
                raw = z.read(f"{prefix}data/{key}")
                return np.frombuffer(raw, dtype=storage_type.dtype, count=int(numel))

        import io
        state = Unpickler(io.BytesIO(z.read(pkl))).load()
    return {str(k): np.asarray(v) for k, v in state.items()}


def lm_params(hidden_seed: int, assignment, device: str = "cpu") -> dict:
    """The trainer's parameters for one student: the notebook's loop, ``ITERATIONS``
    iterations, seeds from the hidden seed, the pretrained weights as plain arrays (they go to
    the trusted worker only)."""
    return {"kit_source": kit_source(assignment),
            "weights": dict(pretrained_weights(assignment)), "iterations": ITERATIONS,
            "batch_size": BATCH_SIZE, "seed": torch_seed(hidden_seed ^ TRAIN_SALT),
            "value_seed": torch_seed(hidden_seed ^ VALUE_SALT), "device": device}


def calls_per_run(iterations: int, ppo_epochs: int = 4, minibatches: int = 2) -> dict:
    """How often the notebook's loop calls each student function in one run."""
    return {"per_token_rewards": iterations, "compute_token_gae": iterations,
            "masked_mean": 2 * iterations, "token_ppo_loss": iterations * ppo_epochs * minibatches}


def check_params(assignment, hidden_seed: int, iterations: int) -> dict:
    """The trusted trainer's check of the student's replies (``relay.Student``)."""
    return training_support.check_params(assignment, hidden_seed, calls_per_run(iterations))


# --- the parent's own evaluation -----------------------------------------------------------------

class EvalKit:
    """What the evaluation needs from the source notebook: the vocabulary, the prompts, the
    length limit and the reward. ``corpus`` and ``reward_fn`` are plain Python (no torch); the
    prompts and the length limit are literals of the ``sampling`` cell."""

    def __init__(self, assignment):
        cells = _code_cells(assignment)
        ns: dict = {"__name__": "eval_kit"}
        for cell_id in ("corpus", "reward_fn"):
            exec(compile(cells[cell_id], f"<cell {cell_id}>", "exec"), ns)
        literals = {}
        for node in ast.parse(cells["sampling"]).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                    isinstance(node.targets[0], ast.Name):
                try:
                    literals[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    pass
        self.vocab: str = ns["VOCAB"]
        self.eos_id: int = ns["EOS_ID"]
        self.eos: str = ns["EOS"]
        self.encode = ns["encode"]
        self.decode = ns["decode"]
        self.sentiment_score = ns["sentiment_score"]
        self.prompts: list[str] = list(literals["PROMPTS"])
        self.max_new_tokens: int = int(literals["MAX_NEW_TOKENS"])


_KITS: dict = {}


def eval_kit(assignment) -> EvalKit:
    key = (str(assignment.source_path), assignment.cells)
    if key not in _KITS:
        _KITS.clear()
        _KITS[key] = EvalKit(assignment)
    return _KITS[key]


class NumpyLM:
    """The notebook's TinyLM (embedding -> one GRU layer -> linear head) in numpy (float32,
    like the model itself; ``tests/assignments/test_ppo_lm_grading.py`` checks it against the
    torch model)."""

    def __init__(self, weights: dict):
        w = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
        self.embed = w["embed.weight"]
        self.w_ih, self.w_hh = w["gru.weight_ih_l0"].T.copy(), w["gru.weight_hh_l0"].T.copy()
        self.b_ih, self.b_hh = w["gru.bias_ih_l0"], w["gru.bias_hh_l0"]
        self.w_out, self.b_out = w["head.weight"].T.copy(), w["head.bias"]
        self.hidden = self.w_hh.shape[0]
        # the input half of every step depends on the token only: one row per token id
        self.token_gates = self.embed @ self.w_ih + self.b_ih

    def finite(self) -> bool:
        return all(np.all(np.isfinite(a)) for a in (self.embed, self.w_ih, self.w_hh, self.b_ih,
                                                     self.b_hh, self.w_out, self.b_out))

    def step(self, tokens, h):
        """One GRU step (PyTorch's gate order r, z, n) on token ids (B,) and state (B, H)."""
        H = self.hidden
        gi = self.token_gates[tokens]
        gh = h @ self.w_hh + self.b_hh
        r = _sigmoid(gi[:, :H] + gh[:, :H])
        z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        return n + z * (h - n)

    def log_probs(self, h):
        logits = (h @ self.w_out + self.b_out).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def read(self, ids: list[int]):
        """The state after reading ``ids`` from a zero state, shape (1, H)."""
        h = np.zeros((1, self.hidden), dtype=np.float32)
        for i in ids:
            h = self.step(np.asarray([i]), h)
        return h


def _sigmoid(x):
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def rollout(sampler: NumpyLM, other: NumpyLM | None, kit: EvalKit, prompts: list[str],
            uniforms: np.ndarray) -> dict:
    """Sample one completion per prompt from ``sampler`` like the notebook's ``generate``
    (a row stops at its end token, which is a real token), with the given uniform numbers
    (B, max_new_tokens) for inverse-CDF sampling. Returns the completions' texts and scores,
    the mask, and sum_t (log p_sampler - log p_other) per row over the real tokens (0 without
    ``other``). Only the rows still running are computed at each step."""
    B = len(prompts)
    states = {}
    for p in set(prompts):
        ids = kit.encode(kit.eos + p)
        states[p] = (sampler.read(ids), other.read(ids) if other is not None else None)
    h_s = np.concatenate([states[p][0] for p in prompts])
    h_o = np.concatenate([states[p][1] for p in prompts]) if other is not None else None
    tokens = np.full((B, kit.max_new_tokens), kit.eos_id, dtype=np.int64)
    mask = np.zeros((B, kit.max_new_tokens), dtype=bool)
    log_ratio = np.zeros(B)
    active = np.arange(B)              # the rows that have not written their end token yet
    steps = 0
    for t in range(kit.max_new_tokens):
        steps = t + 1
        lp_s = sampler.log_probs(h_s)
        cdf = np.cumsum(np.exp(lp_s), axis=1)
        tok = np.minimum((cdf < uniforms[active, t:t + 1] * cdf[:, -1:]).sum(axis=1),
                         lp_s.shape[1] - 1)
        rows = np.arange(len(active))
        if other is not None:
            lp_o = other.log_probs(h_o)
            log_ratio[active] += lp_s[rows, tok] - lp_o[rows, tok]
        tokens[active, t] = tok
        mask[active, t] = True
        going = tok != kit.eos_id
        if not going.any():
            break
        active, tok = active[going], tok[going]
        h_s = sampler.step(tok, h_s[going])
        if other is not None:
            h_o = other.step(tok, h_o[going])
    tokens, mask = tokens[:, :steps], mask[:, :steps]
    texts = []
    for ids, m in zip(tokens.tolist(), mask.tolist()):
        ids = ids[:int(sum(m))]
        if ids and ids[-1] == kit.eos_id:
            ids = ids[:-1]
        texts.append(kit.decode(ids))
    scores = np.asarray([kit.sentiment_score(s) for s in texts], dtype=np.float64)
    return {"texts": texts, "scores": scores, "mask": mask, "log_ratio": log_ratio,
            "tokens": tokens}


@contextlib.contextmanager
def single_thread_blas():
    """OpenBLAS on one thread for this thread, while the block runs. The evaluation's matrices
    are small: on a busy machine several BLAS threads make it several times slower. A no-op
    where numpy's BLAS is not OpenBLAS."""
    setter = _openblas_local_setter()
    previous = None
    if setter is not None:
        try:
            previous = setter(1)
        except Exception:
            setter = None
    try:
        yield
    finally:
        if setter is not None and previous is not None and previous > 0:
            setter(previous)


@lru_cache(maxsize=1)
def _openblas_local_setter():
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps
                     if len(line.split()) >= 6 and "openblas" in line.split()[-1].lower()}
        for path in sorted(paths):
            if not path.startswith("/"):
                continue
            lib = ctypes.CDLL(path)
            fn = getattr(lib, "openblas_set_num_threads_local", None)
            if fn is not None:
                fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
                return fn
    except Exception:
        return None
    return None


def evaluate(policy_weights: dict, reference_weights: dict, hidden_seed: int, kit: EvalKit,
             samples: int = EVAL_SAMPLES) -> dict:
    """Score the trained policy against the pretrained model (see the module docstring)."""
    with single_thread_blas():
        return _evaluate(policy_weights, reference_weights, hidden_seed, kit, samples)


def _evaluate(policy_weights, reference_weights, hidden_seed, kit, samples) -> dict:
    policy = NumpyLM(policy_weights)
    reference = NumpyLM(reference_weights)
    if not policy.finite():
        return {"finite": False, "rise": float("nan"), "kl": float("nan"),
                "score_before": float("nan"), "score_after": float("nan"), "length": 0.0}
    prompts = [kit.prompts[i % len(kit.prompts)] for i in range(samples)]
    uniforms = _generator(hidden_seed ^ EVAL_SALT).random((samples, kit.max_new_tokens))
    before = rollout(reference, None, kit, prompts, uniforms)
    with np.errstate(over="ignore", invalid="ignore"):
        after = rollout(policy, reference, kit, prompts, uniforms)
    return {"finite": bool(np.isfinite(after["log_ratio"]).all()),
            "score_before": float(before["scores"].mean()),
            "score_after": float(after["scores"].mean()),
            "rise": float(after["scores"].mean() - before["scores"].mean()),
            "kl": float(after["log_ratio"].mean()),
            "length": float(after["mask"].sum(axis=1).mean()),
            "examples": [prompts[i] + after["texts"][i] for i in range(3)]}
