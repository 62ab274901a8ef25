"""Measures what a second crossing of the userspace Open vSwitch costs a relayed path (fatriot-fig12's ceiling).

Run as root: `.venv/bin/python bench/switch_relay.py [--seconds 3] [--runs 3]`. Three namespaces on
one OVS bridge with the userspace datapath, as the testbed's switches are here: a client, a server,
and a relay namespace the Linux kernel forwards through (both ends route to each other via it), so
relayed frames go client -> switch -> relay -> switch again -> server, as fatriot-fig12's fail-safe
frames do through mec1's NIC. Prints iperf3 TCP throughput direct and relayed (runs interleaved,
medians of --runs) and their ratio. Every namespace, link and the bridge are in the run's ledger
first, so `testbed clean` removes what a killed run leaves.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed import proc  # noqa: E402
from testbed.ledger import LABEL, Ledger, forget, new_run_id  # noqa: E402

SUBNET = "10.79.0"
HOSTS = {"c": f"{SUBNET}.1", "s": f"{SUBNET}.2", "r": f"{SUBNET}.3"}  # client, server, relay


PORT_TYPES = ("system", "afxdp-nonpmd", "afxdp")  # OVS interface types for the veth ports (afxdp: PMD threads)


def plan(prefix: str, rid: str, port_type: str = "system") -> list[list[str]]:
    """The commands that build the bench's bridge and namespaces, as data."""
    br = f"{prefix}br"
    cmds = [["ovs-vsctl", "add-br", br, "--", "set", "bridge", br, "datapath_type=netdev",
             f"external_ids:{LABEL}={rid}"],
            ["ovs-ofctl", "add-flow", br, "actions=normal"]]
    for key, ip in HOSTS.items():
        ns, port = f"{prefix}{key}", f"{prefix}{key}o"
        cmds += [["ip", "netns", "add", ns],
                 ["ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns],
                 ["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0"],
                 ["ip", "-n", ns, "link", "set", "eth0", "up"], ["ip", "-n", ns, "link", "set", "lo", "up"],
                 ["ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off"],  # the netdev datapath needs it
                 ["ip", "link", "set", port, "up"],
                 ["ovs-vsctl", "add-port", br, port] + ([] if port_type == "system" else
                                                         ["--", "set", "interface", port, f"type={port_type}"])]
    cmds.append(["ip", "netns", "exec", f"{prefix}r", "sysctl", "-qw", "net.ipv4.ip_forward=1",
                 "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.eth0.send_redirects=0"])
    return cmds


def routes(prefix: str, via_relay: bool) -> list[list[str]]:
    """Host routes that send client <-> server through the relay (`via_relay`) or take them away."""
    verb = "replace" if via_relay else "del"
    return [["ip", "-n", f"{prefix}{a}", "route", verb, f"{HOSTS[b]}/32"] + (["via", HOSTS["r"]] if via_relay else [])
            for a, b in (("c", "s"), ("s", "c"))]


def tcp_mbit(prefix: str, seconds: float) -> float:
    """iperf3 TCP Mbit/s received, client -> server."""
    res = proc.run(["iperf3", "-c", HOSTS["s"], "-t", str(seconds), "-J"], netns=f"{prefix}c",
                   timeout=seconds + 20)
    return json.loads(res.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each iperf3 run")
    ap.add_argument("--runs", type=int, default=3, help="runs per path, interleaved; medians reported")
    ap.add_argument("--port-type", choices=PORT_TYPES, default="system",
                    help="OVS interface type of the veth ports (the testbed's switches use system)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("switch_relay needs root", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="switch_relay-"))
    rid = new_run_id()
    ledger = Ledger(rid, run_dir=tmp)
    pre = ledger.prefix
    ledger.record("ovs_bridge", f"{pre}br", what="switch_relay bridge")
    for key in HOSTS:
        ledger.record("netns", f"{pre}{key}", what="switch_relay host")
        ledger.record("interface", f"{pre}{key}o", what="switch_relay port")
    server = None
    runs: dict[str, list[float]] = {"direct": [], "relayed": []}
    try:
        for cmd in plan(pre, rid, args.port_type):
            proc.run(cmd, timeout=15)
        server = proc.spawn(["ip", "netns", "exec", f"{pre}s", "iperf3", "-s"], output=tmp / "iperf3-server.log",
                            on_start=lambda pid: ledger.record_process(pid, what="iperf3 server"))
        for _ in range(100):  # until the server listens
            if proc.run(["ss", "-Hltn", "sport = :5201"], netns=f"{pre}s").stdout.strip():
                break
            time.sleep(0.05)
        for _ in range(args.runs):
            for path in runs:
                for cmd in routes(pre, path == "relayed"):
                    proc.run(cmd, check=path == "relayed")
                runs[path].append(tcp_mbit(pre, args.seconds))
    finally:
        if server is not None:
            proc.stop(server)
        for key in HOSTS:
            proc.run(["ip", "netns", "del", f"{pre}{key}"], check=False)
        proc.run(["ovs-vsctl", "--if-exists", "del-br", f"{pre}br"], check=False)
        left = [n for n in proc.run(["ip", "netns", "list"]).stdout.split() if n.startswith(pre)]
        left += [b for b in proc.run(["ovs-vsctl", "list-br"]).stdout.split() if b.startswith(pre)]
        print("left behind: " + (", ".join(left) or "nothing"))
        if not left:
            forget(rid)
    direct, relayed = (statistics.median(runs[p]) for p in ("direct", "relayed"))
    print(f"{'path':<10}{'TCP Mbit/s':>11}  runs")
    for path, med in (("direct", direct), ("relayed", relayed)):
        print(f"{path:<10}{med:>11.0f}  " + " ".join(f"{r:.0f}" for r in runs[path]))
    print(f"relayed / direct: {relayed / direct:.2f}  (ports {args.port_type}, load average {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
