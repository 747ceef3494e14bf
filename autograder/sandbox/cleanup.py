"""Removing what a sandbox uid left on the host. Standard library only; imports no torch.

The rule (``fallback`` backend, where the worker writes to the host's filesystems): a process
can create a directory entry only in a directory it may write to. A sandbox uid is in no group
but its own, so outside its scratch it can write only where the "other" write bit is set (ACLs
are not consulted), and only if every directory on the way is searchable by "other". So every
file it left is an entry of such a *writable place*, or lies inside a directory it owns that is
itself such an entry. ``writable_places()`` finds those places once per process, on every
read-write mounted filesystem that holds files (pseudo filesystems such as ``/proc`` and
``/sys`` are skipped); ``remove_uid_files(uid)`` deletes the uid's entries there, whole trees
for its directories, without following links.

Bounds: the walk visits at most ``MAX_DIRS`` directories and stays on each mount's device;
removal uses ``shutil.rmtree``'s descriptor-based walk (never follows a link).
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import stat
import tempfile

MAX_DIRS = 500_000
PSEUDO_FS = frozenset({
    "proc", "sysfs", "cgroup", "cgroup2", "devpts", "securityfs", "debugfs", "tracefs", "bpf",
    "pstore", "configfs", "fusectl", "binfmt_misc", "autofs", "hugetlbfs", "efivarfs", "nsfs",
    "rpc_pipefs", "selinuxfs", "overlay_meta"})


def _unescape(field: str) -> str:
    """A path field of /proc/self/mountinfo (spaces and the like are octal escapes)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def writable_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points of read-write filesystems that hold files (no pseudo filesystems)."""
    points = []
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ["/"]
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 6 or len(rest) < 1:
            continue
        point, options, fstype = _unescape(fields[4]), fields[5].split(","), rest[0]
        if "rw" in options and fstype not in PSEUDO_FS and point not in points:
            points.append(point)
    return sorted(points)


def _searchable_by_other(path: str) -> bool:
    """Every directory from / to ``path`` (included) has the "other" search bit."""
    parts = os.path.abspath(path).split("/")
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i]) or "/"
        try:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _other_writable_dirs(top: str, budget: list[int]) -> list[str]:
    """Directories under ``top`` (same device, links not followed, "other"-searchable on the
    way) that "other" may write to."""
    try:
        dev = os.lstat(top).st_dev
    except OSError:
        return []
    found, stack = [], [top]
    while stack and budget[0] > 0:
        d = stack.pop()
        budget[0] -= 1
        try:
            mode = os.lstat(d).st_mode
        except OSError:
            continue
        if mode & stat.S_IWOTH and mode & stat.S_IXOTH:
            found.append(d)
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            try:
                if not e.is_dir(follow_symlinks=False):
                    continue
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_dev == dev and st.st_mode & stat.S_IXOTH:
                stack.append(e.path)
    return found


@functools.lru_cache(maxsize=1)
def writable_places() -> tuple[str, ...]:
    """Every directory a sandbox uid may create entries in, outside its own directories:
    "other"-writable and reachable, on every read-write mount (computed once per process)."""
    budget = [MAX_DIRS]
    places: list[str] = []
    for point in writable_mounts():
        if _searchable_by_other(point):
            places += [d for d in _other_writable_dirs(point, budget) if d not in places]
    return tuple(places)


def remove_uid_files(uid: int, places: tuple[str, ...] | list[str] | None = None,
                     keep: tuple[str, ...] = ()) -> list[str]:
    """Delete every entry owned by ``uid`` in ``places`` (default ``writable_places()``), whole
    trees for directories, except the paths in ``keep``. Returns the paths removed. Never
    raises; never follows a link (a link owned by ``uid`` is removed, not its target)."""
    if uid == 0:
        raise ValueError("refusing to remove root's files")
    keep_real = {os.path.abspath(k) for k in keep}
    removed = []
    for top in (writable_places() if places is None else places):
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
                if st.st_uid != uid or os.path.abspath(e.path) in keep_real:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    os.unlink(e.path)
            except OSError:
                continue
            removed.append(e.path)
    return removed


# --- the kit's own scratch directories ---------------------------------------------------------

SCRATCH_PREFIXES = ("ag-zygote-", "ag-worker-")
SANDBOX_UID_RANGE = (1_900_000_000, 1_900_000_000 + (1 << 23))   # uid base + pid (+ 1 << 22)
_OWNED = re.compile(r"^(ag-zygote-|ag-worker-|ag-dask-)(\d+)\.(\d+)-")


def _start_time(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks since boot; field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rfind(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def make_scratch(kind: str, *, sweep_uids: bool = False) -> str:
    """A new scratch directory ``<tmp>/ag-<kind>-<pid>.<start time>-XXXX`` (0700). The name says
    which process owns it, so ``reap_stale()`` can tell a dead run's directory from a live one.
    The first call in a process reaps what dead runs left (``reap_stale``; with ``sweep_uids``,
    for the fallback, their sandbox uids' files too)."""
    if kind not in ("zygote", "worker", "dask"):
        raise ValueError(kind)
    _reap_once(sweep_uids)
    pid = os.getpid()
    return tempfile.mkdtemp(prefix=f"ag-{kind}-{pid}.{_start_time(pid) or 0}-")


@functools.lru_cache(maxsize=2)
def _reap_once(sweep_uids: bool) -> None:
    reap_stale(sweep_uids=sweep_uids)


def _live_uids() -> set[int]:
    uids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                uids.add(os.stat(f"/proc/{entry}").st_uid)
            except OSError:
                continue
    return uids


def reap_stale(tmp: str | None = None, *, places: tuple[str, ...] | None = None,
               sweep_uids: bool = True) -> list[str]:
    """Remove what killed runs left: scratch directories whose owning process (pid and start
    time in the name) is gone, and, with ``sweep_uids`` when we are root, files of sandbox uids
    (``SANDBOX_UID_RANGE``) that no live process has. Directories of live runs, of other users
    and without an owner in their name are left alone. Returns the paths removed."""
    tmp = tmp or tempfile.gettempdir()
    me, removed = os.geteuid(), []
    try:
        entries = list(os.scandir(tmp))
    except OSError:
        entries = []
    for e in entries:
        m = _OWNED.match(e.name)
        if m is None:
            continue
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if st.st_uid != me or not stat.S_ISDIR(st.st_mode):
            continue
        pid, started = int(m.group(2)), int(m.group(3))
        if _start_time(pid) == started:
            continue                          # its run is still alive
        shutil.rmtree(e.path, ignore_errors=True)
        removed.append(e.path)
    if me == 0 and sweep_uids:
        live = _live_uids()
        lo, hi = SANDBOX_UID_RANGE
        places = writable_places() if places is None else places
        dead = set()
        for top in places:
            try:
                found = list(os.scandir(top))
            except OSError:
                continue
            for e in found:
                try:
                    uid = e.stat(follow_symlinks=False).st_uid
                except OSError:
                    continue
                if lo <= uid < hi and uid not in live:
                    dead.add(uid)
        for uid in sorted(dead):
            removed += remove_uid_files(uid, places=places)
    return removed
