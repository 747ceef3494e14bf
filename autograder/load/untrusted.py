"""Reading what a student controls: regular files only, never through a link, at a bounded cost.

Invariants:
- A student path is opened by walking from a trusted base directory one name at a time, each
  directory with ``O_NOFOLLOW | O_DIRECTORY`` relative to the one before (``dir_fd``), the file
  with ``O_NOFOLLOW | O_NONBLOCK``. A symbolic link at any level below the base is never
  followed; a FIFO, device or socket is never opened (``lstat`` first, ``fstat`` after the
  open); a folder where a file should be is refused. Each refusal is ``Refused`` with a reason
  a student can read.
- A file is read only after ``fstat`` says it is a regular file under the caller's cap, and the
  read stops at the cap whatever the file grows to meanwhile.
- ``count_json_values`` counts the values a JSON parse would build (``[``, ``{``, ``,`` and
  ``:`` outside strings) in one left-to-right pass that stops just past ``limit``: its time and
  memory are bounded by the limit, not by the input.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

from autograder import bounds

DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
CODE = "not_a_regular_file"


class Refused(Exception):
    """The path is not a regular file reached without links; ``str()`` says why."""


def describe(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, words in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"),
                        (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                        (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return words
    return "not a regular file"


def printable(name: str) -> str:
    """A file name as text that can be written anywhere: bytes that are not UTF-8 (which
    Python keeps as lone surrogates) become backslash escapes."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def parts_below(path: Path, base: Path) -> tuple[str, ...]:
    """The names of ``path`` below ``base`` (both made absolute without resolving links).
    ValueError when ``path`` is not below ``base`` or names ``..``."""
    rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(base)).parts
    if not rel or any(p in ("..", ".") for p in rel):
        raise ValueError(f"{path} is not a file below {base}")
    return rel


def open_dir(base: Path, parts: tuple[str, ...]) -> int:
    """An fd of ``base/parts...``: ``base`` as given (trusted), each part without following a
    link. Refused for a link or non-folder; OSError for a missing one. The caller closes it."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in parts:
            nxt = _open_at(fd, name, DIR_FLAGS, want=stat.S_ISDIR, what="a folder")
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_at(dir_fd: int, name: str, flags: int, *, want, what: str) -> int:
    st = os.lstat(name, dir_fd=dir_fd)
    if not want(st.st_mode):
        raise Refused(f"{printable(name)!r} is {describe(st.st_mode)}, not {what}")
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:      # replaced between lstat and open (ELOOP for a new link)
        raise Refused(f"{printable(name)!r} changed while it was opened ({exc.strerror})") \
            from None
    st = os.fstat(fd)
    if not want(st.st_mode):
        os.close(fd)
        raise Refused(f"{printable(name)!r} is {describe(st.st_mode)}, not {what}")
    return fd


def open_regular(path: Path, base: Path) -> int:
    """An fd of the regular file ``path`` (below ``base``), reached without links."""
    parts = parts_below(path, base)
    dir_fd = open_dir(base, parts[:-1])
    try:
        return _open_at(dir_fd, parts[-1], FILE_FLAGS, want=stat.S_ISREG, what="a regular file")
    finally:
        os.close(dir_fd)


def read_capped(fd: int, cap: int) -> bytes:
    """At most ``cap + 1`` bytes of ``fd`` (one more than the cap tells the caller it is over),
    read in chunks into one buffer sized from fstat."""
    want = min(os.fstat(fd).st_size, cap) + 1
    buf = bytearray()
    while len(buf) < cap + 1:
        chunk = os.read(fd, min(bounds.READ_CHUNK_BYTES, max(want - len(buf), 1 << 16),
                                cap + 1 - len(buf)))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def read_regular(path: Path, base: Path, cap: int) -> bytes:
    """The bytes of a regular file below ``base`` reached without links. Refused for anything
    else; ``Refused`` also when the file is over ``cap`` bytes (checked by fstat, then while
    reading)."""
    fd = open_regular(path, base)
    try:
        size = os.fstat(fd).st_size
        if size > cap:
            raise TooBig(size)
        data = read_capped(fd, cap)
        if len(data) > cap:
            raise TooBig(len(data))
        return data
    finally:
        os.close(fd)


class TooBig(Refused):
    """A regular file over the caller's cap; ``size`` in bytes (at least)."""

    def __init__(self, size: int):
        super().__init__(f"the file is {size} bytes, over the cap")
        self.size = size


def sha256_fd(fd: int, limit: int) -> str:
    """sha256 of a file read in chunks (constant memory). A file of at most ``limit`` bytes
    gives the sha256 of its bytes; a bigger one is read only up to ``limit`` (bounded time),
    and its size is hashed after that prefix."""
    digest, done = hashlib.sha256(), 0
    while done <= limit and (chunk := os.read(fd, min(bounds.READ_CHUNK_BYTES,
                                                      limit + 1 - done))):
        digest.update(chunk)
        done += len(chunk)
    if done > limit:
        digest.update(b"\0over the cap\0%d" % os.fstat(fd).st_size)
    return digest.hexdigest()


# --- JSON structure, before parsing ------------------------------------------------------------
# Once escaped backslashes and quotes are cut out (in C), a string is '"[^"]*"' (an unterminated
# one runs to the end, so no start position is tried twice) and is skipped in C; only structural
# characters cost a Python step.
_TOKEN = re.compile(rb'"[^"]*(?:"|\Z)|[\[{,:]')


def count_json_values(data: bytes | bytearray, limit: int) -> int:
    """How many values (containers, elements, keys) a JSON parse of ``data`` builds, counted
    outside strings; stops as soon as the count passes ``limit`` (returns ``limit + 1``).
    Memory: at most two transient copies of ``data``; time: linear, plus ``limit`` steps."""
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    n = 0
    for m in _TOKEN.finditer(data):
        if data[m.start()] != 0x22:       # a structural character, not a string
            n += 1
            if n > limit:
                return n
    return n


_WIDE2 = re.compile(rb"[\xc4-\xef]")    # lead bytes of characters above U+00FF
_WIDE4 = re.compile(rb"[\xf0-\xff]")    # lead bytes of characters above U+FFFF (and invalid)


def decoded_width(data: bytes | bytearray) -> int:
    """Bytes per character of the str that decoding ``data`` as UTF-8 gives: 1, 2 or 4."""
    if _WIDE4.search(data):
        return 4
    return 2 if _WIDE2.search(data) else 1


def submission_base(path: Path, course_dir: Path | None) -> Path:
    """The trusted directory a student path is walked from: the course's ``submitted/`` when
    the path lies below it (so a linked student or assignment folder is refused too), else the
    folder the path names (only the file itself is then checked)."""
    if course_dir is not None:
        try:
            from autograder.course.paths import course_paths

            submitted = course_paths(course_dir).submitted
        except Exception:
            submitted = None
        cands = [] if submitted is None else [submitted]
        if submitted is not None:
            try:
                cands.append(Path(os.path.abspath(course_dir)) /
                             submitted.relative_to(Path(course_dir).resolve()))
            except (ValueError, AttributeError):
                pass
        for cand in cands:
            try:
                if len(parts_below(path, cand)) >= 2:
                    return cand
            except ValueError:
                continue
    return Path(os.path.abspath(path)).parent
