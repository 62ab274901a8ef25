#!/usr/bin/env python3
"""Benchmark of start-up and teardown time: N Docker hosts vs N plain Mininet hosts, spread over sites.

For each size (default 10, 50, 100 hosts) it brings up a star of sites (site 1 the hub, WAN links
to the others, unshaped) with that many Docker hosts (image testbed/echo, no fail-safe NICs), then
the same with plain Mininet hosts (namespaces, no image), all in the same run. "up" is
`Testbed.start()`: until the network is built, every switch has connected to the controller, the
interfaces are prepared and the containers are told to start their services; "down" is
`Testbed.stop()`. After each teardown it checks that nothing of the run is left
(`testbed.testing.leftovers`). Prints a table and writes bench/results/startup.json.

    sudo .venv/bin/python bench/startup.py [--sizes 10 50 100] [--sites 5] [--no-ping]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed.emulation.testbed import Testbed  # noqa: E402
from testbed.testing import leftovers  # noqa: E402
from testbed.topology.api import MecTopo  # noqa: E402
from testbed.topology.model import TopologySpec  # noqa: E402

log = logging.getLogger("startup")
IMAGE = "testbed/echo"
SUBNET = "10.77.0.0/16"
TARGET_S = 60.0  # 100 Docker hosts up in under a minute on a 2-core machine


@dataclass
class Row:
    """One measurement: `hosts` hosts of one kind brought up and torn down once."""

    hosts: int
    kind: str  # "docker" | "plain"
    sites: int
    up_s: float
    down_s: float
    ping_ok: bool | None  # first host reached the last (other site) right after start; None: not tried
    left_over: list[str]

    @property
    def per_host_s(self) -> float:
        """Start-up seconds per host."""
        return self.up_s / self.hosts


def star(hosts: int, sites: int, docker: bool) -> TopologySpec:
    """`hosts` hosts of one kind dealt round-robin over `sites` sites; site 1 is the hub of a WAN star."""
    t = MecTopo(f"startup-{'docker' if docker else 'plain'}-{hosts}", subnet=SUBNET)
    names = [t.addSite(f"site{i}") for i in range(1, sites + 1)]
    net = ipaddress.ip_network(SUBNET)
    for i in range(hosts):
        site = names[i % sites]
        ip = str(net.network_address + 10 + i)
        if docker:
            t.addDocker(f"d{i + 1}", site=site, dimage=IMAGE, ip=ip)
        else:
            t.addHost(f"p{i + 1}", site=site, ip=ip)
    for leaf in names[1:]:
        t.addWan(names[0], leaf)
    return t.build()


def ping_across(tb: Testbed, topo: TopologySpec) -> bool:
    """True when the first host answers a ping from the last (different sites when there are several)."""
    first, last = topo.sites[0].hosts[0], topo.sites[-1].hosts[-1]
    out = tb.node(last.name).cmd("ping", "-c", "3", "-i", "0.2", "-W", "2", first.ip.split("/")[0])
    m = re.search(r"(\d+) received", out)
    return bool(m and int(m.group(1)) > 0)


def measure(hosts: int, kind: str, sites: int, ping: bool) -> Row:
    """Bring one topology up and down, timing both; check that nothing is left behind."""
    topo = star(hosts, sites, kind == "docker")
    with tempfile.TemporaryDirectory(prefix="tb-startup-") as tmp:
        tb = Testbed(topo, Path(tmp) / "run", nics=False)
        t0 = time.monotonic()
        tb.start()
        up = time.monotonic() - t0
        ok: bool | None = None
        try:
            if ping:
                ok = ping_across(tb, topo)
        finally:
            t1 = time.monotonic()
            tb.stop()
            down = time.monotonic() - t1
        left = leftovers(tb.rid)
    return Row(hosts, kind, sites, round(up, 2), round(down, 2), ok, left)


def print_table(rows: list[Row]) -> None:
    """The table: hosts, kind, up s, per-host s, down s, docker/plain per-host ratio, ping, leftovers."""
    plain = {r.hosts: r for r in rows if r.kind == "plain"}
    print(f"\n{'hosts':>5} {'kind':>6} {'up s':>7} {'per-host s':>10} {'down s':>7} {'ratio d/p':>9} "
          f"{'ping':>5} {'left':>5}")
    for r in rows:
        ratio = f"{r.per_host_s / plain[r.hosts].per_host_s:.2f}" if r.kind == "docker" and r.hosts in plain else ""
        ping = "-" if r.ping_ok is None else ("ok" if r.ping_ok else "FAIL")
        print(f"{r.hosts:>5} {r.kind:>6} {r.up_s:>7.2f} {r.per_host_s:>10.3f} {r.down_s:>7.2f} {ratio:>9} "
              f"{ping:>5} {len(r.left_over):>5}")
    big = [r for r in rows if r.kind == "docker" and r.hosts >= 100]
    for r in big:
        verdict = "meets" if r.up_s < TARGET_S else "MISSES"
        print(f"\n{r.hosts} Docker hosts up in {r.up_s:.1f} s: {verdict} the target of {TARGET_S:.0f} s")


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 100], help="host counts (default 10 50 100)")
    ap.add_argument("--sites", type=int, default=5, help="sites in the star (default 5)")
    ap.add_argument("--kinds", nargs="+", choices=("docker", "plain"), default=["docker", "plain"])
    ap.add_argument("--no-ping", action="store_true", help="skip the reachability check after start-up")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "startup.json")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    if os.geteuid() != 0:
        print("needs root (Mininet, OVS, Docker)", file=sys.stderr)
        return 2
    results: dict = {"host": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "image": IMAGE, "sites": args.sites,
                     "load_before": load(), "rows": []}
    rows: list[Row] = []
    for n in args.sizes:
        for kind in args.kinds:
            row = measure(n, kind, args.sites, not args.no_ping)
            rows.append(row)
            print(f"{n} {kind}: up {row.up_s:.2f} s, down {row.down_s:.2f} s, ping {row.ping_ok}, "
                  f"left {row.left_over}", flush=True)
    results["load_after"] = load()
    results["rows"] = [{**asdict(r), "per_host_s": round(r.per_host_s, 4)} for r in rows]
    print_table(rows)
    print(f"\nload averages before {results['load_before']}, after {results['load_after']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if any(r.left_over for r in rows) or any(r.ping_ok is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
