"""A zygote a child cannot harm.

What a child can try: signal the zygote (SIGSTOP, SIGKILL, and the signals the zygote ignores)
and plant files in the scratch space. Under bubblewrap with a root grader (this machine) the
child runs as a uid of its own without capabilities, so every signal is refused. Where it shares
the zygote's uid (here: the ``unsafe`` backend, as under bubblewrap without root or the
fallback), the rule is that the harm is found and repaired on the offender's time, flagged on the
offender, and the next honest student is forked at once, unflagged. Times are compared with
baselines measured in the same run (an honest fork, the zygote's own start-up), never with
constants.
"""
from __future__ import annotations

import os
import textwrap
import time

import pytest

from autograder.proxy import StudentError, StudentProxy, WorkerDied
from autograder.sandbox import backends
from autograder.sandbox.client import CONTROL_TIMEOUT, ZygoteHandle
from timing import allowance
from autograder.sandbox.limits import Limits
from autograder.sandbox.process_tree import proc_state

CELLS = [{"id": "attack_answer", "source": textwrap.dedent("""
    import os, signal, time

    def hit_parent(name):
        os.kill(os.getppid(), getattr(signal, name))
        time.sleep(0.2)
        return os.getppid()

    def plant():
        made = []
        here = os.getcwd()
        up = os.path.dirname(here)
        n = int(os.path.basename(here).split("-")[1])
        for name in (f"child-{n + 1}", f"child-{n + 2}"):      # the next children's folders
            os.makedirs(os.path.join(up, name, "trap"), exist_ok=True)
            with open(os.path.join(up, name, "trap", "answer.txt"), "w") as f:
                f.write("planted")
            made.append(name)
        os.symlink("/etc", os.path.join(up, ".kit-link"))
        with open(os.path.join(up, "sitecustomize.py"), "w") as f:
            f.write("raise SystemExit('planted')")
        with open("left-behind.txt", "w") as f:
            f.write("mine")
        return made

    def look():
        here = os.getcwd()
        up = os.path.dirname(here)
        return [sorted(os.listdir(here)), sorted(os.listdir(up))]

    def add(a, b):
        return a + b
    """)}]
HONEST = [{"id": "honest_answer", "source": "def add(a, b):\n    return a + b\n"}]


LIMITS = Limits(call_timeout_seconds=20, wall_seconds=300, cpu_seconds=120)


@pytest.fixture(scope="module")
def zygote():
    """A zygote in the real sandbox (bubblewrap)."""
    assert backends.resolve_backend("bwrap") == "bwrap"
    z = ZygoteHandle(LIMITS, backend="bwrap", device="cpu")
    z.start()
    yield z
    z.close()


@pytest.fixture(scope="module")
def shared_uid_zygote():
    """A zygote in the real sandbox whose children share its uid: started without the
    capabilities that give them a uid of their own (as under bubblewrap without root)."""
    with pytest.MonkeyPatch.context() as mp:     # also for the zygotes that replace it
        mp.setattr(backends, "ZYGOTE_CAPS", 0)
        z = ZygoteHandle(LIMITS, backend="bwrap", device="cpu")
        z.start()
        assert z.ping()["child_uid"] is None
        yield z
        z.close()


def codes(worker) -> list[str]:
    return [f["code"] for f in worker.flags()]


def honest_student(zygote) -> list[str]:
    """An honest submission right after: its flags; its code must work."""
    w = zygote.spawn_worker()
    w.load(HONEST)
    assert StudentProxy(w).add(2, 3).value == 5
    return codes(w)


def test_error_replies_carry_the_request_id(zygote):
    """A refused control request comes back at once (its reply names the request), and so
    does a request line the worker cannot parse."""
    started = time.monotonic()
    with pytest.raises(WorkerDied, match="refused"):
        zygote._control({"op": "no-such-op"})
    # not a wait for the timeout: a reply, well within one cold start measured now
    assert time.monotonic() - started < allowance(1)
    w = zygote.spawn_worker()
    reply = w._chan.exchange(b'{"op": "call", "fn": "add", "args": [1, 2,, "id": "r-77"}\n',
                             "r-77", time.monotonic() + CONTROL_TIMEOUT)
    assert reply["ok"] is False and reply["id"] == "r-77"
    assert reply["error"]["stage"] == "worker"


@pytest.mark.skipif(os.geteuid() != 0, reason="children get a uid of their own with a root grader")
def test_a_child_cannot_signal_its_zygote(zygote):
    assert zygote.ping()["child_uid"] is not None
    before, generation = zygote.host_pid, zygote.generation
    offender = zygote.spawn_worker()
    offender.load(CELLS + [{"id": "who_answer", "source": textwrap.dedent("""
        import os, signal
        def who():
            caps = [line.split()[1] for line in open("/proc/self/status")
                    if line.startswith(("CapEff", "CapPrm", "CapAmb"))]
            try:
                os.kill(-1, signal.SIGKILL)        # every process it may signal (not itself)
                everyone = "sent"
            except OSError as exc:
                everyone = exc.errno
            return [os.getuid(), os.stat("/proc/%d" % os.getppid()).st_uid, caps, everyone]
        """)}])
    for name in ("SIGSTOP", "SIGKILL", "SIGTERM", "SIGCONT"):
        with pytest.raises(StudentError, match="Operation not permitted"):
            StudentProxy(offender).hit_parent(name)
    uid, zygote_uid, caps, _ = StudentProxy(offender).who().value
    assert uid != zygote_uid and caps == ["0" * 16] * 3
    assert codes(offender) == []
    assert (zygote.host_pid, zygote.generation) == (before, generation)
    assert proc_state(zygote.host_pid) not in (None, "T", "t")
    flags = honest_student(zygote)
    assert flags == []


@pytest.mark.parametrize("signal_name", ["SIGSTOP", "SIGKILL"])
def test_a_stopped_or_killed_zygote_is_charged_to_the_offender(shared_uid_zygote, signal_name):
    zygote = shared_uid_zygote
    flags = honest_student(zygote)
    assert flags == []
    before = zygote.host_pid

    started = time.monotonic()
    offender = zygote.spawn_worker()
    offender.load(CELLS)
    try:
        StudentProxy(offender).hit_parent(signal_name)
    except (WorkerDied, StudentError):
        pass               # SIGKILL takes the child down with its zygote (the call may fail)
    offender_flags = codes(offender)            # the end of the offender's submission
    offender_seconds = time.monotonic() - started
    assert "zygote_restart" in offender_flags
    assert zygote.host_pid != before and proc_state(zygote.host_pid) not in (None, "T", "t")
    # the new zygote was started (and its start-up paid for) within the offender's time
    assert offender_seconds > zygote.spawn_seconds

    restarted = (zygote.host_pid, zygote.generation)
    assert honest_student(zygote) == []
    # no restart on the honest student's time: forked from the zygote the offender paid for
    assert (zygote.host_pid, zygote.generation) == restarted


def test_signals_the_zygote_can_ignore_do_nothing(shared_uid_zygote):
    zygote = shared_uid_zygote
    before, generation = zygote.host_pid, zygote.generation
    offender = zygote.spawn_worker()
    offender.load(CELLS)
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGTSTP", "SIGALRM", "SIGPIPE"):
        StudentProxy(offender).hit_parent(name)
    assert codes(offender) == []
    assert (zygote.host_pid, zygote.generation) == (before, generation)
    flags = honest_student(zygote)
    assert flags == []


def test_files_planted_in_the_scratch_never_reach_the_next_child(zygote):
    offender = zygote.spawn_worker()
    offender.load(CELLS)
    planted = StudentProxy(offender).plant().value
    assert len(planted) == 2
    mine, shared = StudentProxy(offender).look().value
    assert "left-behind.txt" in mine and "sitecustomize.py" in shared
    assert codes(offender) == []

    honest = zygote.spawn_worker()
    honest.load(CELLS)
    mine, shared = StudentProxy(honest).look().value
    assert mine == []                                   # a fresh, empty folder of its own
    own = [n for n in shared if n.startswith("child-")]
    assert len(own) == 1                                # no other child's folder is left
    assert not {"sitecustomize.py", ".kit-link", *planted} & (set(shared) - set(own))
    assert StudentProxy(honest).add(1, 1).value == 2
    assert codes(honest) == []
