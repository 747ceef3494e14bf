"""The sandbox backends: how a worker is launched and what confines it.

Each test starts a tiny ``python -c`` program as the "worker" with ``command_spec`` (the same
launcher, bubblewrap command line and stub as ``launch_spec``), exactly as the client does, and
checks from inside what the program can and cannot do. One test imports torch under the default
limits. Nothing here needs a GPU: the CUDA command line is checked with a fake device list.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from autograder.sandbox import backends
from autograder.sandbox.backends import (
    BackendUnavailable, LaunchSpec, command_spec, describe, fallback_exposures, launch_spec,
    resolve_backend, seccomp_program, termination_signal)
from autograder.sandbox.limits import MIB, Limits, rlimits, scratch_bytes
from autograder.sandbox.process_tree import descendants, proc_state

REPO = backends.KIT_ROOT
PY = sys.executable
ROOT = os.geteuid() == 0
HAVE_BWRAP = shutil.which("bwrap") is not None
needs_bwrap = pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap is not installed here")
needs_root = pytest.mark.skipif(not ROOT, reason="only a root grader can switch uids")

PRELUDE = """
import json, os, sys
def reply(value):
    os.write(4, json.dumps(value).encode())
def status():
    return dict(l.split(":\\t", 1)
                for l in open("/proc/self/status").read().splitlines() if ":\\t" in l)
"""


@dataclass
class Run:
    rc: int
    out: str
    err: str
    reply: object
    spec: LaunchSpec

    @property
    def signal(self):
        return termination_signal(self.backend, self.rc)

    backend: str = ""


def run(backend: str, code: str, *, limits: Limits = Limits(), python: str = PY,
        device: str = "cpu", allow_fork: bool = False, request: bytes = b"",
        timeout: float = 60, during=None) -> Run:
    """Start ``python -c PRELUDE+code`` like the client does; return its exit, output, reply.

    The protocol pipes sit at high descriptor numbers in the parent, so arriving as 3 and 4
    proves the launcher moved them. ``during(proc)`` runs while the worker is alive.
    """
    scratch = tempfile.mkdtemp(prefix="sandbox-test-")
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    high = []
    for fd, target in ((req_r, 60), (rep_w, 61)):
        os.dup2(fd, target, inheritable=False)
        os.close(fd)
        high.append(target)
    req_r, rep_w = high
    chunks: list[bytes] = []
    try:
        spec = command_spec(backend, python=python, python_args=["-c", PRELUDE + code],
                            limits=limits, device=device, fds=(req_r, rep_w),
                            scratch_dir=scratch, allow_fork=allow_fork)
        proc = subprocess.Popen(spec.argv, env=spec.env, preexec_fn=spec.preexec_fn,
                                pass_fds=spec.pass_fds, cwd=spec.cwd, start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        os.close(req_r)
        os.close(rep_w)
        req_r = rep_w = -1
        reader = threading.Thread(
            target=lambda: chunks.extend(iter(lambda: os.read(rep_r, 1 << 16), b"")))
        reader.start()
        if request:
            os.write(req_w, request)
        os.close(req_w)
        req_w = -1
        if during is not None:
            during(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        reader.join(10)
    finally:
        for fd in (req_r, req_w, rep_r, rep_w):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(scratch, ignore_errors=True)
    data = b"".join(chunks)
    return Run(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"),
               json.loads(data) if data else None, spec, backend)


def ok(r: Run):
    assert r.rc == 0, f"worker failed ({r.rc}): {r.err[-2000:]}"
    return r.reply


def fallback_python() -> str | None:
    """An interpreter an unprivileged uid can run (the fallback needs one)."""
    for py in (PY, "/usr/bin/python3"):
        if os.path.exists(py) and backends._other_blocked(os.path.realpath(py)) is None:
            return py
    return None


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemAvailable")


# --- choosing a backend ----------------------------------------------------------------------

@needs_bwrap
def test_auto_resolves_to_bwrap_here():
    assert resolve_backend("auto") == "bwrap"
    assert resolve_backend("bwrap") == "bwrap"


def test_resolve_named_backends():
    assert resolve_backend("unsafe") == "unsafe"
    assert resolve_backend("trusted") == "trusted"
    with pytest.raises(BackendUnavailable, match="unknown sandbox"):
        resolve_backend("docker")


def test_resolve_fallback_says_why_it_cannot_run():
    blocked = backends._other_blocked(os.path.realpath(PY))
    if ROOT and blocked is None:
        assert resolve_backend("fallback") == "fallback"
    else:
        with pytest.raises(BackendUnavailable) as info:
            resolve_backend("fallback")
        assert ("not root" in str(info.value)) if not ROOT else blocked in str(info.value)


def test_describe_every_backend():
    for name in backends.BACKENDS:
        line = describe(name)
        assert line and "\n" not in line
    assert "no network" in describe("bwrap")
    assert "NO SANDBOX" in describe("unsafe")
    with pytest.raises(ValueError):
        describe("auto")


def test_termination_signal():
    assert termination_signal("unsafe", -signal.SIGXCPU) == signal.SIGXCPU
    assert termination_signal("bwrap", 128 + signal.SIGKILL) == signal.SIGKILL
    assert termination_signal("fallback", 137) is None
    assert termination_signal("bwrap", 0) is None and termination_signal("bwrap", None) is None


# --- the spec itself -------------------------------------------------------------------------

def _bwrap_args(spec: LaunchSpec) -> list[str]:
    return json.loads(spec.argv[-1])["argv"]


def _triples(args: list[str], flag: str) -> list[tuple[str, str]]:
    return [(args[i + 1], args[i + 2]) for i, a in enumerate(args) if a == flag]


@needs_bwrap
def test_launch_spec_runs_the_worker_module_through_the_launcher(tmp_path):
    spec = launch_spec("bwrap", python=PY, worker_args=["--fds", "3,4"], limits=Limits(),
                       device="cpu", fds=(7, 9), scratch_dir=str(tmp_path))
    assert spec.preexec_fn is None and spec.pass_fds == (7, 9) and spec.cwd == str(tmp_path)
    assert spec.scratch_dir == "/tmp"
    stub = json.loads(_bwrap_args(spec)[-1])
    assert stub["argv"] == [PY, "-m", "autograder.sandbox.worker", "--fds", "3,4"]
    assert stub["nproc"] == Limits().max_processes
    args = _bwrap_args(spec)
    for flag in ("--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                 "--unshare-cgroup", "--die-with-parent", "--new-session"):
        assert flag in args
    kit = {dest for _, dest in _triples(args, "--ro-bind") if dest.startswith("/kit/")}
    assert kit == {"/kit/autograder/__init__.py", "/kit/autograder/sandbox",
                   "/kit/autograder/harness/__init__.py", "/kit/autograder/harness/isolated.py"}
    sources = [src for src, _ in _triples(args, "--ro-bind")]
    assert not any(backends._within(str(REPO), s) and not s.startswith(str(REPO / ".venv"))
                   and not s.startswith(str(REPO / "autograder")) for s in sources)


def test_environment_is_clean(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "1048576")
    monkeypatch.setenv("GRADER_SECRET", "do-not-leak")
    spec = command_spec("unsafe", python=PY, python_args=["-c", "pass"], limits=Limits(),
                        device="cpu", fds=(7, 9), scratch_dir=str(tmp_path))
    env = spec.env
    assert env["PATH"] == "/usr/bin:/bin"
    assert env["HOME"] == env["TMPDIR"] == str(tmp_path)
    for name, value in dict(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg",
                            PYTHONDONTWRITEBYTECODE="1", PYTHONNOUSERSITE="1",
                            CUDA_VISIBLE_DEVICES="", OPENBLAS_CORETYPE="Haswell",
                            OPENBLAS_L2_SIZE="1048576", PYTHONPATH=str(REPO)).items():
        assert env[name] == value, name
    assert "GRADER_SECRET" not in env and "GRADER_SECRET" not in " ".join(spec.argv)


def test_the_trusted_worker_has_no_cpu_time_limit_and_the_student_s_has(tmp_path):
    """The trusted worker serves a whole cohort: a lifetime CPU limit would end it every few
    dozen submissions (and could be run down by one student's replies for the next one)."""
    def rlimits_of(backend: str) -> dict:
        spec = command_spec(backend, python=sys.executable, python_args=["-c", "pass"],
                            limits=Limits(), device="cpu", fds=(0, 1), scratch_dir=str(tmp_path))
        return json.loads(spec.argv[-1])["rlimits"]

    assert "RLIMIT_CPU" not in rlimits_of("trusted")
    assert rlimits_of("unsafe")["RLIMIT_CPU"][0] == Limits().cpu_seconds
    assert rlimits_of("trusted")["RLIMIT_AS"] == rlimits_of("unsafe")["RLIMIT_AS"]


def test_rlimit_values():
    lim = Limits(cpu_seconds=120, memory_mb=3072, max_processes=64, max_open_files=256,
                 max_file_mb=64)
    cpu = rlimits(lim)
    assert cpu["RLIMIT_CPU"][0] == 120 < cpu["RLIMIT_CPU"][1] <= 125
    assert cpu["RLIMIT_AS"] == (3072 * MIB,) * 2 and "RLIMIT_DATA" not in cpu
    assert cpu["RLIMIT_NPROC"] == (64, 64) and cpu["RLIMIT_NOFILE"] == (256, 256)
    assert cpu["RLIMIT_FSIZE"] == (64 * MIB,) * 2 and cpu["RLIMIT_CORE"] == (0, 0)
    cuda = rlimits(lim, device="cuda")
    assert "RLIMIT_AS" not in cuda and cuda["RLIMIT_DATA"] == (3072 * MIB,) * 2
    assert scratch_bytes(lim) == 256 * MIB


def test_gpu_device_discovery(tmp_path):
    for name in ("nvidia0", "nvidiactl", "nvidia-uvm", "null", "sda"):
        (tmp_path / name).touch()
    (tmp_path / "nvidia-caps").mkdir()
    (tmp_path / "dri").mkdir()
    found = backends.gpu_device_paths(str(tmp_path))
    assert found == sorted(str(tmp_path / n) for n in
                           ("dri", "nvidia-caps", "nvidia-uvm", "nvidia0", "nvidiactl"))
    assert backends.gpu_device_paths(str(tmp_path / "missing")) == []


@needs_bwrap
def test_cuda_command_line_binds_gpu_devices(tmp_path, monkeypatch):
    fake = ["/dev/dri", "/dev/nvidia-uvm", "/dev/nvidia0", "/dev/nvidiactl"]
    monkeypatch.setattr(backends, "gpu_device_paths", lambda dev_dir="/dev": fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    spec = command_spec("bwrap", python=PY, python_args=["-c", "pass"], limits=Limits(),
                        device="cuda", fds=(7, 9), scratch_dir=str(tmp_path))
    args = _bwrap_args(spec)
    assert _triples(args, "--dev-bind") == [(d, d) for d in fake]
    assert args.index("--dev") < args.index("--dev-bind")  # over the fresh /dev, not under it
    assert ("/sys/devices", "/sys/devices") in _triples(args, "--ro-bind-try")
    assert spec.env["CUDA_VISIBLE_DEVICES"] == "1"
    cfg = json.loads(spec.argv[-1])
    assert "RLIMIT_DATA" in cfg["rlimits"] and "RLIMIT_AS" not in cfg["rlimits"]

    cpu = command_spec("bwrap", python=PY, python_args=["-c", "pass"], limits=Limits(),
                       device="cpu", fds=(7, 9), scratch_dir=str(tmp_path))
    assert _triples(_bwrap_args(cpu), "--dev-bind") == []
    assert cpu.env["CUDA_VISIBLE_DEVICES"] == ""


@needs_bwrap
def test_cuda_sandbox_starts_with_a_bound_device(monkeypatch):
    # /dev/zero stands in for a GPU node: the bind must work on top of the read-only /dev.
    monkeypatch.setattr(backends, "gpu_device_paths", lambda dev_dir="/dev": ["/dev/zero"])
    r = ok(run("bwrap", """
import resource
with open("/dev/zero", "rb") as f:
    zeros = f.read(4)
reply([zeros.hex(), resource.getrlimit(resource.RLIMIT_DATA)[0],
       resource.getrlimit(resource.RLIMIT_AS)[0], os.path.isdir("/sys/devices/system/cpu")])
""", device="cuda"))
    assert r == ["00000000", Limits().memory_mb * MIB, -1, True]


def test_python_env_containing_the_kit_is_refused(monkeypatch):
    prefix = backends.python_dirs(PY)[0]
    monkeypatch.setattr(backends, "KIT_ROOT", Path(prefix) / "lib")
    monkeypatch.setattr(backends, "_prefix_cache", {})
    with pytest.raises(BackendUnavailable, match="contains the kit"):
        backends.python_dirs(PY)


def test_seccomp_program_shape():
    for machine in ("x86_64", "aarch64"):
        for allow_fork in (False, True):
            prog = seccomp_program(machine=machine, allow_fork=allow_fork)
            assert len(prog) % 8 == 0 and 0 < len(prog) // 8 < 256
    with pytest.raises(BackendUnavailable):
        seccomp_program(machine="riscv64")


# --- inside bubblewrap -----------------------------------------------------------------------

@needs_bwrap
def test_fds_3_and_4_arrive_and_nothing_else():
    r = ok(run("bwrap", """
line = os.read(3, 100)
reply({"got": line.decode(), "fds": sorted(int(x) for x in os.listdir("/proc/self/fd"))})
""", request=b"ping\n"))
    assert r["got"] == "ping\n"
    assert r["fds"] == [0, 1, 2, 3, 4, 5]  # 5 is listdir's own handle on /proc/self/fd


@needs_bwrap
def test_no_network():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        r = ok(run("bwrap", f"""
import socket
out = {{}}
for name, addr in (("loopback", ("127.0.0.1", {port})), ("internet", ("1.1.1.1", 53))):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect(addr)
        out[name] = "connected"
    except OSError as e:
        out[name] = type(e).__name__
out["interfaces"] = [n for _, n in socket.if_nameindex()]
reply(out)
"""))
    finally:
        server.close()
    assert r["loopback"] != "connected" and r["internet"] != "connected"
    assert r["interfaces"] == ["lo"]


@needs_bwrap
def test_own_pid_namespace():
    r = ok(run("bwrap", """
reply({"pid": os.getpid(), "ppid": os.getppid(),
       "procs": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
       "hostname": os.uname().nodename})
"""))
    assert r["ppid"] == 1 and r["procs"] == [1, r["pid"]]
    assert os.getpid() not in r["procs"] or os.getpid() <= 2
    assert r["hostname"] == "sandbox"


@needs_bwrap
def test_unprivileged_uid_without_capabilities():
    r = ok(run("bwrap", "reply([os.getresuid(), os.getresgid(), os.getgroups(), status()])"))
    uids, gids, groups, st = r
    expected = [backends.USERNS_UID] * 3
    if ROOT:
        assert uids[0] > backends.SANDBOX_UID_BASE and uids == [uids[0]] * 3
        expected = uids
    assert uids == expected and gids == expected and groups == []
    for cap in ("CapPrm", "CapEff", "CapAmb"):
        assert int(st[cap], 16) == 0, cap
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2"


@needs_bwrap
def test_only_the_kit_runtime_and_python_are_visible(tmp_path):
    course = tmp_path / "course"
    course.mkdir()
    (course / "gradebook.db").write_text("grades")
    os.chmod(tmp_path, 0o755)
    secret_paths = [str(course / "gradebook.db"), str(course), str(REPO / "source"),
                    str(REPO / "autograder" / "suites"), str(REPO / "nbgrader_config.py"),
                    str(REPO / "assignments"), "/kit/assignments",
                    "/kit/autograder/harness/relay.py", "/kit/autograder/plugins.py",
                    str(REPO / "gradebook.db"), str(REPO / ".git"), str(REPO / "tests"),
                    str(REPO / "solutions"), str(REPO / "submitted"), "/root/.bashrc",
                    "/etc/shadow", "/home", "/var"]
    r = ok(run("bwrap", f"""
import autograder, autograder.harness, autograder.sandbox.limits
try:
    import autograder.suites
    suites = "imported"
except ImportError:
    suites = "missing"
reply({{"visible": [p for p in {secret_paths!r} if os.path.lexists(p)],
        "tmp": os.listdir("/tmp"), "kit": autograder.__file__, "suites": suites,
        "repo_listing": os.listdir({str(REPO)!r}) if os.path.isdir({str(REPO)!r}) else None}})
"""))
    assert r["visible"] == []
    # The host's /tmp is not the worker's /tmp: at most the folder that leads to the kit's own
    # virtualenv is there, when the kit itself was cloned under /tmp.
    venv_under_tmp = [Path(sys.prefix).relative_to("/tmp").parts[0]] \
        if Path(sys.prefix).is_relative_to("/tmp") else []
    assert r["tmp"] == venv_under_tmp
    assert r["kit"] == "/kit/autograder/__init__.py" and r["suites"] == "missing"
    assert r["repo_listing"] in (None, [".venv"])   # at most the virtualenv, if it lives there


@needs_bwrap
def test_writes_only_inside_scratch():
    # A probe name no checkout is called: the kit may itself live under /tmp (a clone there).
    r = ok(run("bwrap", """
results = {}
x = "ag-write-probe"
for path in ["/" + x, "/etc/" + x, "/usr/" + x, "/dev/" + x, "/dev/shm/" + x,
             "/kit/autograder/" + x, "/proc/sys/kernel/hostname", sys.prefix + "/" + x,
             "/tmp/" + x, x]:
    try:
        with open(path, "w") as f:
            f.write("1")
        results[path] = "written"
    except OSError as e:
        results[path] = e.errno
vfs = os.statvfs("/tmp")
reply({"results": results, "cwd": os.getcwd(), "home": os.environ["HOME"],
       "size": vfs.f_blocks * vfs.f_frsize})
"""))
    written = {p for p, v in r["results"].items() if v == "written"}
    assert written == {"/tmp/ag-write-probe", "ag-write-probe"}
    assert r["cwd"] == r["home"] == "/tmp"
    assert r["size"] == scratch_bytes(Limits())


@needs_bwrap
def test_memory_limit_stops_a_huge_allocation():
    r = ok(run("bwrap", """
try:
    bytearray(50 << 30)
    reply("allocated")
except MemoryError:
    reply("MemoryError")
"""))
    assert r == "MemoryError"


@needs_bwrap
def test_memory_bomb_stays_within_its_limit():
    limits = Limits(memory_mb=512)
    before = mem_available()
    lowest = [before]

    def watch(proc):
        while proc.poll() is None:
            lowest[0] = min(lowest[0], mem_available())
            time.sleep(0.02)

    r = ok(run("bwrap", """
chunks = []
try:
    while True:
        chunks.append(b"x" * (32 << 20))      # touched memory, 32 MiB at a time
except MemoryError:
    pass
reply({"chunks": len(chunks), "hwm_kb": int(status()["VmHWM"].split()[0])})
""", limits=limits, during=watch))
    assert 0 < r["chunks"] * 32 < 512
    assert r["hwm_kb"] * 1024 <= 512 * MIB
    assert before - lowest[0] < 512 * MIB + 512 * MIB  # the worker's cap plus others' noise


@needs_bwrap
def test_fork_bomb_is_refused():
    r = ok(run("bwrap", """
import subprocess
out = []
for attempt in (os.fork, lambda: subprocess.run(["/bin/true"]),
                lambda: os.posix_spawn("/bin/true", ["true"], {})):
    try:
        pid = attempt()
        if pid == 0:
            os._exit(0)
        out.append("started")
    except OSError as e:
        out.append(e.errno)
reply(out)
"""))
    assert r == [errno.EPERM] * 3


@needs_bwrap
def test_rlimit_nproc_bounds_a_fork_bomb_when_forks_are_allowed():
    limits = Limits(max_processes=16)
    r = ok(run("bwrap", """
import ctypes, time
children = []
try:
    for _ in range(200):
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
    stopped = "never"
except BlockingIOError:
    stopped = "EAGAIN"
libc = ctypes.CDLL(None, use_errno=True)
unshare = libc.unshare(0x10000000)   # CLONE_NEWUSER: refused even when forks are allowed
reply({"children": len(children), "stopped": stopped, "unshare_errno": ctypes.get_errno()})
""", limits=limits, allow_fork=True))
    assert r["stopped"] == "EAGAIN" and 0 < r["children"] < 16
    assert r["unshare_errno"] == errno.EPERM


@needs_bwrap
def test_rlimit_nproc_bounds_threads():
    r = ok(run("bwrap", """
import threading
stop = threading.Event()
threads = []
try:
    for _ in range(500):
        t = threading.Thread(target=stop.wait)
        t.start()
        threads.append(t)
except RuntimeError:
    pass
stop.set()
reply(len(threads))
""", limits=Limits(max_processes=24)))
    assert 10 < r < 24


@needs_bwrap
def test_file_size_and_scratch_size_are_capped():
    limits = Limits(max_file_mb=8)
    r = ok(run("bwrap", """
out = {}
try:
    with open("big", "wb") as f:
        f.write(b"x" * (9 << 20))
    out["big"] = "written"
except OSError as e:
    out["big"] = e.errno
total = 0
try:
    for i in range(100):
        with open(f"part{i}", "wb") as f:
            f.write(b"x" * (4 << 20))
        total += 4 << 20
except OSError as e:
    out["fill"] = e.errno
out["total"] = total
reply(out)
""", limits=limits))
    assert r["big"] == errno.EFBIG
    assert r["fill"] == errno.ENOSPC and r["total"] <= scratch_bytes(limits)


@needs_bwrap
def test_cpu_limit_sends_sigxcpu_then_sigkill():
    r = run("bwrap", "while True: pass", limits=Limits(cpu_seconds=1))
    assert r.signal == signal.SIGXCPU
    r = run("bwrap", """
import signal
signal.signal(signal.SIGXCPU, signal.SIG_IGN)
while True: pass
""", limits=Limits(cpu_seconds=1))
    assert r.signal == signal.SIGKILL


@needs_bwrap
def test_seccomp_refuses_memory_and_kernel_escape_hatches():
    r = ok(run("bwrap", """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
out = {}
try:
    os.memfd_create("x")
    out["memfd"] = "created"
except OSError as e:
    out["memfd"] = e.errno
def call(name, *args):
    ctypes.set_errno(0)
    rc = getattr(libc, name)(*args)
    return "ok" if rc >= 0 else ctypes.get_errno()
out["shmget"] = call("shmget", 0, 1 << 20, 0o1600)      # IPC_PRIVATE, IPC_CREAT | 0600
out["unshare"] = call("unshare", 0x20000)                 # CLONE_NEWNS
out["ptrace"] = call("ptrace", 0, 0, 0, 0)               # PTRACE_TRACEME
reply(out)
"""))
    assert r == {"memfd": errno.EPERM, "shmget": errno.EPERM, "unshare": errno.EPERM,
                 "ptrace": errno.EPERM}


@needs_bwrap
def test_killing_the_launched_process_kills_the_whole_sandbox():
    seen = {}

    def kill_it(proc):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not descendants(proc.pid):
            time.sleep(0.05)
        while time.monotonic() < deadline and len(descendants(proc.pid)) < 2:
            time.sleep(0.05)   # bwrap's init and the worker
        seen["before"] = descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.5)
        seen["after"] = {p for p in seen["before"] if proc_state(p) not in (None, "Z")}

    run("bwrap", "import time; time.sleep(60)", during=kill_it)
    assert seen["before"] and seen["after"] == set()


@needs_bwrap
def test_torch_worker_fits_the_default_limits():
    r = ok(run("bwrap", """
import torch
torch.manual_seed(0)
x = torch.randn(64, 32)
lin = torch.nn.Linear(32, 4)
opt = torch.optim.Adam(lin.parameters(), lr=1e-2)
for _ in range(20):
    loss = torch.log_softmax(lin(x), -1).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
reply({"vmpeak_kb": int(status()["VmPeak"].split()[0]), "loss": float(loss)})
""", timeout=300))
    assert r["vmpeak_kb"] * 1024 < Limits().memory_mb * MIB * 0.5   # ample headroom


@needs_root
@needs_bwrap
def test_bwrap_also_works_for_a_grader_that_is_not_root():
    py = "/usr/bin/python3"
    if backends._other_blocked(py) or backends._other_blocked(str(REPO / "autograder")):
        pytest.skip("no Python and kit readable by an unprivileged uid on this machine")
    home = Path(tempfile.mkdtemp(prefix="sandbox-test-"))
    os.chmod(home, 0o755)
    script = home / "grader.py"
    script.write_text(f"""
import os, subprocess, sys, tempfile, json
sys.path.insert(0, {str(REPO)!r})
from autograder.sandbox.backends import command_spec
from autograder.sandbox.limits import Limits
scratch = tempfile.mkdtemp()
r, w = os.pipe()
code = ("import os, json, resource; os.write(4, json.dumps([os.getresuid(), "
        "resource.getrlimit(resource.RLIMIT_NPROC)[0], "
        "os.path.exists('/kit/autograder/sandbox')]).encode())")
spec = command_spec("bwrap", python={py!r}, python_args=["-c", code], limits=Limits(),
                    device="cpu", fds=(r, w), scratch_dir=scratch)
p = subprocess.Popen(spec.argv, env=spec.env, pass_fds=spec.pass_fds, cwd=spec.cwd,
                     start_new_session=True, stdin=subprocess.DEVNULL)
os.close(w)
print(os.read(r, 1000).decode(), p.wait())
""")
    os.chmod(script, 0o644)

    def become_nobody():
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)

    try:
        out = subprocess.run([py, str(script)], preexec_fn=become_nobody, capture_output=True,
                             text=True, timeout=60, cwd="/")
    finally:
        shutil.rmtree(home)
    assert out.returncode == 0, out.stderr
    reply, rc = out.stdout.strip().rsplit(" ", 1)
    assert rc == "0", out.stderr
    assert json.loads(reply) == [[65534] * 3, Limits().max_processes, True]


# --- the fallback, unsafe and trusted backends -------------------------------------------------

@needs_root
def test_fallback_drops_uid_and_applies_the_same_limits(tmp_path):
    py = fallback_python()
    if py is None:
        pytest.skip("no Python interpreter here is runnable by an unprivileged uid")
    secret = tmp_path / "secret"
    secret.mkdir(mode=0o700)
    (secret / "answers.txt").write_text("42")
    os.chmod(tmp_path, 0o755)
    limits = Limits(memory_mb=1024, max_file_mb=8, max_processes=32)
    r = run("fallback", f"""
import resource
out = {{"uid": os.getresuid(), "gid": os.getresgid(), "groups": os.getgroups(),
       "cwd": os.getcwd(), "cwd_owner": os.stat(".").st_uid,
       "cwd_mode": os.stat(".").st_mode & 0o777,
       "limits": {{n: list(resource.getrlimit(getattr(resource, n))) for n in
                  ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_FSIZE",
                   "RLIMIT_CORE")}},
       "seccomp": status()["Seccomp"], "cap": int(status()["CapEff"], 16)}}
import autograder
out["kit"] = autograder.__file__
for name, action in (("fork", os.fork),
                     ("secret", lambda: open({str(secret / 'answers.txt')!r}).read()),
                     ("write_outside", lambda: open({str(tmp_path / 'x')!r}, "w"))):
    try:
        if action() == 0:
            os._exit(0)
        out[name] = "allowed"
    except OSError as e:
        out[name] = e.errno
try:
    bytearray(50 << 30)
except MemoryError:
    out["memory"] = "MemoryError"
try:
    open("big", "wb").write(b"x" * (9 << 20))
except OSError as e:
    out["big"] = e.errno
reply(out)
""", python=py, limits=limits)
    o = ok(r)
    uid = o["uid"][0]
    assert uid > backends.SANDBOX_UID_BASE and o["uid"] == [uid] * 3 == o["gid"]
    assert o["groups"] == [] and o["cap"] == 0 and o["seccomp"] == "2"
    assert o["cwd_owner"] == uid and o["cwd_mode"] == 0o700 and o["cwd"] == r.spec.scratch_dir
    assert r.spec.scratch_dir == r.spec.cwd + "/work"     # the kit copy lies outside it
    expected = rlimits(limits)
    for name in ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_FSIZE",
                 "RLIMIT_CORE"):
        assert tuple(o["limits"][name]) == expected[name], name
    assert o["kit"].startswith(r.spec.cwd + "/.kit/")   # a copy: the course dir is not needed
    assert o["fork"] == errno.EPERM and o["secret"] == errno.EACCES
    assert o["write_outside"] == errno.EACCES
    assert o["memory"] == "MemoryError" and o["big"] == errno.EFBIG


@needs_root
def test_fallback_cpu_limit():
    py = fallback_python()
    if py is None:
        pytest.skip("no Python interpreter here is runnable by an unprivileged uid")
    r = run("fallback", "while True: pass", python=py, limits=Limits(cpu_seconds=1))
    assert r.signal == signal.SIGXCPU


@pytest.mark.parametrize("backend", ["unsafe", "trusted"])
def test_unsafe_and_trusted_keep_the_uid_but_apply_rlimits(backend):
    limits = Limits(memory_mb=1024, max_file_mb=8)
    r = ok(run(backend, """
import resource
reply({"uid": os.getuid(), "seccomp": status()["Seccomp"],
       "limits": {n: list(resource.getrlimit(getattr(resource, n))) for n in
                  ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_CORE")},
       "fds": sorted(int(x) for x in os.listdir("/proc/self/fd"))})
""", limits=limits))
    assert r["uid"] == os.getuid() and r["seccomp"] == "0"
    expected = rlimits(limits)
    if backend == "trusted":   # no CPU-time limit of its own: the grader's, inherited
        import resource

        expected["RLIMIT_CPU"] = resource.getrlimit(resource.RLIMIT_CPU)
    for name, value in r["limits"].items():
        assert tuple(value) == tuple(expected[name]), name
    assert r["fds"] == [0, 1, 2, 3, 4, 5]


def test_fallback_exposures_lists_readable_instructor_files():
    top = Path(tempfile.mkdtemp(prefix="sandbox-test-"))   # /tmp: reachable by other users
    try:
        _check_exposures(top)
    finally:
        shutil.rmtree(top)


def _check_exposures(tmp_path: Path):
    course = tmp_path / "course"
    for d in ("source/ppo", "assignments/ppo", "submitted/s1/ppo", "release/ppo"):
        (course / d).mkdir(parents=True)
    (course / "source/ppo/ppo.ipynb").write_text("{}")
    (course / "assignments/ppo/test_x.py").write_text("")
    (course / "submitted/s1/ppo/ppo.ipynb").write_text("{}")
    (course / "gradebook.db").write_text("")
    (course / "nbgrader_config.py").write_text("")
    for p in [tmp_path, course, *course.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    os.chmod(course / "assignments", 0o700)
    os.chmod(course / "submitted", 0o711)             # not listable, but names can be guessed
    assert sorted(fallback_exposures(course, kit_root=tmp_path / "no-kit")) == [
        "gradebook.db", "nbgrader_config.py", "source", "submitted"]
    for rel in ("source", "submitted", "gradebook.db", "nbgrader_config.py"):
        subprocess.run(["chmod", "-R", "o-rwx", str(course / rel)], check=True)
    assert fallback_exposures(course, kit_root=tmp_path / "no-kit") == []
    os.chmod(course, 0o700)                            # or close the whole course directory
    for rel in ("source",):
        os.chmod(course / rel, 0o755)
    assert fallback_exposures(course, kit_root=tmp_path / "no-kit") == []
