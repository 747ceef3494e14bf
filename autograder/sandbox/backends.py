"""How a worker process is started and confined: ``bwrap``, ``fallback``, ``unsafe``, ``trusted``.

The worker handle asks for a ``LaunchSpec`` and starts it exactly so (``launch.popen_worker``)::

    spec = launch_spec(backend, python=..., worker_args=[...], limits=..., device="cpu",
                       fds=(request_read_fd, reply_write_fd), scratch_dir=...)
    subprocess.Popen(spec.argv, env=spec.env, preexec_fn=spec.preexec_fn, pass_fds=spec.pass_fds,
                     cwd=spec.cwd, start_new_session=True, stdin=DEVNULL, stdout=..., stderr=...)

Every backend first runs a small launcher (``python -I -S -c _LAUNCHER``, kit code, the grader's
own uid, no student code). It moves the two protocol descriptors to fds 3 (requests) and 4
(replies), applies the rlimits of ``limits.rlimits()``, and execs the next stage:

- ``bwrap``: bubblewrap, then a tiny stub inside the sandbox that sets RLIMIT_NPROC, drops to the
  sandbox uid (when the grader is root) and execs the worker. The worker sees: no network; its
  own PID, IPC, UTS, cgroup and mount namespaces; read-only ``/usr``, ``/lib*``, a few ``/etc``
  files, the Python environment of ``python`` (its prefixes, at the same paths) and the kit's
  runtime only (``runtime_paths()``: ``autograder/__init__.py``, ``autograder/sandbox/``, and
  of ``autograder/harness/`` its ``__init__.py`` and ``isolated.py``, at ``/kit``); ``/proc`` of
  its own PID namespace; a minimal ``/dev``; a private tmpfs of ``scratch_bytes(limits)`` at
  ``/tmp`` (cwd, HOME, TMPDIR). Everything else (``source/``, ``solutions/``, the assignments'
  folders ``assignments/`` with their suites and trainers, the gradebook, ``submitted/``,
  ``/root``, ...) does not exist in its view.
- ``fallback`` (where bubblewrap cannot run; needs root): the launcher drops to the sandbox uid
  itself. Only rlimits, the uid and the seccomp filter protect the machine; see
  ``fallback_exposures()`` for what the instructor must make unreadable.
- ``unsafe`` and ``trusted``: rlimits only, the grader's uid (``unsafe`` is reached only through
  the CLI's ``--unsafe-no-sandbox``; ``trusted`` runs the instructor's reference). ``trusted``
  has no CPU-time limit: it serves a whole cohort (its CPU seconds add up over every
  submission's training), and each of its requests is bounded by the parent's timeout instead.

Invariants of ``bwrap`` and ``fallback``:

- The worker never runs as uid 0 and holds no capabilities. When the grader is root its uid is
  ``SANDBOX_UID_BASE + <launcher pid>``: a uid no other live process has, so RLIMIT_NPROC, signals
  and ``/proc`` access never reach another worker. A zygote's children run as that uid +
  ``CHILD_UID_OFFSET`` (worker.py, class Zygote), so they cannot signal their zygote. When the
  grader is not root, bubblewrap maps
  the grader's uid to 65534 inside a user namespace.
- A seccomp filter (``seccomp_program()``) refuses new processes (threads are allowed), memfds,
  SysV shared memory, namespaces, ptrace, keyrings, io_uring, userfaultfd, bpf and perf events.
  With one process per worker RLIMIT_AS bounds its memory; the scratch tmpfs has a fixed size;
  the remaining writable places (``/``, ``/dev``) are read-only or not the worker's. So one worker
  holds at most about ``memory_mb + scratch`` of RAM.
- No descriptor of the grader reaches the worker except 0, 1, 2 (as Popen set them), 3 and 4.

``preexec_fn`` is always None: everything is done in the launcher, after exec, which is safe with
threads in the grader (a preexec_fn is not) and can move descriptors to 3 and 4 (Popen closes
descriptors after preexec_fn runs). Spawn workers from a thread that outlives them:
``--die-with-parent`` kills the sandbox when the thread that started it exits.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from autograder import ASSIGNMENTS_DIR
from autograder.sandbox.limits import Limits, rlimits, scratch_bytes

BACKENDS = ("bwrap", "fallback", "unsafe", "trusted")
WORKER_MODULE = "autograder.sandbox.worker"
KIT_ROOT = Path(__file__).resolve().parents[2]   # the directory that holds the autograder package
# The kit's runtime: what a student's worker imports (the protocol and worker, the harness
# package's helpers and the per-call helper ``isolated``); nothing of an assignment's folder.
KIT_FILES = ("autograder/__init__.py", "autograder/sandbox", "autograder/harness/__init__.py",
             "autograder/harness/isolated.py")
KIT_VIEW = "/kit"             # where the kit's runtime appears inside bubblewrap (PYTHONPATH)
SCRATCH_VIEW = "/tmp"         # the worker's private tmpfs inside bubblewrap
SANDBOX_UID_BASE = 1_900_000_000   # + launcher pid = the worker's uid and gid (grader is root)
# The worker's uid inside bubblewrap's user namespace (grader not root).
USERNS_UID = 65534
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
             "/etc/nsswitch.conf", "/etc/passwd", "/etc/group")
PASSTHROUGH_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
GPU_FRACTION_ENV = "AG_GPU_MEMORY_FRACTION"   # a CUDA worker's share of GPU memory (worker.py)
SENSITIVE = ("source", "solutions", ASSIGNMENTS_DIR, "autograder/suites", "tests", "submitted",
             "autograded", "feedback", "reports", "nbgrader_config.py", ".git")


class BackendUnavailable(Exception):
    """The requested sandbox cannot run here; the message says why and what would fix it."""


@dataclass
class LaunchSpec:
    """What ``subprocess.Popen`` needs to start one worker (see the module docstring).

    ``pass_fds`` are the grader's two protocol descriptors; the worker finds them as 3 and 4.
    ``cwd`` is where the launcher starts (the host scratch directory). ``scratch_dir`` is the
    worker's scratch as the worker sees it (its cwd, HOME and TMPDIR): ``/tmp`` under bubblewrap
    (a private tmpfs; the host directory stays empty), the host directory otherwise.
    """
    argv: list[str]
    env: dict[str, str]
    preexec_fn: Callable[[], None] | None
    pass_fds: tuple[int, ...]
    cwd: str
    scratch_dir: str


# --- seccomp ---------------------------------------------------------------------------------

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_SYSCALLS = {
    "x86_64": dict(clone=56, clone3=435, fork=57, vfork=58, memfd_create=319, memfd_secret=447,
                   shmget=29, unshare=272, setns=308, mount=165, ptrace=101,
                   process_vm_readv=310, process_vm_writev=311, keyctl=250, add_key=248,
                   request_key=249, io_uring_setup=425, io_uring_enter=426,
                   io_uring_register=427, userfaultfd=323, bpf=321, perf_event_open=298,
                   msgget=68, semget=64, mq_open=240),
    "aarch64": dict(clone=220, clone3=435, memfd_create=279, memfd_secret=447, shmget=194,
                    unshare=97, setns=268, mount=40, ptrace=117, process_vm_readv=270,
                    process_vm_writev=271, keyctl=219, add_key=217, request_key=218,
                    io_uring_setup=425, io_uring_enter=426, io_uring_register=427,
                    userfaultfd=282, bpf=280, perf_event_open=241, msgget=186, semget=190,
                    mq_open=180),
}
_DENIED = ("memfd_create", "memfd_secret", "shmget", "unshare", "setns", "mount", "ptrace",
           "process_vm_readv", "process_vm_writev", "keyctl", "add_key", "request_key",
           "io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd", "bpf",
           "perf_event_open", "msgget", "semget", "mq_open")
# msgget, semget, mq_open (with shmget and memfd): kernel objects that outlive the process and
# no file walk finds, so a worker may not make any (the fallback shares the host's IPC).
_CLONE_THREAD = 0x00010000
# NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
_CLONE_NEW_NAMESPACES = 0x7E020000
_EPERM, _ENOSYS = 1, 38
# BPF_LD|W|ABS, BPF_JMP|..|K, BPF_RET|K
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _KILL_PROCESS, _ERRNO = 0x7FFF0000, 0x80000000, 0x00050000


def seccomp_program(*, allow_fork: bool = False, machine: str | None = None) -> bytes:
    """The worker's seccomp filter as raw ``struct sock_filter`` bytes (8 bytes per instruction).

    Refused with EPERM: ``fork``/``vfork``/``clone`` without CLONE_THREAD (new processes; threads
    stay allowed) unless ``allow_fork``; ``clone`` with any namespace flag; and every call in
    ``_DENIED``. ``clone3`` gets ENOSYS (its flags are not visible to the filter; the C library
    then falls back to ``clone``). A call from another ABI (32-bit or x32) ends the process.
    Raises BackendUnavailable on an architecture without a syscall table here.
    """
    machine = machine or platform.machine()
    if machine not in _SYSCALLS:
        raise BackendUnavailable(f"no seccomp syscall table for {machine} (only x86_64, aarch64)")
    nr = _SYSCALLS[machine]
    prog: list[tuple[int, int, int, int]] = []

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> None:
        prog.append((code, jt, jf, k))

    op(_LD_ABS, 4)                                   # seccomp_data.arch
    op(_JEQ, _AUDIT_ARCH[machine], jt=1)
    op(_RET, _KILL_PROCESS)
    op(_LD_ABS, 0)                                   # seccomp_data.nr
    if machine == "x86_64":                          # x32 numbers carry bit 30
        op(_JGE, 0x40000000, jf=1)
        op(_RET, _ERRNO | _EPERM)
    op(_JEQ, nr["clone3"], jf=1)
    op(_RET, _ERRNO | _ENOSYS)
    if allow_fork:
        op(_JEQ, nr["clone"], jf=4)
        op(_LD_ABS, 16)                              # args[0] (low half): clone flags
        op(_JSET, _CLONE_NEW_NAMESPACES, jt=1)
        op(_RET, _ALLOW)
        op(_RET, _ERRNO | _EPERM)
    else:
        op(_JEQ, nr["clone"], jf=5)
        op(_LD_ABS, 16)
        op(_JSET, _CLONE_NEW_NAMESPACES, jt=2)
        op(_JSET, _CLONE_THREAD, jf=1)
        op(_RET, _ALLOW)
        op(_RET, _ERRNO | _EPERM)
        for name in ("fork", "vfork"):
            if name in nr:
                op(_JEQ, nr[name], jf=1)
                op(_RET, _ERRNO | _EPERM)
    for name in _DENIED:
        op(_JEQ, nr[name], jf=1)
        op(_RET, _ERRNO | _EPERM)
    op(_RET, _ALLOW)
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


# One source for installing a filter: the launcher (fallback) runs it before exec, and a worker
# that forks may call install_seccomp() in the child before any student code.
_SECCOMP_INSTALL = r'''
def install_seccomp(program):
    """Install ``program`` (seccomp_program() bytes) on this thread, with no_new_privs set.
    Filters only ever add up; none can be removed. Raises OSError if the kernel refuses."""
    import ctypes
    class _Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
    libc = ctypes.CDLL(None, use_errno=True)
    ul = ctypes.c_ulong
    fprog = _Fprog(len(program) // 8, program)
    if libc.prctl(38, ul(1), ul(0), ul(0), ul(0)) != 0:            # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.prctl(22, ul(2), ctypes.byref(fprog), ul(0), ul(0)) != 0:   # PR_SET_SECCOMP, FILTER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")
'''
exec(_SECCOMP_INSTALL)   # defines install_seccomp(program) here  # noqa: S102

# One source for setting capability sets (the stub keeps a zygote's; the zygote's children drop
# all of theirs before any student code).
_CAPS_SET = r'''
def set_capabilities(effective, permitted, inheritable):
    """capset(2) for this thread: the three 32-bit masks (low half; capabilities 0-31)."""
    import ctypes
    class _Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
    class _Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]
    libc = ctypes.CDLL(None, use_errno=True)
    data = (_Data * 2)()
    data[0].effective, data[0].permitted, data[0].inheritable = effective, permitted, inheritable
    if libc.capset(ctypes.byref(_Header(0x20080522, 0)), data) != 0:   # _LINUX_CAPABILITY_VERSION_3
        raise OSError(ctypes.get_errno(), "capset failed")
'''
exec(_CAPS_SET)   # defines set_capabilities(effective, permitted, inheritable)  # noqa: S102
CAP_KILL, CAP_SETGID, CAP_SETUID = 5, 6, 7
ZYGOTE_CAPS = (1 << CAP_KILL) | (1 << CAP_SETGID) | (1 << CAP_SETUID)
CHILD_UID_OFFSET = 1 << 22    # a rootful zygote's children run as its uid + this (> any pid)

# The launcher: runs as ``python -I -S -c _LAUNCHER CONFIG_JSON`` with the grader's uid.
_LAUNCHER = _SECCOMP_INSTALL + r'''
import fcntl, json, os, resource, sys
c = json.loads(sys.argv[1])
moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in c["fds"]]
for fd in set(c["fds"]):
    os.close(fd)
for target, fd in zip((3, 4), moved):
    os.dup2(fd, target)            # inheritable
    os.close(fd)
root = os.geteuid() == 0
for name, (soft, hard) in c["rlimits"].items():
    res = getattr(resource, name)
    cur = resource.getrlimit(res)[1]
    if not root and cur != resource.RLIM_INFINITY:
        hard = min(hard, cur)
        soft = min(soft, hard)
    resource.setrlimit(res, (soft, hard))
uid = None if c["uid_base"] is None else c["uid_base"] + os.getpid()
argv = [a.replace("@UID@", str(uid)) for a in c["argv"]]
program = bytes.fromhex(c["seccomp"]) if c["seccomp"] else None
if c["seccomp_fd"]:                # bubblewrap reads the filter from a pipe (--seccomp FD)
    os.umask(0o022)                # the directories bubblewrap makes for mount points: 0755
    r, w = os.pipe()
    os.write(w, program)
    os.close(w)
    os.set_inheritable(r, True)
    argv = [str(r) if a == "@SECCOMP_FD@" else a for a in argv]
if c["drop"]:                      # fallback: own uid, then the filter, then the worker
    os.umask(0o077)
    os.chown(c["drop"], uid, uid)  # <scratch>/work; <scratch> and its .kit stay the grader's
    os.chmod(c["drop"], 0o700)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid,) * 3 or os.getresgid() != (uid,) * 3 or os.getgroups():
        raise SystemExit("sandbox launcher: could not drop privileges")
    os.chdir(c["drop"])
    install_seccomp(program)
import ctypes                      # die with the grader, even when it is killed (SIGKILL):
ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)   # PR_SET_PDEATHSIG (after the uid change, which clears it)
if os.getppid() != c["parent"]:
    raise SystemExit("sandbox launcher: the grader is gone")
os.execve(argv[0], argv, os.environ)
'''

# The stub bubblewrap runs in the sandbox: RLIMIT_NPROC for this sandbox, the uid drop, the worker.
# A zygote ("keep_caps") keeps CAP_KILL, CAP_SETUID and CAP_SETGID through the exec (as ambient
# capabilities) so that its children can run as a uid of their own that cannot signal it.
_STUB = _CAPS_SET + r'''
import ctypes, json, os, resource, sys
c = json.loads(sys.argv[1])
os.umask(0o077)
resource.setrlimit(resource.RLIMIT_NPROC, (c["nproc"], c["nproc"]))
libc = ctypes.CDLL(None, use_errno=True)
if c["uid"] is not None:
    u = int(c["uid"])
    if c["keep_caps"]:
        libc.prctl(8, 1, 0, 0, 0)                              # PR_SET_KEEPCAPS
    os.setgroups([])
    os.setresgid(u, u, u)
    os.setresuid(u, u, u)
    if os.getresuid() != (u,) * 3 or os.getresgid() != (u,) * 3 or os.getgroups():
        raise SystemExit("sandbox stub: could not drop privileges")
    if c["keep_caps"]:
        keep = c["keep_caps"]
        set_capabilities(keep, keep, keep)
        for cap in range(32):
            if keep >> cap & 1 and libc.prctl(47, 2, cap, 0, 0) != 0:   # PR_CAP_AMBIENT_RAISE
                raise SystemExit("sandbox stub: could not keep the zygote's capabilities")
os.execv(c["argv"][0], c["argv"])
'''


# --- the Python environment and the host ------------------------------------------------------

_prefix_cache: dict[str, list[str]] = {}
_cache_lock = threading.Lock()


def python_dirs(python: str) -> list[str]:
    """Directories the interpreter ``python`` needs, resolved by asking it (``python -I``: site
    sets a venv's prefix; cached per path):
    ``sys.prefix``, ``sys.base_prefix``, the exec prefixes and the real interpreter's prefix,
    both as given and with symlinks resolved, without ``/usr`` (always bound) and without
    directories inside another listed one. Bubblewrap binds each read-only at the same path.
    """
    with _cache_lock:
        if python in _prefix_cache:
            return list(_prefix_cache[python])
    code = ("import json, os, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix,"
            " sys.base_exec_prefix, os.path.dirname(os.path.dirname(os.path.realpath("
            "sys.executable)))]))")
    try:
        out = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise BackendUnavailable(f"cannot run the Python interpreter {python}: {exc}") from None
    dirs = set()
    for d in json.loads(out):
        dirs.update({os.path.abspath(d), os.path.realpath(d)})
    dirs = {d for d in dirs if not _within(d, "/usr")}
    result = sorted(d for d in dirs if not any(o != d and _within(d, o) for o in dirs))
    for d in result:
        if _within(str(KIT_ROOT), d):
            raise BackendUnavailable(
                f"the Python environment {d} contains the kit {KIT_ROOT}; binding it would show "
                "the whole course to student code (use a venv such as <course>/.venv)")
    with _cache_lock:
        _prefix_cache[python] = result
    return list(result)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def gpu_device_paths(dev_dir: str = "/dev") -> list[str]:
    """The GPU device nodes a CUDA worker needs: ``nvidia*`` (nvidiactl, nvidia0.., nvidia-uvm,
    nvidia-modeset, the nvidia-caps directory) and ``dri``, those that exist, sorted."""
    try:
        names = os.listdir(dev_dir)
    except OSError:
        return []
    return sorted(os.path.join(dev_dir, n) for n in names if n.startswith("nvidia") or n == "dri")


def _other_blocked(path: str) -> str | None:
    """Why a uid that is neither owner nor in the group cannot reach ``path`` (None: it can).
    Every directory on the way needs o+x; the path itself o+x (directory, program) or o+r."""
    p = Path(os.path.abspath(path))
    for d in reversed(p.parents):
        try:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return f"{d} is not searchable by other users"
        except OSError as exc:
            return f"{d}: {exc.strerror}"
    return None


def _readable_by_other(path: Path) -> bool:
    """True if a uid in no group of ``path`` can read it, or list or search it (a directory)."""
    if _other_blocked(str(path)):
        return False
    try:
        mode = path.lstat().st_mode
    except OSError:
        return False
    if stat.S_ISDIR(mode):
        return bool(mode & (stat.S_IROTH | stat.S_IXOTH))
    return bool(mode & stat.S_IROTH)


def fallback_exposures(course_dir: str | os.PathLike, *,
                       kit_root: str | os.PathLike | None = None) -> list[str]:
    """Instructor files that a ``fallback`` worker could read: paths relative to ``course_dir``
    (absolute for the kit's checkout when it lies outside the course).

    The fallback worker runs as a uid of its own, in no group, so only the "other" permission
    bits count (ACLs are not consulted). Checked in the course: ``SENSITIVE`` (``source/``,
    ``solutions/``, ``assignments/``, ``autograder/suites/``, ``tests/``, ``submitted/``,
    ``autograded/``, ``feedback/``, ``reports/``, ``nbgrader_config.py`` with the cohort seed,
    ``.git/``) and any ``gradebook*``. In the kit's checkout ``kit_root`` (default: this one,
    ``KIT_ROOT``), by allow-list: everything but the runtime (``runtime_paths()``) and the
    Python environment, so its assignment folders (hidden suites, trainers, calibration),
    source notebooks and compiled caches count. A directory counts when a file inside it can be
    reached and read, or when it can be listed.
    An empty list means nothing sensitive is readable.

    The instructor fixes it with ``chmod -R o-rwx`` on those paths (the worker itself needs none
    of the course: the fallback copies the kit's runtime into the worker's scratch). Keep the
    course directory ``o+x`` only if the Python environment lives inside it (``.venv``).
    """
    course = Path(course_dir)
    kit = Path(KIT_ROOT if kit_root is None else kit_root)
    candidates = [course / rel for rel in SENSITIVE]
    try:
        candidates += sorted(p for p in course.iterdir() if p.name.startswith("gradebook"))
    except OSError:
        pass
    candidates += _kit_candidates(kit)
    found: list[str] = []
    for path in candidates:
        if not path.exists() or _other_blocked(str(path)):
            continue
        if _readable_by_other(path) and (not path.is_dir() or path.lstat().st_mode & stat.S_IROTH
                                          or _any_readable_inside(path)):
            full, top = os.path.abspath(path), os.path.abspath(course)
            name = os.path.relpath(full, top) if _within(full, top) else full
            if name not in found:
                found.append(name)
    return found


def runtime_paths() -> tuple[str, ...]:
    """What of the kit a worker needs, relative to the kit's root: the one allow-list that the
    bubblewrap binds, the fallback's kit copy and the Gradescope lock-down all use."""
    return KIT_FILES


def _kit_candidates(kit: Path) -> list[Path]:
    """Every entry of the kit's checkout (and of its ``autograder/``) that is not the runtime,
    nor on the way to it, nor the Python environment."""
    keep = {str(kit / rel) for rel in runtime_paths()}
    on_the_way = {str(p) for rel in runtime_paths() for p in (kit / rel).parents}
    try:
        env = python_dirs(sys.executable)
    except BackendUnavailable:
        env = []
    out = []
    stack = [kit]
    while stack:
        d = stack.pop()
        try:
            entries = sorted(d.iterdir())
        except OSError:
            continue
        for p in entries:
            if str(p) in keep or any(_within(e, str(p)) or _within(str(p), e) for e in env):
                continue
            if str(p) in on_the_way:
                stack.append(p)
            else:
                out.append(p)
    return out


def exposure_flags(backend: str, course_dir: str | os.PathLike) -> list[dict]:
    """The results flag ``fallback_exposed`` when ``backend`` is ``fallback`` and instructor
    files are readable to the worker (``fallback_exposures``, computed once per process)."""
    if backend != "fallback":
        return []
    found = _exposures_once(str(course_dir))
    if not found:
        return []
    shown = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")
    return [{"code": "fallback_exposed", "message": "graded without bubblewrap, and these "
             f"instructor files were readable to the student's code: {shown} (chmod -R o-rwx "
             "them; README, Security model)"}]


_exposure_cache: dict[str, list[str]] = {}


def _exposures_once(course_dir: str) -> list[str]:
    with _cache_lock:
        cached = _exposure_cache.get(course_dir)
    if cached is None:
        cached = fallback_exposures(course_dir)
        with _cache_lock:
            _exposure_cache[course_dir] = cached
    return list(cached)


def _any_readable_inside(top: Path) -> bool:
    stack = [top]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            try:
                mode = e.stat(follow_symlinks=False).st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode):
                if mode & stat.S_IROTH:
                    return True
                if mode & stat.S_IXOTH:
                    stack.append(Path(e.path))
            elif mode & stat.S_IROTH:
                return True
    return False


# --- specs -----------------------------------------------------------------------------------

def _env(device: str, scratch: str, pythonpath: str) -> dict[str, str]:
    env = {
        "PATH": "/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "USER": "worker",
        "LOGNAME": "worker", "LANG": "C.UTF-8",
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1", "PYTHONSAFEPATH": "1",
        "PYTHONHASHSEED": "0", "PYTHONPATH": pythonpath, "MPLBACKEND": "Agg",
    }
    for name in PASSTHROUGH_ENV:
        if name in os.environ:
            env[name] = os.environ[name]
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return env


def _system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    for f in ETC_FILES:
        args += ["--ro-bind-try", f, f]
    return args


def bwrap_argv(*, python: str, python_args: list[str], limits: Limits, device: str,
               rootful: bool, zygote: bool = False) -> list[str]:
    """The bubblewrap command line (with the launcher's placeholders ``@SECCOMP_FD@``, ``@UID@``).

    ``rootful``: the grader is root, so bubblewrap runs privileged without a user namespace,
    keeps only CAP_SETUID/CAP_SETGID for the stub, which drops to ``SANDBOX_UID_BASE + pid``.
    With ``zygote`` (rootful only) the stub lets the process keep ``ZYGOTE_CAPS`` (CAP_KILL,
    CAP_SETUID, CAP_SETGID): its children then run as ``uid + CHILD_UID_OFFSET``, drop every
    capability, and cannot signal it (worker.py, class Zygote).
    Otherwise a user namespace maps the grader's uid to ``USERNS_UID``. With ``device == "cuda"``
    the nodes of ``gpu_device_paths()`` are bound with device access, plus read-only sysfs.
    """
    bwrap = shutil.which("bwrap") or "bwrap"
    a = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
         "--unshare-cgroup", "--hostname", "sandbox", "--die-with-parent", "--new-session"]
    if rootful:
        a += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        if zygote:
            a += ["--cap-add", "CAP_KILL"]
    else:
        a += ["--unshare-user", "--uid", str(USERNS_UID), "--gid", str(USERNS_UID),
              "--disable-userns"]
    binds = _system_binds()
    for d in python_dirs(python):
        binds += ["--ro-bind", os.path.realpath(d), d]
    for rel in runtime_paths():
        binds += ["--ro-bind", str(KIT_ROOT / rel), f"{KIT_VIEW}/{rel}"]
    if device == "cuda":
        for d in ("/sys/devices", "/sys/bus", "/sys/class", "/sys/dev", "/sys/module"):
            binds += ["--ro-bind-try", d, d]
    else:
        binds += ["--ro-bind-try", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]
    # bubblewrap 0.8 makes missing parents of a mount point 0700 (unreachable for the sandbox
    # uid), so every parent is made first, 0755.
    # The scratch tmpfs is mounted first: a kit or venv that lives under /tmp (a clone in /tmp,
    # as CI may make) is then bound on top of it instead of being hidden by it.
    a += ["--perms", "1777", "--size", str(scratch_bytes(limits)), "--tmpfs", SCRATCH_VIEW]
    parents = {str(p) for i in range(0, len(binds), 3) for p in Path(binds[i + 2]).parents}
    for d in sorted(parents - {"/", SCRATCH_VIEW}, key=lambda p: (p.count("/"), p)):
        a += ["--dir", d]
    a += binds + ["--proc", "/proc", "--dev", "/dev"]
    if device == "cuda":
        for node in gpu_device_paths():
            a += ["--dev-bind", node, node]
    a += ["--remount-ro", "/dev", "--remount-ro", "/",
          "--seccomp", "@SECCOMP_FD@", "--chdir", SCRATCH_VIEW, "--"]
    stub = {"nproc": limits.max_processes, "uid": "@UID@" if rootful else None,
            "keep_caps": ZYGOTE_CAPS if rootful and zygote else 0, "argv": [python, *python_args]}
    return a + [python, "-I", "-S", "-c", _STUB, json.dumps(stub)]


def launch_spec(backend: str, *, python: str, worker_args: list[str], limits: Limits,
                device: str, fds: tuple[int, int], scratch_dir: str,
                allow_fork: bool = False) -> LaunchSpec:
    """How to start ``python -m autograder.sandbox.worker *worker_args`` with ``backend``
    (already resolved: ``bwrap``, ``fallback``, ``unsafe`` or ``trusted``).

    ``fds``: (request read end, reply write end) as open in the grader; the worker gets them as
    3 and 4. ``scratch_dir``: an existing, empty host directory made by the caller (for
    ``fallback`` it must be reachable by other users, e.g. under /tmp; the launcher gives it to
    the worker's uid). ``device``: ``cpu`` or ``cuda``. ``allow_fork`` lifts the seccomp ban on new
    processes for a worker that forks itself; that worker must then ``install_seccomp(
    seccomp_program())`` in each child before student code runs, or RLIMIT_AS no longer bounds
    its memory. Raises BackendUnavailable (fallback without root, Python not usable) or
    ValueError (bad arguments).
    """
    return command_spec(backend, python=python, python_args=["-m", WORKER_MODULE, *worker_args],
                        limits=limits, device=device, fds=fds, scratch_dir=scratch_dir,
                        allow_fork=allow_fork)


def command_spec(backend: str, *, python: str, python_args: list[str], limits: Limits,
                 device: str, fds: tuple[int, int], scratch_dir: str,
                 allow_fork: bool = False) -> LaunchSpec:
    """``launch_spec`` for any command line ``python *python_args`` (probes and the kit's tests)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; resolve it with resolve_backend() first")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', not {device!r}")
    if len(fds) != 2:
        raise ValueError("fds must be (request read end, reply write end)")
    root = os.geteuid() == 0
    values = rlimits(limits, device=device)
    if backend == "trusted":    # long-lived: its requests have timeouts (module docstring)
        del values["RLIMIT_CPU"]
    cfg: dict = {"fds": list(fds), "rlimits": values, "uid_base": None, "seccomp": None,
                 "seccomp_fd": False, "drop": None, "argv": [python, *python_args],
                 "parent": os.getpid()}
    view = scratch_dir
    if backend == "bwrap":
        view = SCRATCH_VIEW
        env = _env(device, view, KIT_VIEW)
        del values["RLIMIT_NPROC"]      # set by the stub inside the sandbox (see module docstring)
        cfg.update(argv=bwrap_argv(python=python, python_args=python_args, limits=limits,
                                   device=device, rootful=root, zygote=allow_fork),
                   uid_base=SANDBOX_UID_BASE if root else None,
                   seccomp=seccomp_program(allow_fork=allow_fork).hex(), seccomp_fd=True)
    elif backend == "fallback":
        if not root:
            raise BackendUnavailable("the fallback sandbox needs the grader to run as root "
                                     "(it switches the worker to an unprivileged uid)")
        blocked = _other_blocked(scratch_dir)   # its parents
        if blocked:
            raise ValueError(f"scratch_dir {scratch_dir} is out of the worker's reach: {blocked}")
        # <scratch> (the grader's, 0711) holds the kit copy .kit (the grader's, read-only to
        # the worker) and work/ (the launcher gives it to the worker's uid): nothing the worker
        # can write is ever read by the kit, and the kit copy cannot be replaced.
        os.chmod(scratch_dir, 0o711)
        view = os.path.join(scratch_dir, "work")
        os.makedirs(view, mode=0o700, exist_ok=True)
        env = _env(device, view, _copy_kit(scratch_dir))
        cfg.update(uid_base=SANDBOX_UID_BASE, drop=view,
                   seccomp=seccomp_program(allow_fork=allow_fork).hex())
    else:
        env = _env(device, scratch_dir, str(KIT_ROOT))
        if not root:   # the uid is shared with the grader: bound growth, not the total
            n = _tasks_of_uid(os.getuid()) + limits.max_processes
            values["RLIMIT_NPROC"] = (n, n)
    if device == "cuda" and backend != "trusted" and limits.gpu_memory_fraction:
        env[GPU_FRACTION_ENV] = repr(float(limits.gpu_memory_fraction))
    argv = [python, "-I", "-S", "-c", _LAUNCHER, json.dumps(cfg)]
    return LaunchSpec(argv=argv, env=env, preexec_fn=None, pass_fds=tuple(fds), cwd=scratch_dir,
                      scratch_dir=view)


def _copy_kit(scratch_dir: str) -> str:
    """Copy the kit's runtime into ``<scratch_dir>/.kit`` (owned by the grader, world-readable) and
    return that directory: the fallback worker then needs nothing of the course directory."""
    dest = Path(scratch_dir) / ".kit"
    for rel in runtime_paths():
        src, dst = KIT_ROOT / rel, dest / rel
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"),
                            dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    for d, _, files in os.walk(dest):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    return str(dest)


def _tasks_of_uid(uid: int) -> int:
    """Tasks (threads) whose real uid is ``uid``, from /proc: what RLIMIT_NPROC counts."""
    n = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                n += int(fields["Threads"])
        except (OSError, KeyError, ValueError):
            continue
    return n


# --- choosing and describing a backend --------------------------------------------------------

_probes: dict[str, str | None] = {}
_probe_lock = threading.Lock()


def resolve_backend(requested: str) -> str:
    """The backend to use for ``requested`` (``auto``, ``bwrap``, ``fallback``, ``unsafe``,
    ``trusted``). ``auto`` is ``bwrap`` when a bubblewrap probe runs here, else ``fallback`` when
    its probe runs. Probes start a tiny sandboxed ``python -c`` once per process (cached).
    Raises BackendUnavailable with the probe's reason.
    """
    if requested in ("unsafe", "trusted"):
        return requested
    if requested == "auto":
        why_bwrap = _probe("bwrap")
        if why_bwrap is None:
            return "bwrap"
        why_fallback = _probe("fallback")
        if why_fallback is None:
            return "fallback"
        raise BackendUnavailable(f"no sandbox can run here. bwrap: {why_bwrap}. "
                                 f"fallback: {why_fallback}")
    if requested in ("bwrap", "fallback"):
        why = _probe(requested)
        if why is not None:
            raise BackendUnavailable(f"{requested}: {why}")
        return requested
    raise BackendUnavailable(f"unknown sandbox {requested!r}: use auto, bwrap, fallback or unsafe")


def _probe(backend: str) -> str | None:
    with _probe_lock:
        if backend not in _probes:
            _probes[backend] = _run_probe(backend)
        return _probes[backend]


def _run_probe(backend: str) -> str | None:
    """None if ``backend`` can start a worker here, else a one-line reason."""
    if backend == "bwrap" and shutil.which("bwrap") is None:
        return "bubblewrap is not installed (apt-get install bubblewrap)"
    if backend == "fallback":
        if os.geteuid() != 0:
            return "the grader is not root, so it cannot switch the worker to an unprivileged uid"
        blocked = _other_blocked(os.path.realpath(sys.executable))
        if blocked:
            return (f"an unprivileged uid cannot run {sys.executable}: {blocked} (put the Python "
                    "environment where other users can read it)")
    with tempfile.TemporaryDirectory(prefix="ppo-probe-") as scratch:
        os.chmod(scratch, 0o700)
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        try:
            spec = command_spec(backend, python=sys.executable, python_args=[
                "-c", "import os; os.write(4, b'ok')"], limits=Limits(), device="cpu",
                fds=(req_r, rep_w), scratch_dir=scratch)
            proc = subprocess.Popen(spec.argv, env=spec.env, pass_fds=spec.pass_fds,
                                    cwd=spec.cwd, start_new_session=True,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
            os.close(rep_w)
            rep_w = -1
            try:
                _, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return "the probe did not finish within 60 s"
            reply = os.read(rep_r, 16)
        except (BackendUnavailable, ValueError, OSError) as exc:
            return str(exc)
        finally:
            for fd in (req_r, req_w, rep_r, rep_w):
                if fd >= 0:
                    os.close(fd)
    if proc.returncode == 0 and reply == b"ok":
        return None
    lines = err.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"the probe exited with status {proc.returncode}"


def describe(backend: str) -> str:
    """One line on what ``backend`` protects, for results.json and the README."""
    text = {
        "bwrap": "bubblewrap: no network; own PID, IPC, UTS, cgroup and mount namespaces; "
                 "read-only view of the Python environment and the kit's runtime only; private "
                 "size-capped tmpfs scratch; unprivileged uid, no capabilities; seccomp (no new "
                 "processes, memfd, SysV shm, namespaces, ptrace, keyrings, io_uring); rlimits "
                 "on CPU, memory, processes, open files and file size",
        "fallback": "fallback without bubblewrap: unprivileged uid of its own; seccomp (no new "
                    "processes, memfd, SysV shm, namespaces, ptrace, keyrings, io_uring); "
                    "rlimits on CPU, memory, processes, open files and file size; the network "
                    "and every file other users may read stay reachable",
        "unsafe": "NO SANDBOX (--unsafe-no-sandbox): rlimits only; student code runs with the "
                  "grader's uid, files and network",
        "trusted": "trusted reference code: own process with rlimits, no confinement",
    }
    if backend not in text:
        raise ValueError(f"unknown backend {backend!r}")
    return text[backend]


def termination_signal(backend: str, returncode: int | None) -> int | None:
    """The signal that ended a worker, from ``Popen.returncode`` (None: it exited, or runs).

    A direct child killed by signal N has returncode -N. Bubblewrap instead exits with 128 + N
    when its command dies of signal N, so for ``bwrap`` a worker's own ``exit(128 + N)`` looks
    the same: good enough for a flag, never for a score.
    """
    if returncode is None:
        return None
    if returncode < 0:
        return -returncode
    if backend == "bwrap" and 128 < returncode <= 128 + 64:
        return returncode - 128
    return None
