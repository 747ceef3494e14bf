"""Print one result as a readable table on the terminal (rich)."""
from __future__ import annotations

from autograder.results import GradingResult


def print_result(result: GradingResult) -> None:
    from rich.console import Console
    from rich.table import Table

    extra = result.extra_data
    table = Table(title=f"{extra.get('assignment')} · {extra.get('student')} · "
                        f"{result.score:g} / {extra.get('max_score', 0):g}")
    table.add_column("test")
    table.add_column("score", justify="right")
    table.add_column("message", overflow="fold")
    for t in result.tests:
        mark = "[green]✓[/]" if t.status == "passed" else "[red]✗[/]"
        table.add_row(f"{mark} {t.name}", f"{t.score:.2f}/{t.max_score:.2f}", t.output)
    console = Console()
    console.print(table)
    for flag in extra.get("flags", []):
        console.print(f"[yellow]flag[/] {flag.get('code')}: {flag.get('message', '')[:300]}")
    console.print(f"sandbox: {extra.get('sandbox') or '-'}   device: {extra.get('device') or '-'}   "
                  f"time: {result.execution_time:.1f} s")
