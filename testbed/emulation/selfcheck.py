"""Measures every path once after bring-up: configured vs measured ping RTT, pings in parallel.

Every host pair's path is a source access link, the site path between and a destination access
link, so the check covers every one of those: each pair of sites with hosts (first host to first
host, the WAN links between, `plan`), and every other host from the first host of its site (its
access link through the site's switch, `host_rows`, with `hosts=True`). Not all n² pairs: 100
hosts would be 4,950 pings. `hosts` is off by default for now: the reports' callers and three
integration tests count one row per site pair.
"""

from __future__ import annotations

import re
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations
from typing import TYPE_CHECKING

from testbed import proc
from testbed.topology.model import TopologySpec, WanLinkSpec

if TYPE_CHECKING:
    from testbed.emulation.testbed import Testbed

_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")
#: Pings running at once (each its own process in the source host's namespace).
PARALLEL = 16
INTERVAL_S = 0.05


def site_path(topo: TopologySpec, src_site: str, dst_site: str) -> list[WanLinkSpec]:
    """The WAN links from `src_site` to `dst_site`, in order (the sites form a tree); [] for one site."""
    adj: dict[str, list[tuple[str, WanLinkSpec]]] = {s.name: [] for s in topo.sites}
    for w in topo.wan:
        adj[w.a].append((w.b, w))
        adj[w.b].append((w.a, w))
    came: dict[str, tuple[str, WanLinkSpec] | None] = {src_site: None}
    todo = deque([src_site])
    while todo:
        here = todo.popleft()
        for there, link in adj[here]:
            if there not in came:
                came[there] = (here, link)
                todo.append(there)
    if dst_site not in came:
        raise ValueError(f"no WAN path from {src_site} to {dst_site}")
    links: list[WanLinkSpec] = []
    at = dst_site
    while (step := came[at]) is not None:
        at, link = step
        links.append(link)
    return links[::-1]


def path_delay_ms(topo: TopologySpec, src_site: str, dst_site: str) -> float:
    """Sum of one-way WAN delays from `src_site` to `dst_site` and back (the sites form a tree)."""
    total, at = 0.0, src_site
    for w in site_path(topo, src_site, dst_site):
        out, back = (w.forward, w.reverse) if w.a == at else (w.reverse, w.forward)
        total += out.delay_ms + back.delay_ms
        at = w.b if w.a == at else w.a
    return total


def parse_ping(text: str) -> dict[str, float] | None:
    """min/avg/max/mdev in ms from ping's summary line, or None when nothing came back."""
    m = _RTT.search(text)
    if not m:
        return None
    return dict(zip(("min", "avg", "max", "mdev"), map(float, m.groups())))


def ping_args(pid: int, dst_ip: str, count: int) -> list[str]:
    """ping `dst_ip` `count` times from the network namespace of process `pid`."""
    return ["nsenter", f"--target={pid}", "--net", "ping", "-n", "-q", "-c", str(count), "-i", str(INTERVAL_S),
            "-W", "2", dst_ip]


def plan(topo: TopologySpec) -> list[dict]:
    """One row per pair of sites with hosts: the first host of each, the path between and its configured RTT."""
    firsts = [(s.name, s.hosts[0]) for s in topo.sites if s.hosts]
    rows = []
    for (a, src), (b, dst) in combinations(firsts, 2):
        links = site_path(topo, a, b)
        expected = path_delay_ms(topo, a, b) + 2 * src.access.delay_ms + 2 * dst.access.delay_ms
        rows.append({"link": ", ".join(w.name for w in links) or a, "path": [a, b],
                     "wan_links": len(links), "src": src.name, "dst": dst.name,
                     "dst_ip": dst.ip.split("/")[0], "configured_rtt_ms": round(expected, 3)})
    return rows


def host_rows(topo: TopologySpec) -> list[dict]:
    """One row per host that is not the first of its site: from the site's first host, through the site's switch."""
    rows = []
    for site in topo.sites:
        first = site.hosts[0] if site.hosts else None
        for dst in site.hosts[1:]:
            assert first is not None
            rows.append({"link": site.name, "path": [site.name, site.name], "wan_links": 0, "src": first.name,
                         "dst": dst.name, "dst_ip": dst.ip.split("/")[0],
                         "configured_rtt_ms": round(2 * first.access.delay_ms + 2 * dst.access.delay_ms, 3)})
    return rows


def measure_wan(tb: "Testbed", count: int = 5, hosts: bool = False) -> list[dict]:
    """Ping every site pair's path (`plan`) and, with `hosts`, every host's access path (`host_rows`), PARALLEL at a time."""
    rows = plan(tb.topo) + (host_rows(tb.topo) if hosts else [])

    def one(row: dict) -> dict:
        pid = tb.node(row["src"]).pid
        run = tb.door(row["src"]).run  # the server the source host is on (this machine unless placed elsewhere)
        run(ping_args(pid, row["dst_ip"], 1), timeout=10, check=False)  # ARP and flows, not measured
        out = run(ping_args(pid, row["dst_ip"], count), timeout=count * INTERVAL_S + 10, check=False)
        measured = parse_ping(out.stdout)
        done = {k: v for k, v in row.items() if k != "dst_ip"}
        done["measured"] = measured
        if measured:
            done["error_ms"] = round(measured["avg"] - row["configured_rtt_ms"], 3)
        return done

    if not rows:
        return []
    with ThreadPoolExecutor(max_workers=min(PARALLEL, len(rows)), thread_name_prefix="selfcheck") as pool:
        return list(pool.map(one, rows))
