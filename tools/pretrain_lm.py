"""Pretrain the tiny character-level language model of Part 2 (`source/ppo_lm/ppo_lm.ipynb`).

One source of truth: the model class and the corpus generator are not copied here. They are
read from the source notebook's locked cells (grade ids ``corpus`` and ``lm_model``), whose code
is executed on its own, in one namespace. The weights go next to the notebook, where nbgrader's
``generate_assignment`` copies them into the release.

    .venv/bin/python tools/pretrain_lm.py                  # what `make pretrain` runs
    .venv/bin/python tools/pretrain_lm.py --steps 20 --sentences 500 --out /tmp/w.pt   # a quick run

The same arguments give the same weights, bit for bit: fixed seeds, one CPU thread,
deterministic algorithms.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "source" / "ppo_lm" / "ppo_lm.ipynb"
MODEL_CELLS = ("corpus", "lm_model")  # the grade ids of the cells that define the corpus and model


def cell_sources(notebook: Path, grade_ids) -> list[str]:
    """The code of the notebook's cells with these nbgrader grade ids, in the order asked."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    by_id = {}
    for cell in cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if cell["cell_type"] == "code" and grade_id:
            source = cell["source"]
            by_id[grade_id] = "".join(source) if isinstance(source, list) else source
    missing = [g for g in grade_ids if g not in by_id]
    if missing:
        raise SystemExit(f"{notebook}: no code cell with grade id {', '.join(missing)}")
    return [by_id[g] for g in grade_ids]


def load_definitions(notebook: Path = NOTEBOOK, grade_ids=MODEL_CELLS) -> dict:
    """Execute the cells' code in a fresh namespace and return it (TinyLM, make_corpus, ...)."""
    namespace = {"__name__": "ppo_lm_cells"}
    for grade_id, source in zip(grade_ids, cell_sources(notebook, grade_ids)):
        exec(compile(source, f"<{notebook.name}:{grade_id}>", "exec"), namespace)
    return namespace


def encode_corpus(ns: dict, sentences: list[str]):
    """(tokens, mask): (N, L) int64 rows "\\n sentence \\n" padded with EOS, and 1.0 on real
    tokens."""
    import torch

    rows = [ns["encode"](ns["EOS"] + s + ns["EOS"]) for s in sentences]
    length = max(map(len, rows))
    tokens = torch.full((len(rows), length), ns["EOS_ID"], dtype=torch.long)
    mask = torch.zeros(len(rows), length)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1.0
    return tokens, mask


def pretrain(*, steps: int, batch_size: int, lr: float, seed: int, sentences: int | None,
             notebook: Path = NOTEBOOK, log_every: int = 100):
    """Train a TinyLM from scratch on the notebook's corpus. Returns (model, final loss)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    ns = load_definitions(notebook)
    corpus = ns["make_corpus"]() if sentences is None else ns["make_corpus"](sentences)
    tokens, mask = encode_corpus(ns, corpus)
    model = ns["TinyLM"]()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    # cosine decay from lr to lr / 10
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(1, steps))))
    generator = torch.Generator().manual_seed(seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"TinyLM: {n_params:,} parameters; corpus: {len(corpus)} sentences; {steps} steps")
    start = time.time()
    loss_value = float("nan")
    for step in range(steps):
        rows = torch.randint(len(corpus), (batch_size,), generator=generator)
        length = int(mask[rows].sum(dim=1).max())
        x, m = tokens[rows, :length], mask[rows, 1:length]
        logits, _, _ = model(x[:, :-1])  # predict every next character
        per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                    reduction="none")
        loss = (per_token * m.reshape(-1)).sum() / m.sum()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        loss_value = loss.item()
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:5d}  loss {loss_value:.4f}  ({time.time() - start:.0f} s)",
                  flush=True)
    return model, loss_value


def save_weights(model, out: Path) -> None:
    """A float32, CPU state_dict with torch.save, written atomically (temporary file + rename)."""
    import torch

    state = {name: t.detach().to("cpu", torch.float32).contiguous()
             for name, t in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sentences", type=int, default=None,
                        help="corpus size (default: the notebook's CORPUS_SIZE)")
    parser.add_argument("--notebook", type=Path, default=NOTEBOOK)
    parser.add_argument("--out", type=Path, default=NOTEBOOK.parent / "tiny_lm.pt")
    parser.add_argument("--log-every", type=int, default=100)
    args = parser.parse_args(argv)

    start = time.time()
    model, loss = pretrain(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                           seed=args.seed, sentences=args.sentences, notebook=args.notebook,
                           log_every=args.log_every)
    save_weights(model, args.out)
    size_kb = args.out.stat().st_size / 1024
    print(f"wrote {args.out} ({size_kb:.0f} KB); final loss {loss:.4f}; "
          f"{time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
