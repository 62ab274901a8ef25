#!/usr/bin/env python3
"""Benchmark of start-up and teardown time: N Docker hosts vs N plain Mininet hosts, spread over sites.

For each size (default 10, 50, 100 hosts) it brings up a star of sites (site 1 the hub, WAN links
to the others, unshaped) with that many Docker hosts (image testbed/echo, no fail-safe NICs), then
the same with plain Mininet hosts (namespaces, no image), all in the same run. "up" is
`Testbed.start()`: until the network is built, every switch has connected to the controller, the
interfaces are prepared and the containers are told to start their services; "down" is
`Testbed.stop()`. After each teardown it checks that nothing of the run is left
(`testbed.testing.leftovers`). Prints a table and writes bench/results/startup.json.

Baseline: Containernet measured in the same run, where it is installed (an optional step, not a
dependency: a separate virtual environment with Containernet, given as --containernet-python);
otherwise the plain Mininet hosts of the same run. Also, in the same run, the Docker engine's own
floor: N bare containers (testbed/base running `sleep`, no network, no log, labelled and recorded
like the hosts') created and started, then removed, from the same thread pool as the hosts'
(--no-floor skips it). --profile prints where the time went (bench/startup_profile.py).

--servers 2: the same Docker-host topology is also brought up with every other site placed on a
second server (a namespace server of testbed/cluster/harness.py: sshd and its own Open vSwitch in
a network namespace, reached over ssh; on this machine it shares the CPU and the Docker engine),
so its hosts are made by that server's engine through the ssh-forwarded socket, their shells run
over ssh, and the WAN links to its sites are SSH tunnels; printed next to the one-server figures
of the same run, with the ratio. Use an even --sites for an even split.

    sudo .venv/bin/python bench/startup.py [--sizes 10 50 100] [--sites 5] [--no-ping] [--profile] [--no-floor]
        [--containernet-python /opt/containernet/bin/python] [--servers 2]
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
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from testbed.cluster import harness  # noqa: E402
from testbed.cluster.harness import NamespaceServer  # noqa: E402
from testbed.emulation.testbed import Testbed  # noqa: E402
from testbed.testing import leftovers  # noqa: E402
from testbed.topology.api import MecTopo  # noqa: E402
from testbed.topology.model import ServerSpec, TopologySpec  # noqa: E402

log = logging.getLogger("startup")
IMAGE = "testbed/echo"
SUBNET = "10.77.0.0/16"
TARGET_UP_S = 12.0  # 100 Docker hosts up within 12 s on a quiet 2-core machine
TARGET_DOWN_S = 4.0  # and down within 4 s
#: Containernet's own start-up of N Docker hosts on one switch, run in its interpreter; prints JSON.
CONTAINERNET_SCRIPT = r"""
import json, sys, time
from mininet.net import Containernet
from mininet.node import Controller
from mininet.log import setLogLevel
n = int(sys.argv[1])
setLogLevel("warning")
t0 = time.monotonic()
net = Containernet(controller=Controller)
net.addController("c0")
s1 = net.addSwitch("s1")
for i in range(n):
    d = net.addDocker("cn%d" % i, ip="10.76.%d.%d" % (i // 250, i % 250 + 2), dimage=sys.argv[2])
    net.addLink(d, s1)
net.start()
up = time.monotonic() - t0
t1 = time.monotonic()
net.stop()
print(json.dumps({"up_s": up, "down_s": time.monotonic() - t1}))
"""


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
    servers: int = 1  # machines the sites were placed on
    hosts_far: int = 0  # hosts on the second server

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


def split(topo: TopologySpec, far: ServerSpec) -> TopologySpec:
    """`topo` with every other site (the 2nd, 4th, ...) placed on server `far`; the hub stays here."""
    sites = tuple(replace(s, server=far.name) if i % 2 else s for i, s in enumerate(topo.sites))
    return replace(topo, name=topo.name + "-2srv", sites=sites, servers=(far,))


def ping_across(tb: Testbed, topo: TopologySpec) -> bool:
    """True when the first host answers a ping from the last (different sites when there are several)."""
    first, last = topo.sites[0].hosts[0], topo.sites[-1].hosts[-1]
    out = tb.node(last.name).cmd("ping", "-c", "3", "-i", "0.2", "-W", "2", first.ip.split("/")[0])
    m = re.search(r"(\d+) received", out)
    return bool(m and int(m.group(1)) > 0)


def measure(hosts: int, kind: str, sites: int, ping: bool, profile: bool = False,
            far: "NamespaceServer | None" = None) -> Row:
    """Bring one topology up and down, timing both; check that nothing is left behind (on `far` too)."""
    from startup_profile import Profile, print_profile

    topo = star(hosts, sites, kind == "docker")
    if far is not None:
        s = far.server
        topo = split(topo, ServerSpec(s.name, s.address, s.user, s.key, s.port, s.known_hosts))
    prof_up, prof_down = Profile(), Profile()
    with tempfile.TemporaryDirectory(prefix="tb-startup-") as tmp:
        tb = Testbed(topo, Path(tmp) / "run", nics=False)
        if profile:
            prof_up.install()
        t0 = time.monotonic()
        try:
            tb.start()
        finally:
            prof_up.uninstall()
        up = time.monotonic() - t0
        ok: bool | None = None
        try:
            if ping:
                ok = ping_across(tb, topo)
        finally:
            if profile:
                prof_down.install()
            t1 = time.monotonic()
            try:
                tb.stop()
            finally:
                prof_down.uninstall()
            down = time.monotonic() - t1
        left = leftovers(tb.rid) + ([f"{x} on {far.server.name}" for x in far.run_leftovers(tb.rid)] if far else [])
    if profile:
        print_profile(f"{hosts} {kind} hosts, {sites} sites: up {up:.2f} s", prof_up.table())
        print_profile(f"{hosts} {kind} hosts, {sites} sites: down {down:.2f} s", prof_down.table())
    n_far = sum(len(s.hosts) for s in topo.sites if s.server != "localhost")
    return Row(hosts, kind, sites, round(up, 2), round(down, 2), ok, left, 2 if far else 1, n_far)


def engine_floor(hosts: int) -> dict[str, float]:
    """Seconds this machine's Docker engine takes to create+start and then remove `hosts` bare containers (the floor)."""
    from concurrent.futures import ThreadPoolExecutor

    from testbed import clean, ledger
    from testbed.emulation.dockerhost import docker_client
    from testbed.emulation.prelaunch import HOLDER_IMAGE, WORKERS, start_container

    rid = ledger.new_run_id()
    book = ledger.Ledger(rid)
    client = docker_client()
    args = [dict(image=HOLDER_IMAGE, name=f"{book.prefix}-bare{i}", detach=True, init=True, network_mode="none",
                 entrypoint=["sleep", "infinity"], command=[], log_config={"type": "none"},
                 labels={ledger.LABEL: rid}) for i in range(hosts)]
    for a in args:
        book.record("container", a["name"], image=HOLDER_IMAGE)
    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            t0 = time.monotonic()
            boxes = [box for box, _ in pool.map(lambda a: start_container(client, a, a["name"]), args)]
            up = time.monotonic() - t0
            t1 = time.monotonic()
            list(pool.map(lambda box: box.remove(force=True), boxes))
            down = time.monotonic() - t1
    finally:
        clean.clean_run(rid)
        client.close()
    return {"up_s": round(up, 2), "down_s": round(down, 2)}


def containernet(python: str, hosts: int, image: str = IMAGE) -> dict | str:
    """Containernet's up and down seconds for `hosts` Docker hosts on one switch, or why not measured."""
    from testbed import proc

    res = proc.run([python, "-c", CONTAINERNET_SCRIPT, str(hosts), image], timeout=900, check=False)
    if not res.ok:
        return f"Containernet run failed: {(res.stderr or res.stdout).strip().splitlines()[-1:]}"
    return json.loads(res.stdout.strip().splitlines()[-1])


def print_table(rows: list[Row], baseline: dict[int, dict], floor: dict[int, dict]) -> None:
    """The table: hosts, kind, up/down s, per-host s, docker/plain per-host ratio, ping, leftovers; then the goal."""
    plain = {(r.hosts, r.sites): r for r in rows if r.kind == "plain"}
    print(f"\n{'hosts':>5} {'sites':>5} {'kind':>6} {'up s':>7} {'per-host s':>10} {'down s':>7} {'ratio d/p':>9} "
          f"{'ping':>5} {'left':>5}")
    for r in rows:
        p = plain.get((r.hosts, r.sites))
        ratio = f"{r.per_host_s / p.per_host_s:.2f}" if r.kind == "docker" and p else ""
        ping = "-" if r.ping_ok is None else ("ok" if r.ping_ok else "FAIL")
        print(f"{r.hosts:>5} {r.sites:>5} {r.kind:>6} {r.up_s:>7.2f} {r.per_host_s:>10.3f} {r.down_s:>7.2f} {ratio:>9} "
              f"{ping:>5} {len(r.left_over):>5}")
    for n, cn in sorted(baseline.items()):
        if isinstance(cn, dict):
            print(f"{n:>5} {1:>5} {'cnet':>6} {cn['up_s']:>7.2f} {cn['up_s'] / n:>10.3f} {cn['down_s']:>7.2f}"
                  f"          (Containernet, same run)")
        else:
            print(f"{n:>5}  Containernet: {cn}")
    for n, f in sorted(floor.items()):
        print(f"{n:>5} {'-':>5} {'bare':>6} {f['up_s']:>7.2f} {f['up_s'] / n:>10.3f} {f['down_s']:>7.2f}"
              f"          (the engine alone: bare containers, same run)")
    for r in (r for r in rows if r.kind == "docker" and r.hosts >= 100):
        verdict = "meets" if r.up_s <= TARGET_UP_S and r.down_s <= TARGET_DOWN_S else "MISSES"
        cn = baseline.get(r.hosts)
        if isinstance(cn, dict):
            against = (f"Containernet same run {cn['up_s']:.1f} s up, {cn['down_s']:.1f} s down: "
                       f"{cn['up_s'] / r.up_s:.2f}x faster up, {cn['down_s'] / r.down_s:.2f}x down")
        elif (r.hosts, r.sites) in plain:
            p = plain[(r.hosts, r.sites)]
            against = (f"plain Mininet hosts same run {p.up_s:.1f} s up, {p.down_s:.1f} s down: "
                       f"Docker/plain {r.up_s / p.up_s:.2f}x up, {r.down_s / p.down_s:.2f}x down")
        else:
            against = "no baseline measured"
        print(f"\n{r.hosts} Docker hosts on {r.sites} site(s): up {r.up_s:.1f} s, down {r.down_s:.1f} s: {verdict} "
              f"the goal (<= {TARGET_UP_S:.0f} s up, <= {TARGET_DOWN_S:.0f} s down); {against}")
        f = floor.get(r.hosts)
        if f:
            print(f"  the engine alone made {r.hosts} bare containers in {f['up_s']:.1f} s and removed them in "
                  f"{f['down_s']:.1f} s (same run): the testbed adds {r.up_s - f['up_s']:.1f} s up, "
                  f"{r.down_s - f['down_s']:.1f} s down")


def print_servers(rows: list[Row]) -> None:
    """Docker hosts on one server next to the same split over two, per size, with the two/one ratio."""
    one = {(r.hosts, r.sites): r for r in rows if r.kind == "docker" and r.servers == 1}
    for r in (r for r in rows if r.servers == 2):
        o = one.get((r.hosts, r.sites))
        against = (f"one server same run {o.up_s:.1f} s up, {o.down_s:.1f} s down: two/one {r.up_s / o.up_s:.2f}x up, "
                   f"{r.down_s / o.down_s:.2f}x down" if o else "no one-server row measured")
        print(f"\n{r.hosts} Docker hosts over two servers ({r.hosts - r.hosts_far} here, {r.hosts_far} on the "
              f"namespace server): up {r.up_s:.1f} s, down {r.down_s:.1f} s; {against}")


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 100], help="host counts (default 10 50 100)")
    ap.add_argument("--sites", type=int, default=5, help="sites in the star (default 5)")
    ap.add_argument("--kinds", nargs="+", choices=("docker", "plain"), default=["docker", "plain"])
    ap.add_argument("--no-ping", action="store_true", help="skip the reachability check after start-up")
    ap.add_argument("--profile", action="store_true", help="print where start-up and teardown time goes")
    ap.add_argument("--containernet-python", metavar="PYTHON",
                    help="an interpreter with Containernet installed: measured as the baseline in the same run")
    ap.add_argument("--no-floor", action="store_true", help="skip the bare-container floor of the Docker engine")
    ap.add_argument("--servers", type=int, choices=(1, 2), default=1,
                    help="2: also the Docker hosts split over this machine and a namespace server (same run)")
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
    baseline: dict[int, dict | str] = {}
    floor: dict[int, dict] = {}
    with second_server(args.servers == 2) as far:
        for n in args.sizes:
            if args.containernet_python:
                baseline[n] = containernet(args.containernet_python, n)
                print(f"{n} Containernet: {baseline[n]}", flush=True)
            if "docker" in args.kinds and not args.no_floor:
                floor[n] = engine_floor(n)
                print(f"{n} bare containers (the engine alone): up {floor[n]['up_s']:.2f} s, "
                      f"down {floor[n]['down_s']:.2f} s", flush=True)
            for kind, where in [(k, None) for k in args.kinds] + ([("docker", far)] if far else []):
                row = measure(n, kind, args.sites, not args.no_ping, args.profile, where)
                rows.append(row)
                print(f"{n} {kind} on {row.servers} server(s): up {row.up_s:.2f} s, down {row.down_s:.2f} s, "
                      f"ping {row.ping_ok}, left {row.left_over}", flush=True)
    results["load_after"] = load()
    results["rows"] = [{**asdict(r), "per_host_s": round(r.per_host_s, 4)} for r in rows]
    results["containernet"] = baseline
    results["engine_floor"] = floor
    print_table([r for r in rows if r.servers == 1], baseline, floor)
    print_servers(rows)
    print(f"\nload averages before {results['load_before']}, after {results['load_after']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if any(r.left_over for r in rows) or any(r.ping_ok is False for r in rows) else 0


@contextmanager
def second_server(wanted: bool) -> Iterator["NamespaceServer | None"]:
    """A namespace server (sshd and its own OVS, per-run keys) for the split runs, or None; removed afterwards."""
    if not wanted:
        yield None
        return
    from testbed import ledger

    rid = ledger.new_run_id()
    ns = harness.start(ledger.Ledger(rid), ovs=True)
    try:
        yield ns
    finally:
        ns.stop()
        left = ns.leftovers() + leftovers(rid)
        if left:
            print(f"namespace server left: {left}", file=sys.stderr)
        ledger.forget(rid)


if __name__ == "__main__":
    sys.exit(main())
