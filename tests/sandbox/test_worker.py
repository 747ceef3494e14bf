"""The worker engine end to end: a real worker process (one per module, reused), the proxy the
suites use, deaths and timeouts with restarts, the zygote, and one worker inside the sandbox.

Each fresh worker costs an ``import torch`` (about 3 s here), so the tests share workers and only
the tests about deaths restart one."""
from __future__ import annotations

import os
import textwrap
import time

import numpy as np
import pytest

from autograder.proxy import (Backward, LogSoftmaxGather, NotDefined, Other, StudentError,
                              StudentProxy, Tensor, TooLarge, WorkerDied, WorkerTimeout)
from autograder.sandbox import backends
from autograder.sandbox.client import Worker, ZygoteHandle
from autograder.sandbox.limits import Limits
from timing import allowance

LIMITS = Limits(call_timeout_seconds=20, harness_timeout_seconds=60, wall_seconds=600,
                cpu_seconds=300, max_output_kb=8)

CELLS = {
    "imports": "import os, sys\nimport numpy as np\nimport torch\n",
    "reinforce_loss_answer": """
        def reinforce_loss(log_probs, rewards):
            return -(log_probs * rewards).mean()
        """,
    "helpers_answer": """
        def identity(x):
            return x

        def kinds():
            return {"gen": (i for i in range(3)), "big": torch.zeros(10_000_001),
                    "np": np.arange(3), "param": torch.nn.Parameter(torch.ones(2)),
                    "bf16": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
                    "nums": [1, 2.5, float("nan")], "flag": True}

        def scale_in_place(values, factor=2.0):
            values.mul_(factor)
            return values.sum()

        def scale_copy(values, factor=2.0):
            return (values * factor).sum()

        def append_to(items):
            items.append(0.0)
            return len(items)

        def vector(x):
            return x * 2

        def flood(lines):
            for i in range(lines):
                print(f"line {i:07d} " + "x" * 40)
            print("LAST LINE", file=sys.stderr)
            return lines

        def inner(n):
            raise ValueError(f"bad n={n}")

        def outer(n):
            return inner(n) + 1

        def spin():
            while True:
                pass

        def leave(code):
            sys.exit(code)

        def hard_exit(code):
            os._exit(code)

        def deep(n):
            return deep(n + 1) + 1

        def noisy_channel():
            os.write(4, b"this is not a reply\\n")
            os.write(4, b'{"id": "forged", "ok": true, "value": 99}\\n')
            return 7

        def draw(n):
            return torch.rand(n)
        """,
    "compute_gae_answer": """
        def compute_gae(rewards, values, gamma=0.99, lam=0.95):
            advantages = [
            return advantages
        """,
    "broken_at_load": "LIMIT = 1 / 0\n",
}

LOGITS = np.array([1.0, 2.0, 0.5, -1.0, 0.0], dtype=np.float32)
REINFORCE_LOSS = 1.1488759
REINFORCE_GRAD = np.array([0.4142479, -0.8739575, 0.2512540, 0.0560624, 0.1523933])


def limits(**changes) -> Limits:
    return Limits(**{**LIMITS.__dict__, **changes})


def cells() -> list[dict]:
    return [{"id": cid, "source": textwrap.dedent(src)} for cid, src in CELLS.items()]


@pytest.fixture(scope="module")
def worker():
    w = Worker(limits(), backend="unsafe", device="cpu")
    w.start()
    w.load(cells())
    yield w
    w.close()


@pytest.fixture(scope="module")
def student(worker):
    return StudentProxy(worker)


def reinforce_check(student) -> None:
    logits = Tensor(LOGITS, requires_grad=True, name="logits")
    got = student.reinforce_loss(LogSoftmaxGather(logits, 1), 2.0,
                                 backward=Backward(output=None, wrt=["logits"]))
    assert got.meta.shape == () and got.meta.dtype == "float32" and got.meta.grad_fn
    assert abs(float(got.value) - REINFORCE_LOSS) < 1e-6
    np.testing.assert_allclose(got.grads["logits"], REINFORCE_GRAD, atol=1e-6)


def test_spawn_does_not_wait_and_the_first_request_does():
    """``spawn`` only starts the process (so two workers import torch at once); the first
    request waits for it to be ready; a worker closed before it was ever ready leaves no
    process behind."""
    w = Worker(limits(), backend="unsafe", device="cpu")
    idle = Worker(limits(), backend="unsafe", device="cpu")
    try:
        w.spawn()
        idle.spawn()
        pid, idle_pid = w.pid, idle.pid
        assert pid is not None and idle_pid is not None and w.spawn_seconds is None
        w.spawn()                                   # no-op while it runs
        assert w.pid == pid
        w.load(cells())
        assert w.pid == pid and w.spawn_seconds is not None
        reinforce_check(StudentProxy(w))
        idle.close()
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{idle_pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{idle_pid}")
    finally:
        w.close()
        idle.close()


# --- loading -----------------------------------------------------------------------------------

def test_load_reports_definitions_and_cell_errors(worker, student):
    reply = worker.load_reply
    assert reply["device"] == "cpu"
    assert reply["defined"]["reinforce_loss"] == "(log_probs, rewards)"
    assert reply["defined"]["scale_in_place"] == "(values, factor=2.0)"
    assert "compute_gae" not in reply["defined"] and "np" not in reply["defined"]
    errors = {e["cell"]: e for e in reply["cell_errors"]}
    assert set(errors) == {"compute_gae_answer", "broken_at_load"}
    assert errors["compute_gae_answer"]["type"] == "SyntaxError"
    assert errors["compute_gae_answer"]["names"] == ["compute_gae"]
    assert errors["broken_at_load"]["type"] == "ZeroDivisionError"
    assert errors["broken_at_load"]["line"] == 1


def test_not_defined_explains_why(student):
    with pytest.raises(NotDefined) as missing:
        student.compute_gae([1.0], [0.0, 0.0])
    assert missing.value.name == "compute_gae"
    assert str(missing.value).startswith("compute_gae could not be called: the cell "
                                         "compute_gae_answer has a SyntaxError at line 3")
    with pytest.raises(NotDefined, match="it is not defined in your notebook"):
        student.ppo_combined_loss(1, 2)


# --- values and gradients ----------------------------------------------------------------------

def test_reinforce_gradient_through_log_softmax_gather(student):
    reinforce_check(student)


def test_batched_log_softmax_gather_and_tensor_rewards(student):
    logits = np.stack([LOGITS, LOGITS[::-1].copy()])
    got = student.reinforce_loss(LogSoftmaxGather(Tensor(logits, True, "logits"), [1, 3]),
                                 Tensor(np.array([2.0, 2.0], dtype=np.float32)),
                                 backward=Backward(wrt=["logits"]))
    assert abs(float(got.value) - REINFORCE_LOSS) < 1e-6     # both rows pick the same logit
    np.testing.assert_allclose(got.grads["logits"][0], REINFORCE_GRAD / 2, atol=1e-6)
    np.testing.assert_allclose(got.grads["logits"][1], REINFORCE_GRAD[::-1] / 2, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "bool"])
def test_tensor_round_trip_through_the_worker(student, dtype):
    data = np.array([[1.5, np.nan, np.inf], [-np.inf, -0.0, 3.0]]).astype(dtype) \
        if dtype.startswith("float") else np.array([[1, 0, 7], [2, 0, 1]]).astype(dtype)
    for arr in (data, data[0, 0].reshape(())):
        got = student.identity(Tensor(arr))
        assert got.value.dtype == arr.dtype and got.value.shape == arr.shape
        assert got.value.tobytes() == arr.tobytes()
        assert got.meta.dtype == dtype and got.meta.shape == arr.shape
        assert got.meta.device == "cpu" and got.meta.is_exact_tensor
        assert not got.meta.requires_grad and not got.meta.grad_fn
        assert got.mutated == {"x": False}


def test_plain_values_round_trip_through_the_worker(student):
    nested = (1, [2.5, float("inf"), None, "s"], {"k": (True, [])},
              np.array([1, 2], dtype=np.int64))
    got = student.identity(nested)
    assert got.value[:3] == nested[:3] and isinstance(got.value, tuple)
    assert got.value[3].tolist() == [1, 2] and got.meta[3] is None   # an ndarray, not a tensor
    nan = student.identity(float("nan")).value
    assert isinstance(nan, float) and np.isnan(nan)


def test_values_the_protocol_does_not_carry(student):
    got = student.kinds().value
    assert isinstance(got["gen"], Other) and got["gen"].type == "generator"
    assert got["big"] == TooLarge("Tensor", (10_000_001,))
    assert got["np"].tolist() == [0, 1, 2]
    assert got["bf16"].tolist() == [1.5, -2.0]
    assert student.kinds().meta["bf16"].dtype == "bfloat16"
    assert student.kinds().meta["param"].is_exact_tensor is False
    assert got["nums"][:2] == [1, 2.5] and np.isnan(got["nums"][2]) and got["flag"] is True


def test_mutation_is_detected(student):
    values = Tensor(np.array([1.0, 2.0, 3.0], dtype=np.float32))
    assert student.scale_in_place(values).mutated == {"values": True}
    assert student.scale_copy(values).mutated == {"values": False}
    assert student.scale_copy(values, factor=3.0).mutated == {"values": False, "factor": False}
    assert student.append_to([1.0, 2.0]).mutated == {"items": True}
    assert student.append_to(items=[1.0]).mutated == {"items": True}


def test_seeded_calls_repeat_exactly(student):
    a = student.draw(4, seed=123).value
    b = student.draw(4, seed=123).value
    c = student.draw(4, seed=124).value
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()


# --- student errors ------------------------------------------------------------------------

def test_student_exception_shows_student_frames_only(student):
    with pytest.raises(StudentError) as err:
        student.outer(3)
    e = err.value
    assert (e.type, e.message, e.stage) == ("ValueError", "bad n=3", "call")
    assert '<cell helpers_answer>", line ' in e.trace and "in outer" in e.trace
    assert "in inner" in e.trace and 'raise ValueError(f"bad n={n}")' in e.trace
    assert "worker.py" not in e.trace and "autograder" not in e.trace
    assert str(e).startswith("outer raised ValueError: bad n=3\n")


def test_recursion_error_is_caught_with_a_short_trace(student, worker):
    pid = worker.pid
    with pytest.raises(StudentError) as err:
        student.deep(0)
    assert err.value.type == "RecursionError"
    assert "more frames" in err.value.trace and err.value.trace.count("in deep") <= 8
    assert student.identity(1).value == 1 and worker.pid == pid


def test_backward_failure_is_reported_as_such(student):
    with pytest.raises(StudentError) as err:
        student.vector(Tensor(np.ones(3, dtype=np.float32), True, "x"),
                       backward=Backward(wrt=["x"]))
    assert err.value.stage == "backward" and err.value.type == "RuntimeError"
    assert "scalar" in err.value.message
    with pytest.raises(StudentError, match="not a tensor"):
        student.identity(1.0, backward=Backward())


def test_harness_dispatch_errors_are_kit_errors(student):
    with pytest.raises(RuntimeError, match="ModuleNotFoundError"):
        student.harness("no_such_harness")
    with pytest.raises(RuntimeError, match="bad harness name"):
        student.harness("../suites")


def test_system_exit_in_a_call_does_not_end_the_worker(student, worker):
    pid = worker.pid
    with pytest.raises(StudentError) as err:
        student.leave(3)
    assert err.value.type == "SystemExit"
    assert worker.pid == pid and student.identity(2).value == 2


def test_print_flood_does_not_break_the_protocol(student, worker):
    assert student.flood(100_000).value == 100_000      # about 5 MB of output
    reinforce_check(student)
    out = worker.captured_output()
    assert len(out) < 8 * 1024 + 200
    assert "earlier bytes of output not kept" in out and "LAST LINE" in out
    assert "line 0099999" in out and "line 0000000" not in out


def test_junk_on_the_reply_channel_is_skipped_and_flagged(student, worker):
    assert student.noisy_channel().value == 7
    assert student.identity(5).value == 5
    codes = [f["code"] for f in worker.flags()]
    assert "protocol_junk" in codes


# --- deaths, timeouts, restarts ----------------------------------------------------------------

def test_infinite_loop_times_out_and_the_next_call_restarts(student, worker):
    pid = worker.pid
    started = time.monotonic()
    with pytest.raises(WorkerTimeout):
        student.spin(timeout=1.5)
    assert time.monotonic() - started < 1.5 + allowance()     # the timeout is enforced
    assert not os.path.exists(f"/proc/{pid}") or _is_zombie(pid)
    reinforce_check(student)                      # a fresh worker, cells reloaded
    assert worker.pid != pid
    assert "call_timeout" in [f["code"] for f in worker.flags()]
    assert worker.load_reply["defined"]["reinforce_loss"] == "(log_probs, rewards)"


def test_os_exit_is_a_death_then_a_restart(student, worker):
    pid = worker.pid
    with pytest.raises(WorkerDied) as err:
        student.hard_exit(7)
    assert err.value.code == 7 and "exited with code 7" in str(err.value)
    assert "worker_died" in [f["code"] for f in worker.flags()]
    assert student.identity(3).value == 3 and worker.pid != pid


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# --- the zygote ------------------------------------------------------------------------------

ZYGOTE_CELLS = [{"id": "state_answer", "source": textwrap.dedent("""
    import os, torch
    def remember(x):
        global MEMORY
        MEMORY = x
        with open("left-behind.txt", "w") as f:
            f.write(str(x))
        return os.getpid()

    def recall():
        return [globals().get("MEMORY"), os.path.exists("left-behind.txt"), os.getcwd()]

    def reinforce_loss(log_probs, rewards):
        return -(log_probs * rewards).mean()

    def spin():
        while True:
            pass

    def die_by(name):
        import signal
        os.kill(os.getpid(), getattr(signal, name))

    def allocate_terabyte():
        return torch.empty(2**40, dtype=torch.uint8)
    """)}]


@pytest.fixture(scope="module")
def zygote():
    z = ZygoteHandle(limits(), backend="unsafe", device="cpu")
    z.start()
    yield z
    z.close()


def test_zygote_is_single_threaded_and_not_dumpable(zygote):
    info = zygote.ping()
    assert info["dumpable"] == 0 and info["threads"] == 1


def test_zygote_forks_independent_children(zygote):
    first = zygote.spawn_worker()
    started = time.monotonic()
    first.load(ZYGOTE_CELLS)
    one = StudentProxy(first)
    pid1 = one.remember("secret of student one").value
    assert one.recall().value[:2] == ["secret of student one", True]
    reinforce_check(one)

    second = zygote.spawn_worker()
    # no import torch per child: a fork costs a fraction of the zygote's own start
    assert second.spawn_seconds < zygote.spawn_seconds / 3, \
        (second.spawn_seconds, zygote.spawn_seconds)
    second.load(ZYGOTE_CELLS)
    two = StudentProxy(second)
    memory, file_left, cwd = two.recall().value
    assert memory is None and file_left is False
    assert two.remember("two").value != pid1
    assert not os.path.exists(f"/proc/{pid1}") or _is_zombie(pid1)   # the first child is gone
    with pytest.raises(WorkerDied):                    # and its handle was closed
        one.recall()
    reinforce_check(two)
    assert time.monotonic() - started < allowance(8)     # two forks, no cold start


def test_zygote_child_timeout_restarts_from_the_zygote(zygote):
    w = zygote.spawn_worker()
    w.load(ZYGOTE_CELLS)
    student = StudentProxy(w)
    pid = w.pid
    with pytest.raises(WorkerTimeout):
        student.spin(timeout=1.0)
    started = time.monotonic()
    reinforce_check(student)
    # restarted by a fork: a cold start (import torch) would take about the zygote's start
    assert w.pid != pid and time.monotonic() - started < zygote.spawn_seconds, \
        (time.monotonic() - started, zygote.spawn_seconds)


@pytest.mark.parametrize("signal_name, flag", [("SIGXCPU", "limit_cpu"),
                                               ("SIGKILL", "limit_memory"),
                                               ("SIGSEGV", "worker_died")])
def test_death_by_signal_is_named_and_flagged(zygote, signal_name, flag):
    w = zygote.spawn_worker()
    w.load(ZYGOTE_CELLS)
    with pytest.raises(WorkerDied) as err:
        StudentProxy(w).die_by(signal_name)
    assert err.value.signal_name == signal_name
    assert [f["code"] for f in w.flags()] == [flag]
    reinforce_check(StudentProxy(w))               # restarted from the zygote


def test_out_of_memory_is_a_student_error_and_a_flag(zygote):
    w = zygote.spawn_worker()
    w.load(ZYGOTE_CELLS)
    with pytest.raises(StudentError, match="allocate"):
        StudentProxy(w).allocate_terabyte()
    assert [f["code"] for f in w.flags()] == ["limit_memory"]


def test_hanging_cell_and_the_wall_clock_budget(zygote):
    w = zygote.spawn_worker(limits(wall_seconds=6, call_timeout_seconds=1))
    reply = w.load([{"id": "hangs", "source": "while True:\n    pass\n"}] + ZYGOTE_CELLS)
    (err,) = reply["cell_errors"]
    assert (err["cell"], err["type"], err["line"] in (1, 2)) == ("hangs", "CellTimeout", True)
    assert err["message"] == "the cell did not finish within 1 s"
    assert "spin" in reply["defined"]                 # the later cells still loaded
    with pytest.raises(WorkerTimeout, match="6 s"):
        StudentProxy(w).spin(timeout=30)
    assert "limit_wall" in [f["code"] for f in w.flags()]
    with pytest.raises(WorkerTimeout):            # the budget stays used up
        StudentProxy(w).reinforce_loss(1.0, 1.0)


# --- inside the real sandbox -----------------------------------------------------------------

def test_worker_in_the_sandbox_serves_the_reinforce_check():
    backend = backends.resolve_backend("auto")
    assert backend in ("bwrap", "fallback")
    with Worker(limits(), backend=backend, device="cpu") as w:
        w.load([{"id": "c", "source": CELLS["imports"] + textwrap.dedent(
            CELLS["reinforce_loss_answer"])}])
        student = StudentProxy(w)
        reinforce_check(student)
        assert w.backend == backend and w.flags() == []
