"""The trusted worker's own line to a student's worker during one training run.

With a ``train`` request the grading process may hand the trusted worker the student worker's
request pipe (write end) and reply pipe (read end) (SCM_RIGHTS, ``Channel.exchange(fds=...)``).
``DirectLine.ask`` then sends each student call of the run itself and reads the reply through the
grading process's own ``channel.Channel``, so a round trip wakes two processes instead of four
and the grading process decodes nothing. The grading process keeps its other duties: it drains
the student's output while it waits for the run, and it alone stops, restarts or reports on the
student's worker.

Invariants:

- Replies are read with the same bounds as in the grading process (bytes, ASCII, JSON values);
  a line that is not the pending reply is skipped and counted (``junk``), and the count is
  reported to the grading process with every escalation and at the end of the run.
- Every call has a deadline: the student's call timeout, capped by what is left of its
  wall-clock budget (both sent by the grading process).
- Only the functions the grading process listed (defined, not failed earlier) are called
  directly, and only until the run's own time is up (``train_left``); any other request goes up
  to it (``relayed``) and is answered or refused there as before (a run past its time stops
  there, as it did).
- Anything but an ``ok`` reply goes up too, as ``{"op": "direct", "outcome": ...}``: a reply
  that reports an error (``error``, bounded by ``protocol.decode_error``, or None when it is not
  one; the grading process adds what it knows about limits), no reply in time (``expired``) or a
  closed reply pipe (``closed``). The grading process records these exactly as for its own
  requests; after ``expired`` or ``closed`` nothing more goes directly.
- The descriptors are closed when the run ends (``close``); the grading process keeps its own.
"""
from __future__ import annotations

import itertools
import secrets
import time

from autograder.sandbox import protocol
from autograder.sandbox.channel import Channel, ChannelClosed, ChannelExpired, OutputTail
from autograder.sandbox.protocol import ProtocolError


class DirectLine:
    """``ask(msg) -> reply`` for ``relay.Student``: direct where it may be, else ``relayed``.

    ``ends``: (request write end, reply read end) received from the grading process (closed by
    ``close``); ``spec``: ``{"fns": [names], "call_timeout": s, "wall_left": s | None,
    "train_left": s | None}``."""

    def __init__(self, ends: tuple[int, int], spec: dict, relayed):
        req_w, rep_r = ends
        self.chan: Channel | None = Channel(rep_r, None, OutputTail(0), req_w=req_w)
        self.fns = {str(f) for f in spec.get("fns") or ()}
        self.timeout = float(spec["call_timeout"])
        left = spec.get("wall_left")
        self.wall_deadline = None if left is None else time.monotonic() + float(left)
        left = spec.get("train_left")
        self.train_deadline = None if left is None else time.monotonic() + float(left)
        self.relayed = relayed
        self.junk_seen = self.junk_reported = 0
        self._ids = itertools.count(1)

    def ask(self, msg: dict) -> dict:
        fn = msg.get("fn")
        if self.chan is None or fn not in self.fns or (
                self.train_deadline is not None and time.monotonic() > self.train_deadline):
            return self.relayed(msg)
        rid = f"t{next(self._ids)}-{secrets.token_hex(4)}"   # unguessable, as the parent's
        deadline = time.monotonic() + self.timeout
        if self.wall_deadline is not None:
            deadline = min(deadline, self.wall_deadline)
        try:
            reply = self.chan.exchange(protocol.dumps({**msg, "id": rid}), rid, deadline)
        except ChannelExpired:
            return self._escalate(fn, "expired")
        except ChannelClosed:
            return self._escalate(fn, "closed")
        if reply.get("ok"):      # what the relay takes for a reply; it checks the rest
            return reply
        return self._escalate(fn, "error", reply)

    def _escalate(self, fn: str, outcome: str, reply: dict | None = None) -> dict:
        need: dict = {"op": "direct", "fn": fn, "outcome": outcome, "junk": self.new_junk()}
        if outcome != "error":
            self.close()
        else:       # bounded as the grading process bounds an error; read as the relay reads it
            assert reply is not None
            try:
                error = protocol.decode_error(reply.get("error"))
            except ProtocolError:
                error = None
            need["reply"] = {"ok": False, "error": error}
        return self.relayed(need)

    def new_junk(self) -> int:
        """Lines skipped on the reply pipe since the last report."""
        if self.chan is not None:
            self.junk_seen = self.chan.junk
        new, self.junk_reported = self.junk_seen - self.junk_reported, self.junk_seen
        return new

    def close(self) -> None:
        """Close this process's copies of the student worker's ends (idempotent)."""
        if self.chan is not None:   # whole lines still buffered were read, never replies
            self.junk_seen = self.chan.junk + self.chan.buf.count(b"\n")
            self.chan.close()
            self.chan = None
