"""Running notebooks in the tests: a Jupyter kernel of this interpreter (the .venv), CPU only.
Shared by the tests that execute notebooks (``tests/assignments/test_release.py``,
``tests/assignments/test_source_notebook.py``, ``tests/grade/test_run_as_written.py``)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def kernel_data_dir(tmp: Path) -> Path:
    """A Jupyter data dir whose only kernel, python3, runs this interpreter (the .venv)."""
    spec = tmp / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python"}))
    return tmp


def kernel_env(data_dir: Path) -> dict:
    # CPU only; one BLAS thread (the machine is shared, the networks are tiny).
    return dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
                JUPYTER_PATH=str(data_dir), PYTHONWARNINGS="")
