"""``grade-course --scheduler ADDRESS``: each submission graded as one task on Dask distributed.

The coordinator keeps every write (results, gradebook, feedback, report) exactly as in a local
run: only the execution of the grading moves. A task carries the submission's bytes (never a
path: the worker cannot see the coordinator's disk) and the cohort's secrets it needs; the Dask
worker writes them into a private temporary folder, grades them with the kit's own
``grade_submission`` in its own sandbox, and returns the result as JSON.

Invariants:
- Before any task, every worker must report the same kit fingerprint as the coordinator
  (``kit_fingerprint``: the code, the hidden suites, the source notebooks) and a real sandbox
  (``bwrap``); otherwise nothing is graded and the offending workers are named.
- The scheduler is reached over TLS with Dask's own security settings
  (``distributed.comm.tls.*``, ``distributed.comm.require-encryption``); ``tcp://`` only with
  ``insecure=True`` (``--insecure-scheduler``), for a network the course trusts.
- A task whose worker dies is rerun elsewhere by the scheduler, at most once more
  (``distributed.scheduler.allowed-failures`` = 1, set by the kit for the clusters it starts and
  required of the ones it joins): one student costs the cohort at most two worker restarts, and
  then gets a result with the flag ``worker_lost``.
- Exactly one result per submission: the coordinator records each future once, as it ends.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

from autograder import REPO_ROOT

ALLOWED_FAILURES = 1          # a task may lose its worker once and be rerun; twice ends it
GPU_RESOURCE = "GPU"          # workers started with `--resources GPU=1` take CUDA tasks


class ClusterRefused(Exception):
    """The cluster cannot be used as it is (insecure address, other kit, fallback sandbox)."""


# --- What every worker must share with the coordinator -----------------------------------------
def kit_fingerprint(course_dir: Path | None = None, assignment: str | None = None) -> str:
    """sha256 over the kit's code and hidden suites (``autograder/``, every ``.py``, ``.json``
    and template) and, given ``assignment``, that assignment's source folder (the answer key and
    its points). Paths are hashed relative to their root, so checkouts in different places agree.
    """
    digest = hashlib.sha256()
    kit = REPO_ROOT / "autograder"
    roots = [(kit, "autograder")]
    if course_dir is not None and assignment is not None:
        roots.append((Path(course_dir) / "source" / assignment, f"source/{assignment}"))
    for root, label in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()
                           and "__pycache__" not in p.parts and p.suffix != ".pyc"):
            digest.update(f"{label}/{path.relative_to(root).as_posix()}".encode() + b"\0")
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            digest.update(b"\0")
    return digest.hexdigest()


def worker_course_dir() -> Path:
    """The course directory a Dask worker grades against: ``PPO_KIT_COURSE_DIR``, else the kit's
    own checkout (the repository root is an nbgrader course directory)."""
    return Path(os.environ.get("PPO_KIT_COURSE_DIR") or REPO_ROOT).resolve()


def describe_worker(assignment: str) -> dict:
    """Run on each Dask worker before grading: its fingerprint, its sandbox, its GPUs."""
    from autograder.config import load_settings
    from autograder.sandbox.backends import BackendUnavailable, resolve_backend
    from autograder.sandbox.devices import gpu_count

    course = worker_course_dir()
    try:
        backend = resolve_backend(load_settings(course).sandbox)
    except BackendUnavailable as exc:
        backend = f"none ({exc})"
    return {"fingerprint": kit_fingerprint(course, assignment), "sandbox": backend,
            "gpus": gpu_count(), "course_dir": str(course)}


def check_workers(infos: dict[str, dict], fingerprint: str) -> None:
    """Raise ClusterRefused naming every worker that runs another kit or a weaker sandbox."""
    if not infos:
        raise ClusterRefused("the scheduler has no workers")
    other = sorted(a for a, i in infos.items() if i.get("fingerprint") != fingerprint)
    weak = sorted(f"{a} ({i.get('sandbox')})" for a, i in infos.items()
                  if i.get("sandbox") != "bwrap")
    problems = []
    if other:
        problems.append("these workers run another version of the kit or the assignment: "
                        + ", ".join(other))
    if weak:
        problems.append("these workers cannot run the bubblewrap sandbox (the fallback shares "
                        "the network with student code): " + ", ".join(weak))
    if problems:
        raise ClusterRefused("; ".join(problems))


# --- Connecting --------------------------------------------------------------------------------
def connect(address: str, *, insecure: bool = False):
    """A ``distributed.Client`` for ``address``, with Dask's configured security.

    ``tls://`` uses ``Security()`` as Dask's config and environment give it (CA, certificate
    and key under ``distributed.comm.tls``); ``tcp://`` is refused unless ``insecure``."""
    from distributed import Client
    from distributed.security import Security

    scheme = address.split("://", 1)[0] if "://" in address else "tcp"
    if scheme != "tls" and not insecure:
        raise ClusterRefused(
            f"refusing the unencrypted scheduler address {address!r}: a Dask scheduler runs "
            "any task it is sent, so grade-course talks to it over tls:// only (give "
            "--insecure-scheduler for a network where every host is trusted)")
    security = Security() if scheme == "tls" else None
    # distributed's Security sets its TLS fields with setattr on __slots__: mypy cannot see them.
    if security is not None and not (security.tls_client_cert  # type: ignore[attr-defined]
                                     and security.tls_ca_file):  # type: ignore[attr-defined]
        raise ClusterRefused(
            "tls:// needs Dask's TLS settings: distributed.comm.tls.ca-file and "
            "distributed.comm.tls.client.cert/key (or DASK_DISTRIBUTED__COMM__TLS__* variables);"
            " `python -m autograder cluster-certs` makes them")
    return Client(address, security=security, timeout="30s")


# --- The task ----------------------------------------------------------------------------------
_POOLS: dict[tuple, object] = {}
_POOLS_LOCK = threading.Lock()


def _pool(settings):
    """One warm ``WorkerPool`` per Dask worker process and settings (reference worker, zygote)."""
    from autograder.grade.pool import WorkerPool

    key = (str(settings.course_dir), settings.cohort_seed, settings.limits)
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = WorkerPool(settings)
        return _POOLS[key]


def grade_task(notebook: bytes | None, name: str, *, student: str, assignment: str,
               cohort_seed: int, limits: dict, device: str, grader: str) -> dict:
    """Grade one submission on a Dask worker; the results JSON. ``notebook`` None (a file the
    coordinator could not read) never reaches here. The submission lives in a private
    temporary folder that is removed afterwards."""
    from dataclasses import replace

    from autograder.config import load_settings
    from autograder.course.slot import DEFAULT_GRADER, load_grader
    from autograder.sandbox.cleanup import make_scratch
    from autograder.sandbox.limits import Limits

    base = load_settings(worker_course_dir())
    settings = base.with_(cohort_seed=int(cohort_seed), limits=replace(Limits(), **limits))
    grade = load_grader(grader)
    folder = make_scratch("dask")      # reaped by a later run if this worker is killed
    try:
        path = Path(folder, os.path.basename(name) or f"{assignment}.ipynb")
        path.write_bytes(notebook or b"")
        kwargs = {"student": student, "settings": settings, "device": device, "backend": None}
        if grader == DEFAULT_GRADER:
            kwargs["pool"] = _pool(settings)
        return grade(path, assignment, **kwargs).to_json()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- The coordinator's side --------------------------------------------------------------------
def run_on_cluster(jobs, *, client, settings, assignment: str, grader: str, device: str,
                   read_notebook, on_result) -> None:
    """Grade ``jobs`` as Dask tasks; ``on_result(job, GradingResult | None, error)`` once each.

    ``read_notebook(job) -> bytes`` reads the submission on the coordinator (bounded, without
    following links). A task that lost its worker twice (``KilledWorker``) gets ``error``
    starting with ``worker_lost:``; any other task failure is a grader error for that job only.
    """
    from dataclasses import asdict

    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    from autograder.results import GradingResult

    resources = {GPU_RESOURCE: 1} if device == "cuda" else None
    futures = {}
    for job in jobs:
        student_key = hashlib.sha256(job.student.encode("utf-8", "surrogateescape")).hexdigest()
        try:
            data = read_notebook(job)
        except Exception as exc:      # a refused, oversized or vanished file: this job only
            on_result(job, None, f"unread: the submission could not be read: {exc}")
            continue
        future = client.submit(
            grade_task, data, job.notebook.name, student=job.student, assignment=assignment,
            cohort_seed=settings.cohort_seed, limits=asdict(settings.limits), device=device,
            grader=grader, key=f"grade-{assignment}-{student_key[:16]}-{job.sha256[:12]}",
            resources=resources, pure=False, retries=0)
        futures[future] = job
    for future in as_completed(list(futures)):
        job = futures[future]
        try:
            on_result(job, GradingResult.from_json(future.result()), "")
        except KilledWorker as exc:
            on_result(job, None, f"worker_lost: grading this submission ended "
                                 f"{ALLOWED_FAILURES + 1} Dask workers, so it was not tried "
                                 f"again ({exc})")
        except Exception as exc:   # a kit error on the worker: this job only
            on_result(job, None, f"{type(exc).__name__}: {exc}")
        finally:
            future.release()


def check_cluster(client, course_dir: Path, assignment: str, device: str) -> dict[str, dict]:
    """Describe every worker and refuse a cluster that cannot grade this assignment safely."""
    infos = client.run(describe_worker, assignment)
    check_workers(infos, kit_fingerprint(course_dir, assignment))
    if device == "cuda":
        gpu = [a for a, w in client.scheduler_info()["workers"].items()
               if w.get("resources", {}).get(GPU_RESOURCE)]
        if not gpu:
            raise ClusterRefused(f"--device cuda, but no worker advertises the {GPU_RESOURCE} "
                                 f"resource (start GPU workers with --resources {GPU_RESOURCE}=1)")
    return infos
