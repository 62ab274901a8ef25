"""Human-readable `testbed inspect`: the deployed runs, or one run's nodes, links, controller and backends."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def show_runs(runs: list[dict[str, Any]], console: Console | None = None) -> None:
    """One line per deployed run."""
    console = console or Console()
    if not runs:
        console.print("no deployed runs (testbed deploy TOPOLOGY starts one)")
        return
    table = Table(title="deployed runs")
    for col in ("run", "topology", "nodes", "owner pid", "state", "directory"):
        table.add_column(col)
    for r in runs:
        table.add_row(r["rid"], r["topology"], str(len(r["nodes"])), str(r["owner"]),
                      "running" if r.get("alive") else "owner gone (testbed destroy)", r["run_dir"])
    console.print(table)


def show_run(run: dict[str, Any], console: Console | None = None) -> None:
    """A run's nodes (with NICs), links and their shaping, controller and backends."""
    console = console or Console()
    nodes = Table(title=f"run {run['rid']}: {run['topology']} ({'running' if run.get('alive') else 'owner gone'})")
    for col in ("node", "site", "kind", "address", "interfaces", "pid", "container / NIC"):
        nodes.add_column(col)
    for n in run["nodes"]:
        extra = n["container"] or ""
        if n["kind"] == "nic":
            extra = f"fail-safe NIC of {n['nic']['in_front_of']} (no IP: a bump in the wire)"
        elif n["nic"]:
            extra = (extra + " " if extra else "") + f"behind NIC {n['nic']['node']} ({n['nic']['ip']})"
        kind = f"docker {n['image']}" if n["kind"] == "docker" else n["kind"]
        nodes.add_row(n["name"], n["site"], kind, n["ip"] or "-", " ".join(n["interfaces"]), str(n["pid"]), extra)
    console.print(nodes)
    if run["links"]:
        links = Table(title="WAN links (delay one way, per direction)")
        for col in ("link", "a→b", "b→a"):
            links.add_column(col)
        for link in run["links"]:
            links.add_row(link["id"], link["forward"]["text"], link["reverse"]["text"])
        console.print(links)
    console.print(f"controller: {run['controller']['target']} (pid {run['controller']['pid']}); switches: "
                  + ", ".join(f"{k}={v}" for k, v in run["switches"].items()))
    console.print("backends: " + ", ".join(f"{k}={v}" for k, v in run["backends"].items()))
