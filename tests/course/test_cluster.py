"""``grade-course --scheduler``: grading on Dask distributed, over TLS, with a worker killed.

The cluster is a real ``distributed.LocalCluster`` of worker processes (each with a nanny that
restarts it), secured with certificates from ``python -m autograder cluster-certs``.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import distributed  # noqa: F401  (loads Dask's distributed defaults before any config.set)
import pytest

from autograder import REPO_ROOT
from autograder.course.batch import UsageError, grade_course
from autograder.course.certs import make_certs
from autograder.course.cluster import (
    ClusterRefused,
    check_workers,
    connect,
    describe_worker,
    kit_fingerprint,
)
from autograder.course.demo import (
    applicable_mutants,
    copy_course,
    mutated,
    solutions,
    submission,
    write_cohort,
)

ASSIGNMENT = "ppo"


# --- Without a cluster -------------------------------------------------------------------------
def test_plain_tcp_is_refused_unless_insecure_is_given():
    with pytest.raises(ClusterRefused, match="tls://"):
        connect("tcp://127.0.0.1:1")
    with pytest.raises(ClusterRefused, match="tls://"):
        connect("127.0.0.1:1")


def test_workers_with_another_kit_or_the_fallback_sandbox_are_refused_by_name():
    good = {"fingerprint": "abc", "sandbox": "bwrap"}
    check_workers({"tls://a:1": good, "tls://b:2": good}, "abc")   # nothing raised
    with pytest.raises(ClusterRefused, match=r"another version.*tls://b:2"):
        check_workers({"tls://a:1": good, "tls://b:2": dict(good, fingerprint="zzz")}, "abc")
    with pytest.raises(ClusterRefused, match=r"bubblewrap.*tls://a:1 \(fallback\)"):
        check_workers({"tls://a:1": dict(good, sandbox="fallback"), "tls://b:2": good}, "abc")
    with pytest.raises(ClusterRefused, match="no workers"):
        check_workers({}, "abc")


def test_fingerprint_covers_the_answer_key(tmp_path):
    paths = copy_course(tmp_path / "course")
    before = kit_fingerprint(paths.root, ASSIGNMENT)
    assert before == kit_fingerprint(paths.root, ASSIGNMENT)
    nb = paths.source_notebook(ASSIGNMENT)
    nb.write_bytes(nb.read_bytes().replace(b"vf_coeff", b"vf_coef_", 1))
    assert kit_fingerprint(paths.root, ASSIGNMENT) != before


class FakeClient:
    """Records what the coordinator submits; answers with a fixed result."""

    def __init__(self, workers: dict):
        self.workers, self.submitted = workers, []

    def submit(self, fn, *args, **kwargs):
        self.submitted.append(kwargs)
        return kwargs["key"]

    def scheduler_info(self):
        return {"workers": self.workers}


def test_cuda_tasks_ask_for_the_gpu_resource_and_need_a_gpu_worker(tmp_path, monkeypatch):
    from autograder.config import load_settings
    from autograder.course import cluster
    from autograder.course.batch import Job

    client = FakeClient({"tls://cpu:1": {"resources": {}}})
    with pytest.raises(ClusterRefused, match="GPU"):
        monkeypatch.setattr(cluster, "check_workers", lambda infos, fp: None)
        client.run = lambda fn, *a: {}
        cluster.check_cluster(client, tmp_path, ASSIGNMENT, "cuda")
    client.workers["tls://gpu:2"] = {"resources": {"GPU": 1}}
    cluster.check_cluster(client, tmp_path, ASSIGNMENT, "cuda")      # now one GPU worker

    monkeypatch.setattr("distributed.as_completed", lambda futures: [])
    job = Job("ann", tmp_path, tmp_path / "ppo.ipynb", "0" * 64)
    settings = load_settings(REPO_ROOT)
    for device, resources in (("cuda", {"GPU": 1}), ("cpu", None), ("auto", None)):
        client.submitted.clear()
        cluster.run_on_cluster([job], client=client, settings=settings, assignment=ASSIGNMENT,
                               grader="x:y", device=device, read_notebook=lambda j: b"{}",
                               on_result=None)
        assert client.submitted[0]["resources"] == resources
        assert client.submitted[0]["device"] == device


def test_certificates_and_dask_config(tmp_path):
    files = make_certs(tmp_path / "tls", ["localhost", "127.0.0.1"])
    assert oct(os.stat(tmp_path / "tls").st_mode & 0o777) == "0o700"
    for role in ("scheduler", "worker", "client"):
        assert oct(os.stat(tmp_path / "tls" / f"{role}-key.pem").st_mode & 0o777) == "0o600"
    text = files["config"].read_text()
    assert "require-encryption: true" in text and "allowed-failures: 1" in text


# --- A real cluster ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("tls"), ["localhost", "127.0.0.1"])


def security(tls, role: str | None, *, with_cert: bool = True):
    from distributed.security import Security

    kwargs = {"tls_ca_file": str(tls["ca"]), "require_encryption": True}
    for r in ("scheduler", "worker", "client"):
        if with_cert and (role is None or r == role):
            kwargs[f"tls_{r}_cert"] = str(tls[r])
            kwargs[f"tls_{r}_key"] = str(tls[r]).replace(".pem", "-key.pem")
    return Security(**kwargs)


def operator_config(tls) -> dict:
    """Dask's own config, as an operator would give it: the kit reads nothing else."""
    return {"distributed.comm.require-encryption": True,
           "distributed.comm.tls.ca-file": str(tls["ca"]),
           "distributed.comm.tls.client.cert": str(tls["client"]),
           "distributed.comm.tls.client.key": str(tls["client"]).replace(".pem", "-key.pem"),
           "distributed.scheduler.allowed-failures": 1}


@pytest.fixture
def dask_tls_env(tls):
    import dask

    with dask.config.set(operator_config(tls)):
        yield


def local_cluster(tls, n: int = 2):
    from distributed import LocalCluster

    return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, protocol="tls://",
                        host="127.0.0.1", dashboard_address=None,
                        security=security(tls, None), silence_logs=40)


def tls_exchange(address: str, ca: Path, cert: Path | None) -> str:
    """Open a TLS connection to ``address`` trusting ``ca``, presenting ``cert`` (or none), send
    a few bytes and read: "refused" when the server rejects the handshake, else "accepted"."""
    import socket
    import ssl

    host, port = address.split("://", 1)[1].rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(cert).replace(".pem", "-key.pem"))
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw) as s:
                s.settimeout(2)
                s.sendall(b"\0" * 8)
                data = s.recv(1)
        except ssl.SSLError:
            return "refused"
        except TimeoutError:
            return "accepted"       # the server waits for Dask's protocol: the peer was let in
    return "refused" if data == b"" else "accepted"


@pytest.mark.slow
def test_a_client_without_the_certificate_is_refused(tls, tmp_path):
    import dask
    from distributed import Client

    stranger = make_certs(tmp_path / "other-ca", ["localhost", "127.0.0.1"])
    with local_cluster(tls, n=1) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://")
        assert tls_exchange(address, tls["ca"], None) == "refused"
        assert tls_exchange(address, tls["ca"], stranger["client"]) == "refused"
        assert tls_exchange(address, tls["ca"], tls["client"]) == "accepted"   # the control
        with pytest.raises((OSError, TimeoutError)):      # a Dask client of another CA
            Client(address, security=security(stranger, "client"), timeout="5s")
        with pytest.raises((OSError, TimeoutError)):      # plain TCP to the TLS port
            Client(address.replace("tls://", "tcp://"), timeout="5s")
        with dask.config.set(operator_config(tls)), connect(address) as client:
            info = client.run(describe_worker, ASSIGNMENT)     # with the right certificate
            assert len(info) == 1


def gradebook_rows(paths) -> list[tuple]:
    with sqlite3.connect(paths.root / "gradebook.db") as db:
        return sorted(db.execute(
            "select student.id, base_cell.name, grade.auto_score, grade.needs_manual_grade "
            "from grade "
            "join submitted_notebook on grade.notebook_id = submitted_notebook.id "
            "join submitted_assignment on submitted_notebook.assignment_id = "
            "submitted_assignment.id join student on submitted_assignment.student_id = student.id "
            "join base_cell on grade.cell_id = base_cell.id").fetchall())


def cohort(paths) -> dict[str, dict[str, bytes]]:
    nb = f"{ASSIGNMENT}.ipynb"
    mutant = next(m for m in applicable_mutants(paths) if m.name == "gae_forward")
    return {"ann": {nb: submission(paths, solutions(paths))},
            "bob": {nb: submission(paths, {})},
            "cyd": {nb: submission(paths, mutated(paths, mutant))},
            "dot": {nb: submission(paths, solutions(paths))}}


def scores(paths) -> dict[str, float]:
    return {p.parent.parent.name: json.loads(p.read_text())["score"]
            for p in paths.autograded.glob(f"*/{ASSIGNMENT}/results.json")}


def kill_a_busy_worker(cluster, client, done: threading.Event, killed: list) -> None:
    """SIGKILL the first worker seen running a grading task (its nanny restarts it)."""
    while not done.is_set() and not killed:
        busy = [addr for addr, keys in client.processing().items() if keys]
        if busy:
            time.sleep(1.0)                 # well inside the task, not at its start
            pid = client.run(os.getpid, workers=[busy[0]]).get(busy[0])
            if pid:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.2)


@pytest.mark.slow
def test_cluster_grades_like_a_local_run_with_a_worker_killed(tmp_path, tls, dask_tls_env):
    from distributed import Client

    local = copy_course(tmp_path / "local")
    write_cohort(local, cohort(local))
    grade_course(local.root, ASSIGNMENT, jobs=2)

    remote = copy_course(tmp_path / "remote")
    write_cohort(remote, cohort(remote))
    with local_cluster(tls) as cluster, Client(cluster, security=security(tls, "client")) as c:
        done, killed = threading.Event(), []
        killer = threading.Thread(target=kill_a_busy_worker, args=(cluster, c, done, killed))
        killer.start()
        try:
            run = grade_course(remote.root, ASSIGNMENT, scheduler=cluster.scheduler_address)
        finally:
            done.set()
            killer.join()
    assert killed, "no worker was seen busy, so none was killed"
    assert sorted(run.graded_now) == ["ann", "bob", "cyd", "dot"]     # one result each
    results = sorted(remote.autograded.glob(f"*/{ASSIGNMENT}/results.json"))
    assert len(results) == 4
    assert scores(remote) == scores(local)
    assert len(gradebook_rows(local)) == 4 * 5          # every student, every grade cell
    assert gradebook_rows(remote) == gradebook_rows(local)
    assert all((remote.feedback / s / ASSIGNMENT).is_dir() for s in scores(remote))

    # Resume: nothing changed, so nothing is graded again (the cluster is gone: not needed).
    again = grade_course(remote.root, ASSIGNMENT, scheduler="tls://127.0.0.1:1")
    assert again.graded_now == [] and sorted(again.skipped) == ["ann", "bob", "cyd", "dot"]


def exit_for_one_student(path, assignment, *, student, settings, device, backend):
    """A grader that ends its own (Dask worker) process for one student, else grades."""
    from autograder.grade.submission import grade_submission

    if student == "bad":
        os._exit(13)
    return grade_submission(path, assignment, student=student, settings=settings,
                            device=device, backend=backend)


@pytest.mark.slow
def test_a_task_that_kills_its_worker_costs_two_restarts_then_gets_a_flagged_result(
        tmp_path, tls, dask_tls_env):
    from distributed import Client

    paths = copy_course(tmp_path / "course")
    nb = f"{ASSIGNMENT}.ipynb"
    write_cohort(paths, {"bad": {nb: submission(paths, {})},
                         "ok": {nb: submission(paths, {})}})
    with local_cluster(tls) as cluster, Client(cluster, security=security(tls, "client")) as c:
        pids_before = set(c.run(os.getpid).values())
        run = grade_course(paths.root, ASSIGNMENT, scheduler=cluster.scheduler_address,
                           grader=f"{__name__}:exit_for_one_student")
        c.wait_for_workers(2, timeout=60)
        pids_after = set(c.run(os.getpid).values())
    assert sorted(run.graded_now) == ["bad", "ok"]
    bad = run.results["bad"]
    assert "worker_lost" in {f["code"] for f in bad["extra_data"]["flags"]}
    assert run.results["ok"]["extra_data"]["flags"] == [] or all(
        f["code"] != "worker_lost" for f in run.results["ok"]["extra_data"]["flags"])
    assert len(pids_after - pids_before) <= 2      # at most two workers restarted for "bad"


def set_env(key: str, value: str) -> None:
    """Run on a Dask worker: set one of its own environment variables (a function of this
    module, so the worker's ``os.environ`` is changed, not a pickled copy of ours)."""
    os.environ[key] = value


@pytest.mark.slow
def test_workers_of_another_kit_are_refused_before_any_grading(tmp_path, tls, dask_tls_env):
    from distributed import Client

    paths = copy_course(tmp_path / "course")
    write_cohort(paths, {"ann": {f"{ASSIGNMENT}.ipynb": submission(paths, {})}})
    other = copy_course(tmp_path / "other")
    nb = other.source_notebook(ASSIGNMENT)
    nb.write_bytes(nb.read_bytes().replace(b"vf_coeff", b"vf_coef_", 1))
    with local_cluster(tls) as cluster, Client(cluster, security=security(tls, "client")) as c:
        first = sorted(c.scheduler_info()["workers"])[0]
        c.run(set_env, "PPO_KIT_COURSE_DIR", str(other.root), workers=[first])
        with pytest.raises(UsageError, match=first.replace(".", r"\.")):
            grade_course(paths.root, ASSIGNMENT, scheduler=cluster.scheduler_address)
    assert not list(paths.autograded.glob(f"*/{ASSIGNMENT}/results.json"))

