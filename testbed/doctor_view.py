"""Shows a doctor report as a table for people."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from testbed.doctor import Report


def show(report: Report, console: Console | None = None) -> None:
    """Print the checks, the chosen backends and a fix for each missing requirement."""
    console = console or Console()
    table = Table(title="testbed doctor")
    for col in ("check", "status", "found", "fix / note"):
        table.add_column(col)
    for c in report.checks:
        status = "[green]ok[/]" if c.ok else ("[red]MISSING[/]" if c.required else "[yellow]absent[/]")
        table.add_row(c.name, status, c.value, "" if c.ok else c.hint)
    console.print(table)
    console.print(f"link backend: [bold]{report.link_backend}[/]   "
                  f"OVS datapath: [bold]{report.ovs_datapath}[/]   "
                  f"criu check: [bold]{'yes' if report.criu else 'no'}[/]   "
                  f"container checkpoint/restore: [bold]{'yes' if report.checkpoint_restore.get('ok') else 'no'}[/]")
    if not report.ok:
        console.print("[red]a required capability is missing: see the fix column[/]")
