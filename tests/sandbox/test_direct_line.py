"""The trusted worker's direct line to a student's worker (``autograder/sandbox/direct.py``).

With real workers a training run's student calls go from the trusted worker to the student's
worker without passing through the grading process. These tests show that this changes nothing
a student or a TA can see: the same training result as the relayed path, and every duty the
grading process had per call (the call timeout, the wall-clock budget, a worker that ends,
output drained and capped, stray lines on the reply pipe counted, the note on a limit) still
holds, each with the same event and the same error as before.
"""
from __future__ import annotations

import dataclasses

import pytest

from autograder import REPO_ROOT
from autograder.assignments import load_assignment
from autograder.config import load_settings
from autograder.grade.submission import reference_cells
from autograder.hints import mutant_cells
from autograder.plugins import module_of
from autograder.proxy import StudentProxy, WorkerDied, WorkerTimeout
from autograder.sandbox.client import Worker

T = module_of("ppo", "training")
EPISODES = 30

REINFORCE = '''
import os
import time
_calls = [0]

def reinforce_loss(log_probs, rewards):
    _calls[0] += 1
    {body}
    return -(log_probs * torch.as_tensor(rewards, dtype=log_probs.dtype)).mean()
'''


@pytest.fixture(scope="module")
def course():
    settings = load_settings(REPO_ROOT)
    asg = load_assignment("ppo", REPO_ROOT)
    trusted = Worker(settings.limits, backend="trusted", device="cpu", trusted=True)
    trusted.start()
    trusted.load(reference_cells(asg) + mutant_cells(asg))
    yield settings, asg, trusted
    trusted.close()


def run(course, body: str | None = None, *, monkeypatch, limits=None, direct: bool = True,
        train_timeout: float | None = None, trusted=None):
    """Train ``bandit`` for EPISODES steps with the answer key, its ``reinforce_loss`` replaced
    by one running ``body`` first. Returns (result or exception, student proxy, parent
    requests the student's worker got during the run)."""
    settings, asg, default = course
    trusted = trusted or default
    cells = reference_cells(asg)
    if body is not None:
        cells = cells + [{"id": "variant", "source": REINFORCE.format(body=body)}]
    worker = Worker(limits or settings.limits, backend="unsafe", device="cpu")
    worker.start()
    worker.load(cells)
    student = StudentProxy(worker)
    if not direct:
        monkeypatch.setattr(worker, "direct_ends", lambda: None)
    asked = []
    request = worker.request
    monkeypatch.setattr(worker, "request", lambda msg, *a, **k: asked.append(msg.get("op"))
                        or request(msg, *a, **k))
    params = dict(T.bandit_params(7, T.kit_source(asg, ["BanditPolicy"])), episodes=EPISODES)
    params["check"] = T.check_params(asg, 7, {"reinforce_loss": EPISODES})
    try:
        out = StudentProxy(trusted).train(T.trainer("bandit"), student, timeout=train_timeout,
                                          **params)
    except Exception as exc:     # noqa: BLE001 - the test looks at which
        out = exc
    return out, student, asked, worker


def codes(worker) -> list[str]:
    return [e["code"] for e in worker.events]


def test_the_direct_line_trains_exactly_as_the_relay(course, monkeypatch):
    direct, _, asked_direct, w1 = run(course, monkeypatch=monkeypatch)
    relayed, _, asked_relayed, w2 = run(course, direct=False, monkeypatch=monkeypatch)
    try:
        assert "error" not in direct and direct["round_trips"] == EPISODES
        assert repr(direct) == repr(relayed)
        assert asked_direct == []                  # no call went through this process
        assert asked_relayed == ["call"] * EPISODES
    finally:
        w1.close()
        w2.close()


def test_a_call_past_its_timeout_is_stopped_and_recorded(course, monkeypatch):
    limits = dataclasses.replace(course[0].limits, call_timeout_seconds=2)
    body = "while _calls[0] == 3:\n        pass"
    out, student, _, worker = run(course, body, limits=limits, monkeypatch=monkeypatch)
    try:
        assert isinstance(out, WorkerTimeout) and "no answer within 2 s" in str(out)
        assert "call_timeout" in codes(worker) and not worker.alive
        with pytest.raises(WorkerTimeout):     # not called again through this proxy
            student.call("reinforce_loss", [1.0], [1.0])
    finally:
        worker.close()


def test_the_wall_clock_budget_still_bounds_a_training_run(course, monkeypatch):
    limits = dataclasses.replace(course[0].limits, wall_seconds=4, call_timeout_seconds=30)
    out, _, _, worker = run(course, "time.sleep(0.5)", limits=limits, monkeypatch=monkeypatch)
    try:
        assert isinstance(out, WorkerTimeout), out
        assert "time limit for all of your code together" in str(out)
        assert "limit_wall" in codes(worker)
    finally:
        worker.close()


def test_a_worker_that_ends_mid_call_reports_how(course, monkeypatch):
    out, _, _, worker = run(course, "if _calls[0] == 3:\n        os._exit(7)",
                            monkeypatch=monkeypatch)
    try:
        assert isinstance(out, WorkerDied) and out.code == 7, out
        assert "worker_died" in codes(worker)
    finally:
        worker.close()


def test_output_is_drained_and_capped_while_the_trusted_worker_waits(course, monkeypatch):
    # 30 calls x 200 KB: three times a pipe's buffer per call; a pipe nobody drains blocks
    out, _, _, worker = run(course, "print('x' * 200_000, flush=True)", monkeypatch=monkeypatch)
    try:
        assert "error" not in out and out["round_trips"] == EPISODES
        assert "limit_output" in codes(worker) + [f["code"] for f in worker.flags()]
        assert worker.captured_output().rstrip().endswith("x" * 1000)
    finally:
        worker.close()


def test_lines_written_to_the_reply_pipe_are_skipped_and_counted(course, monkeypatch):
    body = "os.write(4, b'{\"id\": \"guess\", \"ok\": true}\\nnot json\\n')"
    out, _, _, worker = run(course, body, monkeypatch=monkeypatch)
    try:
        assert "error" not in out and out["round_trips"] == EPISODES
        junk = [e for e in worker.events if e["code"] == "protocol_junk"]
        assert junk and sum(int(e["message"].split()[0]) for e in junk) == 2 * EPISODES
    finally:
        worker.close()


def test_an_error_from_a_limit_says_which_limit(course, monkeypatch):
    out, _, _, worker = run(course, "raise MemoryError()", monkeypatch=monkeypatch)
    try:
        assert "error" in out and "MemoryError" in out["error"]
        assert "memory" in out["error"].split("MemoryError", 1)[1].lower()
        assert "limit_memory" in codes(worker)
    finally:
        worker.close()


def test_a_run_past_its_own_time_stops_as_before_and_keeps_the_trusted_worker(course,
                                                                             monkeypatch):
    trusted_pid = course[2].pid
    out, _, _, worker = run(course, "time.sleep(0.2)", train_timeout=2, monkeypatch=monkeypatch)
    try:
        assert isinstance(out, WorkerTimeout), out
        assert "the training run did not finish within 2 s" in str(out)
        assert course[2].pid == trusted_pid            # the trusted worker was not stopped
        assert worker.alive and "call_timeout" not in codes(worker)
    finally:
        worker.close()


# --- replies only a student who rewrites the worker sends: both paths read them alike ---------

HOOK_SEND = '''
    import sys
    frame, server = sys._getframe(), None
    while frame is not None:             # the worker's Server, from the student's own frames
        server = frame.f_locals.get("self") if frame.f_code.co_name == "serve" else server
        frame = frame.f_back
    if server is not None and "send" not in vars(server):
        plain = type(server).send
        def send(reply, _plain=plain, _server=server):
            if reply.get("ok") is True and "value" in reply:
                {rewrite}
            _plain(_server, reply)
        server.send = send'''

FORGED = {
    "ok is 1": ('reply = dict(reply, ok=1)', "trained"),
    "error not an object": ('reply = {"id": reply["id"], "ok": False, "error": "x"}',
                            "`reinforce_loss` failed during training"),
    "a number out of range": (
        'os.write(4, b\'{"id": "\' + reply["id"].encode() + '
        'b\'", "ok": true, "value": 1e999}\\\\n\')\n                return',
        "no answer within 3 s"),
}


def outcome(out) -> str:
    if isinstance(out, Exception):
        return str(out)
    return out.get("error", "trained")


@pytest.mark.parametrize("case", sorted(FORGED))
def test_forged_replies_read_the_same_on_both_paths(course, monkeypatch, case):
    rewrite, expected = FORGED[case]
    limits = dataclasses.replace(course[0].limits, call_timeout_seconds=3)
    seen = {}
    for direct in (True, False):
        out, _, _, worker = run(course, HOOK_SEND.format(rewrite=rewrite), limits=limits,
                                direct=direct, monkeypatch=monkeypatch)
        worker.close()
        seen[direct] = outcome(out)
    assert seen[True] == seen[False]
    assert expected in seen[True]


def test_a_flood_of_stray_lines_fails_the_call_on_both_paths(course, monkeypatch):
    seen = {}
    for direct in (True, False):
        out, _, _, worker = run(course, "os.write(4, b'\\n' * 5000)", direct=direct,
                                monkeypatch=monkeypatch)
        worker.close()
        seen[direct] = outcome(out)
    assert seen[True] == seen[False] and "ProtocolJunk" in seen[True]


def test_a_trusted_worker_lost_mid_run_starts_the_run_again_on_fresh_processes(course,
                                                                                monkeypatch):
    """The student's worker may hold a call of the lost run: it is restarted too (nothing is
    held against the student), and the run starts again once, as a relayed run always did."""
    import os
    import signal
    import threading

    trusted = course[2]
    old = trusted.pid
    killer = threading.Timer(0.4, lambda: os.kill(old, signal.SIGKILL))
    killer.start()
    try:
        out, student, asked, worker = run(course, "time.sleep(0.03)", monkeypatch=monkeypatch)
    finally:
        killer.cancel()
    try:
        assert "error" not in out and out["round_trips"] == EPISODES, out
        assert trusted.pid != old
        assert [f["code"] for f in worker.flags()] == []
        assert asked == []                  # the second run had its direct line too
    finally:
        worker.close()


def vm_hwm(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith("VmHWM:"))


def test_the_largest_reply_lines_cost_the_trusted_worker_a_bounded_amount(course, monkeypatch):
    """The trusted worker reads a training run's replies with the grading process's bounds:
    a line just under the byte and value caps is parsed and skipped, lines over them fail the
    call; its peak memory grows by at most ``TRUSTED_REPLY_PEAK`` whatever the lines hold."""
    from load.test_untrusted_bytes import junk_line

    settings, asg, _ = course
    fresh = Worker(settings.limits, backend="trusted", device="cpu", trusted=True)
    fresh.start()
    fresh.load(reference_cells(asg) + mutant_cells(asg))
    body = ("if _calls[0] == 1:\n"
            + "".join(f"        _view = memoryview({junk_line(kind)})\n"
                      "        while _view:\n"
                      "            _view = _view[os.write(4, _view):]\n"
                      for kind in ("parsed", "values", "bytes")))
    try:
        before = vm_hwm(fresh.pid)
        out, _, _, worker = run(course, body, trusted=fresh, monkeypatch=monkeypatch)
        grown = vm_hwm(fresh.pid) - before
        worker.close()
        assert "error" in out and "reply to the grader was" in out["error"], out
        print(f"trusted worker VmHWM {before >> 20} MiB, grew by {grown >> 20} MiB")
        assert grown < TRUSTED_REPLY_PEAK
    finally:
        fresh.close()


TRUSTED_REPLY_PEAK = 512 << 20   # bytes over its resting peak (README "Security model")
