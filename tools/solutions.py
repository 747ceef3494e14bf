"""The answer key as TAs read it (``make solutions``): every source notebook run top to bottom
with nbclient, on the CPU, in a fresh kernel of this interpreter, written with its outputs and
figures to ``solutions/<assignment>/``.

A rerun leaves an unchanged notebook byte-identical: what changes from run to run without
meaning is dropped or normalised (each cell's ``metadata.execution`` timestamps; a cell's
stdout/stderr split into several chunks, depending on when the kernel flushed, is merged into
one), and a notebook is not rewritten when its new text differs from the file on disk only in
durations the notebook prints ("40 iterations in 29 s"; ``DURATION``).

    .venv/bin/python tools/solutions.py ppo ppo_lm
"""
from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat

# Cell metadata that records when a run happened, not what it produced.
RUN_METADATA = ("execution",)
# A duration printed by the notebook: "29 s", "1.5 s", "12.0s".
DURATION = re.compile(r"\b\d+(?:\.\d+)? ?s\b")


def normalise(nb) -> None:
    """Drop the run-to-run noise from an executed notebook, in place."""
    for cell in nb.cells:
        for key in RUN_METADATA:
            cell.metadata.pop(key, None)
        merged = []
        for out in cell.get("outputs", []):
            if merged and out.output_type == "stream" == merged[-1].output_type \
                    and out.name == merged[-1].name:
                merged[-1].text += out.text
            else:
                merged.append(out)
        if "outputs" in cell:
            cell.outputs = merged


def same_but_durations(a: str, b: str) -> bool:
    return DURATION.sub("# s", a) == DURATION.sub("# s", b)


def write_if_changed(nb, out: Path) -> bool:
    """Write ``nb`` to ``out`` unless the file already holds that text, up to the durations it
    prints; True if written."""
    text = nbformat.writes(nb) + "\n"
    if out.exists() and same_but_durations(out.read_text(), text):
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return True


def execute(source: Path):
    """``source`` run top to bottom in a fresh kernel of this interpreter, on the CPU."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(source, as_version=4)
    with tempfile.TemporaryDirectory() as specs:
        spec = Path(specs, "python3")     # a kernel that runs this very interpreter
        spec.mkdir()
        spec.joinpath("kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (ipykernel)", "language": "python"}))
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="",
                   MPLBACKEND="module://matplotlib_inline.backend_inline")
        km = KernelManager(kernel_name="python3",
                           kernel_spec_manager=KernelSpecManager(kernel_dirs=[specs]))
        client = NotebookClient(nb, km=km, timeout=900,
                                resources={"metadata": {"path": str(source.parent)}})
        client.execute(env=env, cleanup_kc=True)  # cleanup_kc: shut the kernel down afterwards
    normalise(nb)
    return nb


def main(assignments: list[str], root: Path = Path(".")) -> int:
    for source in sorted((root / "source").glob("*/*.ipynb")):
        if source.parent.name not in assignments:
            continue
        out = root / "solutions" / source.parent.name / source.name
        start = time.perf_counter()
        written = write_if_changed(execute(source), out)
        print(f"{source} -> {out}: executed in {time.perf_counter() - start:.1f} s"
              f"{'' if written else ' (unchanged, not rewritten)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
