"""Measures each WAN link once after bring-up: configured vs measured ping RTT."""

from __future__ import annotations

import re
from collections import deque
from typing import TYPE_CHECKING

from testbed.topology.model import TopologySpec

if TYPE_CHECKING:
    from testbed.emulation.testbed import Testbed

_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")


def path_delay_ms(topo: TopologySpec, src_site: str, dst_site: str) -> float:
    """Sum of one-way WAN delays from `src_site` to `dst_site` and back (the sites form a tree)."""
    adj: dict[str, list[tuple[str, float, float]]] = {s.name: [] for s in topo.sites}
    for w in topo.wan:
        adj[w.a].append((w.b, w.forward.delay_ms, w.reverse.delay_ms))
        adj[w.b].append((w.a, w.reverse.delay_ms, w.forward.delay_ms))
    seen = {src_site: 0.0}
    todo = deque([src_site])
    while todo:
        here = todo.popleft()
        for there, out, back in adj[here]:
            if there not in seen:
                seen[there] = seen[here] + out + back
                todo.append(there)
    if dst_site not in seen:
        raise ValueError(f"no WAN path from {src_site} to {dst_site}")
    return seen[dst_site]


def parse_ping(text: str) -> dict[str, float] | None:
    """min/avg/max/mdev in ms from ping's summary line, or None when nothing came back."""
    m = _RTT.search(text)
    if not m:
        return None
    return dict(zip(("min", "avg", "max", "mdev"), map(float, m.groups())))


def measure_wan(tb: "Testbed", count: int = 5) -> list[dict]:
    """Ping from a host of one site to a host of the other, for each WAN link."""
    results = []
    for wan in tb.topo.wan:
        a_hosts, b_hosts = tb.topo.site(wan.a).hosts, tb.topo.site(wan.b).hosts
        row: dict = {"link": wan.name, "configured_rtt_ms": None, "measured": None}
        if not a_hosts or not b_hosts:
            row["note"] = "a site without hosts: nothing to ping"
            results.append(row)
            continue
        src, dst = a_hosts[0], b_hosts[0]
        expected = (path_delay_ms(tb.topo, wan.a, wan.b) + 2 * src.access.delay_ms
                    + 2 * dst.access.delay_ms)
        node = tb.node(src.name)
        dst_ip = dst.ip.split("/")[0]
        node.cmd("ping", "-c", "1", "-W", "2", dst_ip)  # ARP and flow set-up, not measured
        out = node.cmd("ping", "-c", str(count), "-i", "0.2", "-q", "-W", "2", dst_ip)
        measured = parse_ping(out)
        row.update(src=src.name, dst=dst.name, configured_rtt_ms=round(expected, 3), measured=measured)
        if measured:
            row["error_ms"] = round(measured["avg"] - expected, 3)
        results.append(row)
    return results
