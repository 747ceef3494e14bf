"""Print one result as a readable table on the terminal (rich), and a progress line meanwhile.

The table shows what the feedback page shows, the same way: points with ``fmt_points``, failed
checks with the same message once, a question left as the stub once as "not attempted"
(``autograder.course.feedback.questions``).
"""
from __future__ import annotations

import sys
import threading
import time

from autograder.points import fmt_points
from autograder.results import GradingResult


def print_result(result: GradingResult, file=None) -> None:
    from rich.console import Console
    from rich.table import Table

    from autograder.course.feedback import questions

    details = result.details
    table = Table(title=f"{details.assignment} · {details.student} · "
                        f"{fmt_points(result.score)} / {fmt_points(details.max_score)}")
    table.add_column("check")
    table.add_column("points", justify="right")
    table.add_column("message", overflow="fold")
    for q in questions(result):
        for row in q["rows"]:
            if row["not_attempted"]:
                mark = "[yellow]–[/]"
            else:
                mark = "[green]✓[/]" if row["status"] == "passed" else "[red]✗[/]"
            titles = row["titles"]
            name = titles[0] if len(titles) == 1 else f"{len(titles)} checks: " + "; ".join(titles)
            table.add_row(f"{mark} {q['cell']}: {name}",
                          f"{fmt_points(row['score'])}/{fmt_points(row['max_score'])}",
                          row["output"])
    console = Console(file=file)
    console.print(table)
    for flag in details.flags:
        console.print(f"[yellow]flag[/] {flag.code}: {flag.message[:300]}")
    console.print(f"sandbox: {details.sandbox or '-'}   "
                  f"device: {details.device or '-'}   "
                  f"time: {result.execution_time:.1f} s")


class Progress:
    """``with Progress("grading x.ipynb"):`` a progress line on stderr while the block runs.

    On a terminal: a spinner with the elapsed seconds, redrawn in place and erased at the end.
    Otherwise: one short line at the start and one at the end. Never writes to stdout."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, what: str, stream=None, interval: float = 0.1):
        self.what, self.stream, self.interval = what, stream or sys.stderr, interval
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Progress":
        self.started = time.monotonic()
        if self.tty:
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        else:
            print(f"{self.what} ...", file=self.stream, flush=True)
        return self

    def _spin(self) -> None:
        i = 0
        while not self._stop.wait(self.interval):
            elapsed = time.monotonic() - self.started
            self.stream.write(f"\r{self.FRAMES[i % len(self.FRAMES)]} {self.what} {elapsed:.0f} s")
            self.stream.flush()
            i += 1

    def __exit__(self, *exc) -> None:
        elapsed = time.monotonic() - self.started
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
        else:
            print(f"{self.what}: done in {elapsed:.1f} s", file=self.stream, flush=True)
