"""Finding and killing a process tree, from ``/proc``. Imports the standard library only.

Invariants:

- ``descendants`` is the kit's one process-tree walker: the grader, the worker (inside the
  sandbox, where the whole ``autograder/sandbox`` package is visible) and the tests use it.
  It follows parent links in ``/proc/PID/stat`` and leaves out zombies; a process that ends
  while it is read is skipped, never an error.
- Pids are those of the PID namespace the caller sees ``/proc`` in.
- ``kill_tree`` stops the whole tree before it kills any of it, so no process can fork away.
"""
from __future__ import annotations

import os
import signal

MAX_STOP_ROUNDS = 20   # SIGSTOP rounds until a tree stops growing (each finds new children)


def _stat_fields(pid: int | str) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` after the command name: state, ppid, ...; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2:].split()


def descendants(root: int) -> set[int]:
    """Pids of every live (not zombie) descendant of ``root``; ``root`` itself is left out."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return set()
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is not None and len(fields) > 1 and fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            if pid not in found:
                found.add(pid)
                todo.append(pid)
    return found


def proc_state(pid: int) -> str | None:
    """The state letter of ``pid`` in /proc (R, S, D, T, t, Z, ...); None when it is gone."""
    fields = _stat_fields(pid)
    if not fields:
        return None
    try:
        return fields[0].decode("ascii")
    except UnicodeDecodeError:
        return None


def host_pid(root: int, inner_pid) -> int | None:
    """The pid, as the caller sees it, of the process in ``root``'s tree whose innermost pid
    (in its own PID namespace, as under bubblewrap) is ``inner_pid``; None if there is none."""
    if not isinstance(inner_pid, int):
        return None
    for pid in sorted({root} | descendants(root)):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("NSpid:"):
                        if int(line.split()[-1]) == inner_pid:
                            return pid
                        break
        except (OSError, ValueError, IndexError):
            continue
    return None


def send_signal(pid: int, sig: int) -> None:
    """``os.kill`` that ignores a process already gone (or not ours to signal)."""
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def kill_tree(root: int) -> None:
    """SIGSTOP ``root`` and all its descendants until the tree stops growing, then SIGKILL all
    (and the process group ``root`` leads). Stopping first means no process can fork away."""
    frozen: set[int] = set()
    for _ in range(MAX_STOP_ROUNDS):
        new = ({root} | descendants(root)) - frozen
        if not new:
            break
        for pid in new:
            send_signal(pid, signal.SIGSTOP)
        frozen |= new
    for pid in frozen | {root}:
        send_signal(pid, signal.SIGKILL)
    try:
        os.killpg(root, signal.SIGKILL)
    except OSError:
        pass
