"""The parent's end of one worker's pipes (or a zygote's control socket), and bounded reply reading.

Invariants:

- A channel holds a reply pipe, an optional output pipe (the worker's fd 1 and 2) and either a
  request pipe or a control socket (SOCK_SEQPACKET, descriptors passed with SCM_RIGHTS). The
  request "pipe" may be a stream socket (the trusted worker's): descriptors then travel with the
  first byte of a request line (``exchange(..., fds=...)``). Every descriptor it holds is
  non-blocking; ``close`` closes them all once.
- The output pipe is drained into an ``OutputTail`` (at most ``cap`` bytes kept, the count of
  earlier bytes dropped) whenever the parent waits, so student prints never block the protocol;
  ``exchange(..., drain=...)`` drains other channels' output pipes too while it waits (a
  student's worker that the trusted worker talks to directly).
- Every wait ends by an absolute ``time.monotonic()`` deadline: ``ChannelExpired``. A closed
  reply pipe or broken request pipe or socket: ``ChannelClosed``.
- Replies are untrusted. A reply line is bounded before it is decoded: at most
  ``bounds.REPLY_MAX_BYTES`` bytes, ASCII only, at most ``bounds.REPLY_MAX_VALUES`` JSON values;
  a line over a bound fails the pending request with a ``ReplyTooLarge`` error reply, and any
  line that is not the pending request's reply is skipped; both count in ``Channel.junk``. The
  buffer never holds more than the byte cap plus one read (``READ_CHUNK`` bytes).
- Skipped lines cost a bounded amount per wait: past ``bounds.REPLY_MAX_JUNK_LINES`` lines or
  ``bounds.REPLY_MAX_JUNK_BYTES`` bytes of them in one ``exchange``, the pending request fails
  with a ``ProtocolJunk`` error reply.
"""
from __future__ import annotations

import array
import os
import select
import socket
import stat
import time

from autograder import bounds
from autograder.load.untrusted import count_json_values
from autograder.sandbox import protocol
from autograder.sandbox.protocol import ProtocolError

READ_CHUNK = 4 << 20      # bytes read from the reply pipe at once


class ChannelClosed(Exception):
    """The reply pipe was closed, or the request pipe or control socket broke."""


class ChannelExpired(Exception):
    """The deadline passed before the reply came."""


def close_fds(*fds: int | None) -> None:
    """Close each descriptor given (None and negative ones are skipped); never raises."""
    for fd in fds:
        if fd is not None and fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


class OutputTail:
    """The last ``cap`` bytes of a worker's stdout+stderr, and how many earlier bytes were
    dropped. Persists across restarts of the same Worker."""

    def __init__(self, cap_bytes: int):
        self.cap, self.buf, self.dropped = cap_bytes, bytearray(), 0

    def feed(self, data: bytes) -> None:
        self.buf += data
        extra = len(self.buf) - self.cap
        if extra > 0:
            del self.buf[:extra]
            self.dropped += extra

    def text(self) -> str:
        body = self.buf.decode("utf-8", errors="replace")
        if self.dropped:
            return f"[... {self.dropped} earlier bytes of output not kept ...]\n{body}"
        return body


class Channel:
    """Request pipe (or control socket), reply pipe and output pipe of one process."""

    def __init__(self, rep_r: int, out_r: int | None, tail: OutputTail, req_w: int | None = None,
                 sock: socket.socket | None = None):
        self.rep_r, self.out_r, self.req_w, self.sock, self.tail = rep_r, out_r, req_w, sock, tail
        for fd in (rep_r, out_r, req_w):
            if fd is not None:
                os.set_blocking(fd, False)
        self.buf, self.scanned, self.discarding = bytearray(), 0, False
        self.junk = self.junk_reported = 0
        self.skipped_lines = self.skipped_bytes = 0     # in the current exchange

    @property
    def passes_fds(self) -> bool:
        """Whether ``exchange`` can send descriptors with a request (a socket to write to)."""
        if self.sock is not None:
            return True
        try:
            return self.req_w is not None and self.req_w >= 0 and \
                stat.S_ISSOCK(os.fstat(self.req_w).st_mode)
        except OSError:
            return False

    def exchange(self, line: bytes | None, rid: str, deadline: float, fds: tuple = (),
                 drain: tuple = ()) -> dict:
        """Send ``line`` (if any; with the descriptors ``fds``), then return the first reply
        whose id is ``rid``, draining the output pipes of the channels ``drain`` meanwhile.
        Raises ChannelClosed (reply pipe closed or request pipe broken) or ChannelExpired
        (``deadline`` passed)."""
        pending: memoryview | None = \
            memoryview(line) if line is not None and self.sock is None else None
        if line is not None and self.sock is not None:
            self._send_control(line, fds)
        elif pending and fds:
            pending = pending[self._send_first_byte(bytes(pending[:1]), fds):]
        poller = select.poll()
        poller.register(self.rep_r, select.POLLIN)
        if self.out_r is not None:
            poller.register(self.out_r, select.POLLIN)
        others = {c.out_r: c for c in drain if c is not None and c.out_r is not None
                  and c.out_r >= 0}
        self.skipped_lines = self.skipped_bytes = 0
        for fd in others:
            poller.register(fd, select.POLLIN)
        if pending:
            assert self.req_w is not None       # a pipe channel (no socket) has a request pipe
            poller.register(self.req_w, select.POLLOUT)
        while True:
            msg = None if pending else self._buffered_reply(rid)  # replies count once all is sent
            if msg is not None:
                return msg
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChannelExpired()
            for fd, ev in poller.poll(max(1, int(remaining * 1000) + 1)):
                if fd == self.out_r:
                    if not self._drain_output():
                        poller.unregister(fd)
                elif fd in others:
                    if not others[fd]._drain_output():
                        poller.unregister(fd)
                elif fd == self.req_w:
                    assert pending is not None      # registered only while there is some
                    try:
                        n = os.write(fd, pending[:1 << 16])
                    except BlockingIOError:
                        continue
                    except (BrokenPipeError, OSError):
                        raise ChannelClosed() from None
                    pending = pending[n:]
                    if not pending:
                        poller.unregister(fd)
                elif fd == self.rep_r:
                    try:
                        data = os.read(fd, READ_CHUNK)
                    except BlockingIOError:
                        continue
                    if not data:
                        raise ChannelClosed()
                    self.buf += data

    def _send_control(self, line: bytes, fds: tuple) -> None:
        assert self.sock is not None            # called only for a socket channel
        try:
            self.sock.sendmsg([line], rights(fds))
        except OSError:
            raise ChannelClosed() from None

    def _send_first_byte(self, first: bytes, fds: tuple) -> int:
        """Send one byte of a request with ``fds`` attached (SCM_RIGHTS on a stream socket)."""
        assert self.req_w is not None
        sock = socket.socket(fileno=os.dup(self.req_w))
        try:
            for _ in range(100):        # the socket is non-blocking; an idle one takes it at once
                try:
                    return sock.sendmsg([first], rights(fds))
                except BlockingIOError:
                    select.select([], [self.req_w], [], 0.1)
            raise ChannelClosed()
        except OSError:
            raise ChannelClosed() from None
        finally:
            sock.close()

    def _buffered_reply(self, rid: str) -> dict | None:
        """The reply to ``rid`` if a whole one is buffered. Every line is bounded before it is
        decoded (``bounds.REPLY_MAX_BYTES``, ASCII only, then ``REPLY_MAX_VALUES`` counted
        outside strings):
        a line over either fails the pending request at once with a ``ReplyTooLarge`` error
        reply and is counted as junk; the buffer never holds more than the cap plus one read."""
        while True:
            i = self.buf.find(b"\n", self.scanned)
            if i < 0:
                self.scanned = len(self.buf)
                if self.discarding:
                    self.buf.clear()
                    self.scanned = 0
                elif len(self.buf) > bounds.REPLY_MAX_BYTES:
                    self.buf.clear()
                    self.scanned, self.discarding = 0, True
                    self.junk += 1
                    return too_large(rid, f"over {bounds.REPLY_MAX_BYTES >> 20} MiB")
                return None
            if self.discarding or i > bounds.REPLY_MAX_BYTES:
                del self.buf[:i + 1]
                self.scanned = 0
                if self.discarding:
                    self.discarding = False
                    continue
                self.junk += 1
                return too_large(rid, f"over {bounds.REPLY_MAX_BYTES >> 20} MiB")
            if self.skipped_lines >= bounds.REPLY_MAX_JUNK_LINES or \
                    self.skipped_bytes >= bounds.REPLY_MAX_JUNK_BYTES:
                return too_much_junk(rid)
            line = self.buf[:i]
            del self.buf[:i + 1]
            self.scanned = 0
            if not line.isascii():      # the protocol is ASCII: decoding stays 1 byte a char
                self._skipped(line)
                continue
            # each value counted is one byte of the line: a short line cannot pass the cap
            if len(line) > bounds.REPLY_MAX_VALUES and \
                    count_json_values(line, bounds.REPLY_MAX_VALUES) > bounds.REPLY_MAX_VALUES:
                self.junk += 1
                return too_large(rid, f"more than {bounds.REPLY_MAX_VALUES:,} values")
            try:
                msg = protocol.loads(line)
            except ProtocolError:
                self._skipped(line)
                continue
            if msg.get("id") == rid:
                return msg
            self._skipped(line)

    def _skipped(self, line: bytearray) -> None:
        self.junk += 1
        self.skipped_lines += 1
        self.skipped_bytes += len(line) + 1

    def _drain_output(self) -> bool:
        """Read what the output pipe holds; False once it is closed."""
        assert self.out_r is not None           # polled only when there is an output pipe
        while True:
            try:
                data = os.read(self.out_r, 1 << 16)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            self.tail.feed(data)

    def drain(self) -> None:
        if self.out_r is not None:
            self._drain_output()

    def close(self) -> None:
        self.drain()
        close_fds(self.rep_r, self.out_r, self.req_w)
        if self.sock is not None:
            self.sock.close()
        self.rep_r = self.out_r = self.req_w = -1


def rights(fds: tuple) -> list:
    """The ancillary data that passes ``fds`` with a message (none for no descriptors)."""
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] \
        if fds else []


def too_much_junk(rid: str) -> dict:
    """The error reply that stands for too many lines that were not replies in one wait."""
    return {"id": rid, "ok": False, "error": {
        "type": "ProtocolJunk", "message": f"more than {bounds.REPLY_MAX_JUNK_LINES:,} lines "
        f"(or {bounds.REPLY_MAX_JUNK_BYTES >> 20} MiB) that were not replies came on the "
        "grader's reply channel; never write to the grader's channels"}}


def too_large(rid: str, what: str) -> dict:
    """The error reply that stands for a reply line over the parent's bounds."""
    return {"id": rid, "ok": False, "error": {
        "type": "ReplyTooLarge", "message": f"the reply to the grader was {what}; return "
        "values of the documented types and sizes, and never write to the grader's channels"}}
