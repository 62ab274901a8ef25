"""A host's network namespace seen from the root namespace: its links taken down and up, routes kept.

Everything here acts through `nsenter -t PID -n` with the root namespace's own `ip`, so it works
whatever runs (or no longer runs, or is frozen) inside the host: a killed or paused container
cannot answer a shell, but its namespace can still be reached through the holder's PID.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from testbed import proc


def nsenter(pid: int, argv: list[str]) -> list[str]:
    """`argv` run in the network namespace of process `pid` (root's binaries, root's file system)."""
    return ["nsenter", "-t", str(pid), "-n", *argv]


def links(pid: int) -> list[str]:
    """The interfaces of the namespace of `pid`, loopback left out."""
    out = proc.run(nsenter(pid, ["ip", "-j", "link", "show"]), timeout=10).stdout
    return [item["ifname"] for item in json.loads(out or "[]") if item.get("ifname") != "lo"]


def route_args(route: dict) -> list[str]:
    """`ip route replace` arguments that re-create one route of `ip -j route show`."""
    args = [route["dst"]]
    if route.get("gateway"):
        args += ["via", route["gateway"]]
    if route.get("dev"):
        args += ["dev", route["dev"]]
    if route.get("metric") is not None:
        args += ["metric", str(route["metric"])]
    if route.get("prefsrc"):
        args += ["src", route["prefsrc"]]
    return args


@dataclass
class LinkState:
    """What taking a namespace's links down loses and bringing them up must restore: its static routes."""

    routes: list[dict] = field(default_factory=list)


def static_routes(pid: int) -> list[dict]:
    """The routes of the namespace of `pid` that the kernel would not re-create on link up."""
    out = proc.run(nsenter(pid, ["ip", "-j", "route", "show"]), timeout=10).stdout
    return [r for r in json.loads(out or "[]") if r.get("protocol") != "kernel"]


def links_down(pid: int) -> LinkState:
    """Every interface of the namespace of `pid` down (the host falls silent); what `links_up` needs back."""
    state = LinkState(static_routes(pid))
    for name in links(pid):
        proc.run(nsenter(pid, ["ip", "link", "set", "dev", name, "down"]), timeout=10)
    return state


def links_up(pid: int, state: LinkState | None = None) -> None:
    """Every interface of the namespace of `pid` up again, with the routes `links_down` saw."""
    for name in links(pid):
        proc.run(nsenter(pid, ["ip", "link", "set", "dev", name, "up"]), timeout=10)
    for route in (state.routes if state else []):
        proc.run(nsenter(pid, ["ip", "route", "replace", *route_args(route)]), timeout=10)
