"""The fallback sandbox leaves nothing behind, and says what it exposes.

The full fallback worker cannot start on this machine: the venv's interpreter lives under
``/root`` (0700), out of reach of an unprivileged uid, and the backend's probe says so. The
launcher, the uid drop and the clean-up do not depend on torch, so they are tested here with the
system interpreter (``/usr/bin/python3``), exactly as the worker would be started: a process of
a fresh sandbox uid writes wherever it can, then the grader's clean-up (the one the worker
handle runs when a fallback worker ends) must leave no file of that uid anywhere.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from autograder.sandbox import backends, cleanup
from autograder.sandbox.launch import DirectProcess
from autograder.sandbox.limits import Limits

SYSTEM_PYTHON = "/usr/bin/python3"
SHARED = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")

# What a hostile submission does under the fallback: write everywhere it can, in several shapes.
WRITER = r'''
import json, os
made = []
for top in %(tops)r:
    try:
        os.makedirs(os.path.join(top, "adv-escape-dir", "deep", "er"), exist_ok=True)
        with open(os.path.join(top, "adv-escape-dir", "deep", "er", "blob"), "wb") as f:
            f.write(b"x" * 4096)
        with open(os.path.join(top, "adv-escape-file"), "w") as f:
            f.write("left")
        os.symlink(%(canary)r, os.path.join(top, "adv-escape-link"))
        os.chmod(os.path.join(top, "adv-escape-dir"), 0o777)
        made.append(top)
    except OSError as exc:
        made.append(f"{top}: {exc}")
with open(os.path.join(os.environ["HOME"], "adv-escape-home"), "w") as f:
    f.write("home")
os.write(4, json.dumps({"uid": os.getuid(), "made": made, "cwd": os.getcwd()}).encode())
'''


def run_as_fallback(script: str) -> tuple[dict, DirectProcess]:
    """Run ``script`` as the fallback backend would run a worker; (its report, its handle)."""
    scratch = cleanup.make_scratch("worker")
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    spec = backends.command_spec("fallback", python=SYSTEM_PYTHON, python_args=["-c", script],
                                 limits=Limits(), device="cpu", fds=(req_r, rep_w),
                                 scratch_dir=scratch)
    proc = subprocess.Popen(spec.argv, env=spec.env, cwd=spec.cwd, pass_fds=spec.pass_fds,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    for fd in (req_r, rep_w):
        os.close(fd)
    _, err = proc.communicate(timeout=60)
    os.close(req_w)
    data = os.read(rep_r, 1 << 16)
    os.close(rep_r)
    assert proc.returncode == 0, err.decode()
    return json.loads(data), DirectProcess(proc, scratch, "fallback")


def files_of(uid: int) -> list[str]:
    """Every entry owned by ``uid`` under the shared places and /tmp, found independently of
    the kit's clean-up (a plain walk of the trees, links not followed)."""
    found = []
    for top in SHARED:
        for root, dirs, files in os.walk(top):
            for name in dirs + files:
                path = os.path.join(root, name)
                try:
                    if os.lstat(path).st_uid == uid:
                        found.append(path)
                except OSError:
                    pass
    return found


@pytest.fixture()
def canary():
    fd, path = tempfile.mkstemp(prefix="canary-")
    os.write(fd, b"grader's file")
    os.close(fd)
    yield path
    os.unlink(path)


def test_the_writable_places_include_every_shared_temporary_directory():
    places = cleanup.writable_places()
    for top in SHARED:
        if os.path.isdir(top) and os.stat(top).st_mode & stat.S_IWOTH:
            assert top in places, (top, places)
    assert not any(p.startswith(("/proc", "/sys")) for p in places)


@pytest.mark.skipif(os.geteuid() != 0, reason="the fallback needs the grader to be root")
def test_everything_a_fallback_worker_wrote_is_removed(canary):
    tops = [t for t in SHARED if os.path.isdir(t)]
    report, handle = run_as_fallback(WRITER % {"tops": tops, "canary": canary})
    uid = report["uid"]
    assert uid == backends.SANDBOX_UID_BASE + handle.pid
    assert report["made"] == tops, report["made"]        # it could write in each of them
    left = files_of(uid)
    assert len(left) >= 4 * len(tops)
    assert Path(report["cwd"]).parent == Path(handle.scratch)   # its scratch: <scratch>/work
    handle.cleanup()
    assert files_of(uid) == []
    assert not os.path.exists(handle.scratch)
    assert Path(canary).read_bytes() == b"grader's file"    # the link was removed, not followed


@pytest.mark.skipif(os.geteuid() != 0, reason="the fallback needs the grader to be root")
def test_the_worker_cannot_replace_the_kit_copy():
    probe = ("import json, os\nout = {}\nkit = os.path.join(os.path.dirname(os.getcwd()), '.kit')\n"
             "try:\n    os.rename(kit, kit + '-moved'); out['moved'] = True\n"
             "except OSError as e:\n    out['moved'] = e.errno\n"
             "out['readable'] = os.path.isfile(os.path.join(kit, 'autograder', 'sandbox', "
             "'worker.py'))\nos.write(4, json.dumps(out).encode())\n")
    report, handle = run_as_fallback(probe)
    handle.cleanup()
    assert report["moved"] is not True and report["readable"] is True


def test_dead_runs_scratch_is_reaped_and_live_runs_is_kept(tmp_path):
    live = cleanup.make_scratch("zygote")          # ours: this process is alive
    dead = tmp_path / "ag-worker-999999999.1-abc"  # a pid that cannot exist
    dead.mkdir()
    (dead / "inside").write_text("x")
    foreign = tmp_path / "ag-zygote-xyz"           # no owner in its name: not ours to judge
    foreign.mkdir()
    shutil.copytree(live, tmp_path / Path(live).name)
    removed = cleanup.reap_stale(str(tmp_path), places=())
    assert removed == [str(dead)]
    assert (tmp_path / Path(live).name).exists() and foreign.exists()
    os.rmdir(live)


@pytest.mark.skipif(os.geteuid() != 0, reason="files of other uids need root")
def test_files_of_dead_sandbox_uids_are_reaped(tmp_path):
    place = tmp_path / "shared"
    place.mkdir(mode=0o777)
    lo, _ = cleanup.SANDBOX_UID_RANGE
    dead_uid, live_uid = lo + 4_000_000, os.getuid()
    for uid, name in ((dead_uid, "dead"), (live_uid, "live"), (12345, "other")):
        (place / name).write_text(name)
        os.chown(place / name, uid, uid)
    cleanup.reap_stale(str(tmp_path / "none"), places=(str(place),))
    assert sorted(p.name for p in place.iterdir()) == ["live", "other"]


@pytest.fixture()
def open_dir():
    """A directory under /tmp that other users can search (pytest's own tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="exposure-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_fallback_exposures_cover_the_kits_own_checkout(open_dir):
    """A checkout of the kit outside the course: its hidden suites, source notebooks and
    calibration code are exposures too, and making them unreadable clears them."""
    tmp_path = open_dir
    course, kit = tmp_path / "course", tmp_path / "kit"
    for root in (course, kit):
        (root / "source" / "ppo").mkdir(parents=True)
        (root / "source" / "ppo" / "ppo.ipynb").write_text("{}")
    for rel in ("assignments/ppo/test_x.py", "autograder/calibration.py",
                "autograder/sandbox/worker.py"):
        (kit / rel).parent.mkdir(parents=True, exist_ok=True)
        (kit / rel).write_text("# x")
    for path in (tmp_path, course, kit):
        path.chmod(0o755)
    found = backends.fallback_exposures(course, kit_root=kit)
    assert "source" in found
    assert {f"{kit}/source", f"{kit}/assignments", f"{kit}/autograder/calibration.py"} <= \
        set(found)
    assert not any("sandbox" in f for f in found)        # the runtime may stay readable
    for rel in ("source", "assignments", "autograder/calibration.py"):
        subprocess.run(["chmod", "-R", "o-rwx", str(kit / rel)], check=True)
    subprocess.run(["chmod", "-R", "o-rwx", str(course / "source")], check=True)
    assert backends.fallback_exposures(course, kit_root=kit) == []


def test_grading_under_the_fallback_warns_when_anything_is_exposed(open_dir):
    course = open_dir / "course"
    (course / "source").mkdir(parents=True)
    (course / "source" / "key.ipynb").write_text("{}")
    course.chmod(0o755)
    (flag,) = backends.exposure_flags("fallback", course)
    assert flag["code"] == "fallback_exposed" and "source" in flag["message"]
    assert backends.exposure_flags("bwrap", course) == []      # nothing to read under bwrap


@pytest.mark.skipif(os.geteuid() != 0, reason="the fallback needs the grader to be root")
def test_no_ipc_object_can_outlive_a_fallback_worker():
    """Message queues, semaphore sets and POSIX queues live on after their process and are not
    files: the worker may not create them at all."""
    probe = """import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
def call(name, *args):
    ctypes.set_errno(0)
    rc = getattr(libc, name)(*args)
    return "created" if rc >= 0 else ctypes.get_errno()
os.write(4, json.dumps({"msgget": call("msgget", 0, 0o1600), "semget": call("semget", 0, 1, 0o1600),
                        "shmget": call("shmget", 0, 4096, 0o1600),
                        "mq_open": call("mq_open", b"/adv-escape-q", 0o102, 0o600, None)}).encode())
"""
    report, handle = run_as_fallback(probe)
    handle.cleanup()
    assert report == {"msgget": 1, "semget": 1, "shmget": 1, "mq_open": 1}    # EPERM each


@pytest.mark.skipif(os.geteuid() != 0, reason="the fallback needs the grader to be root")
def test_the_fallback_zygote_wipes_its_uids_files_between_children(canary):
    """The zygote's own wipe (worker.Zygote.wipe, run as the sandbox uid between two children)
    empties its scratch and removes the uid's files from the shared places; it follows no link
    and leaves other users' files alone. (The system Python has no numpy: the worker module's
    import of it is stubbed, the wipe does not use it.)"""
    tops = [t for t in SHARED if os.path.isdir(t)]
    probe = f"""import json, os, sys, types
sys.modules["numpy"] = types.ModuleType("numpy")
from autograder.sandbox import worker
z = object.__new__(worker.Zygote)
z.scratch, z.wipe_uid_files, z.child_uid = os.getcwd(), True, None
os.makedirs("child-1/deep", exist_ok=True)
open("child-1/deep/f", "w").write("x")
open("planted.py", "w").write("x")
os.symlink({canary!r}, "link")
names = ["adv-escape-z-%d" % os.getpid(), "adv-escape-zlink-%d" % os.getpid()]
for top in {tops!r}:
    open(os.path.join(top, names[0]), "w").write("x")
    os.symlink({canary!r}, os.path.join(top, names[1]))
z.wipe()
left = [t for t in {tops!r} for n in names if os.path.lexists(os.path.join(t, n))]
os.write(4, json.dumps({{"scratch": sorted(os.listdir(".")), "left": left}}).encode())
"""
    report, handle = run_as_fallback(probe)
    handle.cleanup()
    assert report == {"scratch": [], "left": []}
    assert Path(canary).read_bytes() == b"grader's file"
