#!/usr/bin/env python3
"""Benchmark of link emulation fidelity: configured delay vs ping RTT, configured rate vs iperf3 throughput.

Two parts, each skippable:
* links: for the userspace emulator and, where the kernel has sch_netem (detected by trying), for
  netem, two namespaces made here (prefix "lb" + 4 hex digits) joined by one link through the
  backend, no switch in the way;
* paths: host to host as a user measures it, through the shipped switches: a real Testbed with a
  line of four sites (one host each, a second host on the first site) and 1, 2 and 3 WAN links
  between the first host and the others, for one-way delays of a few ms and tens of ms.
Prints tables and writes bench/results/link_fidelity.json.

    sudo .venv/bin/python bench/link_fidelity.py [--count 100] [--duration 3] [--skip links|paths]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed import proc
from testbed.testing import entered_netns  # noqa: E402
from testbed.ledger import Ledger, new_run_id  # noqa: E402
from testbed.links.base import LinkBackend, LinkEnds  # noqa: E402
from testbed.linkemu.schedule import TCP_FRAME, TCP_MSS  # noqa: E402
from testbed.topology.model import Shape, TopologySpec  # noqa: E402

DELAYS_MS = (1, 5, 20, 50, 100, 200)
RATES_MBIT = (1, 10, 100, 500)
JITTER_FRACTION = 0.1  # jitter runs: jitter = 10 % of the delay, uniform
#: TCP goodput over Ethernet frames with MTU 1500 and TCP timestamps: 1448 payload bytes per 1514-byte frame.
GOODPUT_FRACTION = TCP_MSS / TCP_FRAME
IP1, IP2 = "10.78.0.1", "10.78.0.2"
DELAY_TARGET = (0.3, 0.01)  # |RTT - 2 d| <= 0.3 ms + 1 % of 2 d
#: One-way delays (ms) of the three WAN links of the line p1-p2-p3-p4, one path measurement each.
PATH_DELAYS_MS = ((2, 2, 2), (5, 5, 5), (20, 20, 20), (1, 10, 30))
PATH_SUBNET = "10.79.0.0/24"
ROUNDS = 5  # each path's pings in this many turns, interleaved with the other paths'
RATE_TARGET = 0.05


class Bench:
    """Two namespaces joined by one link through `backend`, with helpers to measure RTT and throughput."""

    def __init__(self, make_backend: Callable[[Ledger, Path], LinkBackend], tmp: Path) -> None:
        tag = secrets.token_hex(2)
        self.tmp = tmp
        self.ns = (f"lb{tag}-h1", f"lb{tag}-h2")
        self.intf = (f"lb{tag}h1-e0", f"lb{tag}h2-e0")
        self.holders: list[proc.Process] = []
        self.ledger = Ledger(new_run_id(tmp), tmp, state_dir=tmp)
        self.backend = make_backend(self.ledger, tmp)
        for ns in self.ns:
            proc.run(["ip", "netns", "add", ns])
            self.holders.append(proc.spawn(["ip", "netns", "exec", ns, "sleep", "3600"], output=tmp / f"{ns}.out"))
        pids = [self._pid(i) for i in range(2)]
        self.backend.create(LinkEnds("bench", self.intf[0], pids[0], self.intf[1], pids[1]), Shape(), Shape())
        for ns, intf, ip in zip(self.ns, self.intf, (IP1, IP2)):
            proc.run(["ethtool", "-K", intf, "tx", "off"], netns=ns, check=False)
            proc.run(["ip", "addr", "add", f"{ip}/24", "dev", intf], netns=ns)
            proc.run(["ip", "link", "set", "dev", intf, "up"], netns=ns)
            proc.run(["ip", "link", "set", "lo", "up"], netns=ns)

    def _pid(self, i: int) -> int:
        return entered_netns(self.holders[i].pid, self.ns[i], timeout=5.0)

    def shape(self, shape: Shape) -> None:
        self.backend.shape("bench", shape, shape)

    def pings(self, count: int, interval: float) -> list[float]:
        """RTTs in ms of `count` ICMP echoes from h1 to h2, timed in microseconds by `probe` (ping rounds to 0.1-1 ms)."""
        for _ in range(10):  # resolve ARP first, so it is not measured
            if proc.run(["ping", "-n", "-c", "1", "-W", "2", IP2], netns=self.ns[0], check=False, timeout=10).ok:
                break
        res = proc.run(["ip", "netns", "exec", self.ns[0], sys.executable, __file__, "--probe", IP2,
                        "--count", count, "--interval", interval], timeout=count * interval + 30)
        return json.loads(res.stdout)

    def iperf3(self, seconds: float) -> float:
        """TCP throughput in Mbit/s measured by iperf3 at the receiver, h1 -> h2."""
        server = proc.spawn(["ip", "netns", "exec", self.ns[1], "iperf3", "-s", "-1", "-B", IP2],
                            output=self.tmp / "iperf3-server.out")
        try:
            for _ in range(100):
                if ":5201" in proc.run(["ss", "-ltn", "sport = :5201"], netns=self.ns[1], check=False).stdout:
                    break
                time.sleep(0.05)
            res = proc.run(["iperf3", "-c", IP2, "-t", seconds, "-J"], netns=self.ns[0], timeout=seconds + 60)
            return json.loads(res.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
        finally:
            proc.stop(server, timeout=10)

    def close(self) -> None:
        try:
            self.backend.close()
        finally:
            for h in self.holders:
                proc.stop(h, timeout=5)
            for ns in self.ns:
                proc.run(["ip", "netns", "del", ns], check=False)


def probe(dest: str, count: int, interval: float, wait: float = 3.0) -> list[float]:
    """Send `count` ICMP echo requests to `dest` every `interval` s; RTTs in ms of the replies (raw socket).

    Like ping, a reply's time is the kernel's receive timestamp (SO_TIMESTAMPNS), so the probe's own
    wake-up on a reply (0.1-0.2 ms on a VM) is not counted as network delay.
    """
    import select
    import socket
    import struct

    def checksum(data: bytes) -> int:
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
        total = (total >> 16) + (total & 0xFFFF)
        total += total >> 16
        return ~total & 0xFFFF

    ident = os.getpid() & 0xFFFF
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
    payload = bytes(56)
    sent: dict[int, float] = {}
    rtts: list[float] = []
    start = time.perf_counter()
    seq = 0
    end = None
    while True:
        now = time.perf_counter()
        if seq < count and now >= start + seq * interval:
            head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            pkt = struct.pack("!BBHHH", 8, 0, checksum(head + payload), ident, seq) + payload
            sent[seq] = time.time()
            sock.sendto(pkt, (dest, 0))
            seq += 1
            if seq == count:
                end = time.perf_counter() + wait
            continue
        if end is not None and (now >= end or len(rtts) == count):
            break
        nxt = start + seq * interval if seq < count else end
        ready, _, _ = select.select([sock], [], [], max(0.0, nxt - now))
        if ready:
            data, anc, _flags, _addr = sock.recvmsg(2048, socket.CMSG_SPACE(16))
            got = time.time()
            if anc:
                sec, nsec = struct.unpack_from("qq", anc[0][2])
                got = sec + nsec * 1e-9
            ihl = (data[0] & 0x0F) * 4
            typ, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if typ == 0 and rid == ident and rseq in sent:
                rtts.append((got - sent.pop(rseq)) * 1000)
    return rtts


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation."""
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def measure(bench: Bench, count: int, seconds: float) -> dict[str, list[dict[str, Any]]]:
    """Delay rows (with and without jitter) and rate rows for one backend."""
    delays: list[dict[str, Any]] = []
    base = bench.pings(count, 0.01)
    delays.append(row_delay(0.0, 0.0, base))
    for d in DELAYS_MS:
        for jitter in (0.0, d * JITTER_FRACTION):
            bench.shape(Shape(delay_ms=d, jitter_ms=jitter))
            time.sleep(0.3)
            # ping gap larger than the jitter range, so FIFO order never bunches jittered frames
            interval = 0.01 if not jitter else max(0.01, 2 * jitter / 1000 + 0.005)
            delays.append(row_delay(d, jitter, bench.pings(count if not jitter else max(30, count // 2), interval)))
    rates: list[dict[str, Any]] = []
    bench.shape(Shape())
    ceiling = bench.iperf3(seconds)  # what the path carries unshaped: the backend's own limit
    for r in RATES_MBIT:
        # the queue limit counts delayed frames too (netem's semantics): give it 4x the path's BDP (RTT 2 ms)
        bench.shape(Shape(bw_mbit=r, delay_ms=1, queue_pkts=max(100, int(r * 1e6 * 0.002 / 8 / 1514 * 4))))
        time.sleep(0.3)
        got = bench.iperf3(seconds)
        ideal = r * GOODPUT_FRACTION
        rates.append({"rate_mbit": r, "measured_mbit": round(got, 3),
                      "error_vs_rate_pct": round((got / r - 1) * 100, 2),
                      "ideal_goodput_mbit": round(ideal, 3),
                      "error_vs_goodput_pct": round((got / ideal - 1) * 100, 2),
                      "within_target": abs(got / ideal - 1) <= RATE_TARGET})
    return {"delay": delays, "rate": rates, "unshaped_mbit": round(ceiling, 1)}


def row_delay(d: float, jitter: float, rtts: list[float]) -> dict[str, Any]:
    """One delay row: RTT statistics and error against twice the configured one-way delay."""
    if not rtts:
        return {"delay_ms": d, "jitter_ms": jitter, "samples": 0}
    med = statistics.median(rtts)
    err = med - 2 * d
    sd = statistics.pstdev(rtts)
    sd_expected = (2 / 3) ** 0.5 * jitter  # RTT = two independent uniform draws of +-jitter
    tolerance = DELAY_TARGET[0] + DELAY_TARGET[1] * 2 * d
    if jitter:  # the median of a jittered sample is itself random: allow 3 standard errors on top
        tolerance += 3 * 1.2533 * sd_expected / len(rtts) ** 0.5
    return {"delay_ms": d, "jitter_ms": round(jitter, 3), "samples": len(rtts),
            "rtt_median_ms": round(med, 3), "rtt_p99_ms": round(percentile(rtts, 99), 3),
            "rtt_mean_ms": round(statistics.mean(rtts), 3), "rtt_sd_ms": round(sd, 3),
            "rtt_sd_expected_ms": round(sd_expected, 3),
            "error_ms": round(err, 3), "error_pct": round(err / (2 * d) * 100, 2) if d else None,
            "within_target": abs(err) <= tolerance}


def print_table(name: str, res: dict[str, list[dict[str, Any]]]) -> None:
    """Human-readable tables of one backend's results."""
    print(f"\n== {name}: configured one-way delay vs ping RTT (target |RTT - 2d| <= 0.3 ms + 1 % of 2d)")
    print(f"{'delay ms':>9} {'jitter ms':>9} {'n':>4} {'median':>9} {'p99':>9} {'sd':>7} {'sd exp':>7} "
          f"{'err ms':>8} {'err %':>7}  ok")
    for r in res["delay"]:
        if not r["samples"]:
            print(f"{r['delay_ms']:>9g} {r['jitter_ms']:>9g}    0  (no replies)")
            continue
        pct = "" if r["error_pct"] is None else f"{r['error_pct']:.2f}"
        print(f"{r['delay_ms']:>9g} {r['jitter_ms']:>9g} {r['samples']:>4} {r['rtt_median_ms']:>9.3f} "
              f"{r['rtt_p99_ms']:>9.3f} {r['rtt_sd_ms']:>7.3f} {r['rtt_sd_expected_ms']:>7.3f} "
              f"{r['error_ms']:>8.3f} {pct:>7}  {'yes' if r['within_target'] else 'NO'}")
    print(f"\n== {name}: configured rate vs iperf3 TCP (ideal goodput = rate x 1448/1514; target 5 %)")
    print(f"{'rate':>6} {'measured':>10} {'err/rate %':>11} {'err/goodput %':>14}  ok")
    print(f"{'none':>6} {res['unshaped_mbit']:>10.2f}  (unshaped: the path's own ceiling)")
    for r in res["rate"]:
        print(f"{r['rate_mbit']:>6g} {r['measured_mbit']:>10.2f} {r['error_vs_rate_pct']:>11.2f} "
              f"{r['error_vs_goodput_pct']:>14.2f}  {'yes' if r['within_target'] else 'NO'}")


def line_topology() -> TopologySpec:
    """Four sites in a line, p1-p2-p3-p4, host hN on site pN, a second host h1b on p1; links unshaped."""
    from testbed.topology.api import MecTopo

    t = MecTopo("fidelity-line", subnet=PATH_SUBNET)
    for i in range(1, 5):
        t.addSite(f"p{i}")
        t.addHost(f"h{i}", site=f"p{i}", ip=f"10.79.0.{i}")
    t.addHost("h1b", site="p1", ip="10.79.0.11")
    for i in range(1, 4):
        t.addWan(f"p{i}", f"p{i + 1}")
    return t.build()


def measure_paths(count: int, interval: float, tmp: Path) -> dict[str, Any]:
    """RTT from h1 to h1b (no WAN link) and to h2, h3, h4 (1, 2, 3 links) for each delay set, in one Testbed."""
    from testbed.emulation.selfcheck import measure_wan
    from testbed.emulation.testbed import Testbed
    from testbed.testing import leftovers

    topo = line_topology()
    tb = Testbed(topo, tmp / "run", nics=False)
    rows: list[dict[str, Any]] = []
    with tb:
        h1 = tb.node("h1")
        ips = {h.name: h.ip.split("/")[0] for h in topo.hosts()}
        links = [tb.wan_link_id(f"p{i}", f"p{i + 1}") for i in range(1, 4)]

        def rtts(dst: str, n: int) -> list[float]:
            out = h1.cmd(sys.executable, __file__, "--probe", ips[dst], "--count", str(n),
                         "--interval", str(interval))
            return json.loads(out.strip().splitlines()[-1])

        for dst in ("h1b", "h2", "h3", "h4"):  # ARP and flows, not measured
            h1.cmd("ping", "-c", "2", "-i", "0.2", "-W", "2", ips[dst])
        dsts = ("h1b", "h2", "h3", "h4")
        for delays in PATH_DELAYS_MS:
            for link, d in zip(links, delays):
                tb.links.shape(link, forward=Shape(delay_ms=d), reverse=Shape(delay_ms=d))
            got: dict[str, list[float]] = {dst: [] for dst in dsts}
            for _ in range(ROUNDS):  # paths in turn, so a drifting machine load touches each alike
                for dst in dsts:
                    got[dst] += rtts(dst, max(1, count // ROUNDS))
            base = row_path(0, (), got["h1b"])
            rows.append(base)
            for k in (1, 2, 3):
                rows.append(row_path(k, delays[:k], got[f"h{k + 1}"], base.get("rtt_median_ms")))
        for link in links:  # back to the topology's own (unshaped) links, which the self-check expects
            tb.links.shape(link, forward=Shape(), reverse=Shape())
        check = measure_wan(tb, count=3, hosts=True)
        log_path = tb.run_dir / "linkemu.log"
        timing = [line.split(": ", 1)[1] for line in log_path.read_text().splitlines()
                  if "timing" in line or "hop" in line or "scheduling" in line]
    selfcheck = {"rows": len(check), "answered": sum(1 for r in check if r["measured"]),
                 "pairs": [f"{r['src']}-{r['dst']}" for r in check],
                 "max_abs_error_ms": max((abs(r["error_ms"]) for r in check if r["measured"]), default=None)}
    return {"rows": rows, "emulator_timing": timing, "selfcheck": selfcheck, "left_over": leftovers(tb.rid)}


def row_path(links: int, delays: tuple[float, ...], rtts: list[float], base: float | None = None) -> dict[str, Any]:
    """One path row: configured 2 x sum of one-way delays vs the measured median, against the target;
    `base` (the same-switch median of the same rounds) gives the part the WAN links add."""
    want = 2 * sum(delays)
    row: dict[str, Any] = {"wan_links": links, "delays_ms": list(delays), "configured_rtt_ms": want,
                           "samples": len(rtts)}
    if rtts:
        med = statistics.median(rtts)
        tolerance = DELAY_TARGET[0] + DELAY_TARGET[1] * want
        row.update(rtt_median_ms=round(med, 3), rtt_p10_ms=round(percentile(rtts, 10), 3),
                   rtt_p90_ms=round(percentile(rtts, 90), 3), error_ms=round(med - want, 3),
                   tolerance_ms=round(tolerance, 3), within_target=abs(med - want) <= tolerance)
        if base is not None and links:
            row["links_add_ms"] = round(med - want - base, 3)  # error beyond the site's own switch hops
    return row


def print_paths(res: dict[str, Any]) -> None:
    """The host-to-host table."""
    print("\n== host to host through the switches (target |median - 2 x sum d| <= 0.3 ms + 1 %; "
          "links+ = error minus the same-switch RTT of the same rounds)")
    print(f"{'links':>5} {'one-way ms':>12} {'config':>8} {'n':>4} {'median':>9} {'p10':>8} {'p90':>8} "
          f"{'err ms':>8} {'tol ms':>7} {'links+':>7}  ok")
    for r in res["rows"]:
        d = "+".join(f"{x:g}" for x in r["delays_ms"]) or "-"
        if not r["samples"]:
            print(f"{r['wan_links']:>5} {d:>12} {r['configured_rtt_ms']:>8g}    0  (no replies)")
            continue
        ok = "yes" if r["within_target"] else "NO"
        if not r["wan_links"]:
            ok = "(same switch)"
        print(f"{r['wan_links']:>5} {d:>12} {r['configured_rtt_ms']:>8g} {r['samples']:>4} {r['rtt_median_ms']:>9.3f} "
              f"{r['rtt_p10_ms']:>8.3f} {r['rtt_p90_ms']:>8.3f} {r['error_ms']:>8.3f} {r['tolerance_ms']:>7.3f} "
              f"{r.get('links_add_ms', ''):>7}  {ok}")
    sc = res["selfcheck"]
    print(f"   self-check (every site pair and every host, unshaped): {sc['answered']} of {sc['rows']} answered "
          f"({', '.join(sc['pairs'])}), largest |error| {sc['max_abs_error_ms']} ms")
    for line in res["emulator_timing"]:
        print(f"   emulator: {line}")
    if res["left_over"]:
        print(f"   LEFT OVER: {res['left_over']}")


def backends() -> dict[str, Callable[[Ledger, Path], LinkBackend] | str]:
    """Backends to measure: a factory, or a sentence saying why it is skipped."""
    from testbed.links.netem import NetemBackend, netem_available
    from testbed.links.userspace import UserspaceBackend

    out: dict[str, Callable[[Ledger, Path], LinkBackend] | str] = {
        "userspace": lambda ledger, tmp: UserspaceBackend(ledger, tmp, seed=1)}
    out["netem"] = (lambda ledger, tmp: NetemBackend(ledger)) if netem_available() else "sch_netem not in this kernel"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=100, help="pings per delay setting (default 100)")
    ap.add_argument("--duration", type=float, default=3.0, help="iperf3 seconds per rate (default 3)")
    ap.add_argument("--only", choices=("userspace", "netem"), help="measure one backend only (links part)")
    ap.add_argument("--skip", choices=("links", "paths"), action="append", default=[], help="skip a part")
    ap.add_argument("--path-interval", type=float, default=0.02, help="seconds between pings on paths (0.02)")
    ap.add_argument("--interval", type=float, default=0.01, help=argparse.SUPPRESS)
    ap.add_argument("--probe", metavar="IP", help=argparse.SUPPRESS)  # internal: run inside h1's namespace
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "link_fidelity.json")
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe, args.count, args.interval)))
        return 0
    if os.geteuid() != 0:
        print("needs root (namespaces, veths)", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"host": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
                               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "count": args.count,
                               "duration_s": args.duration, "load_before": os.getloadavg(),
                               "backends": {}, "skipped": {}}
    for name, factory in backends().items() if "links" not in args.skip else ():
        if args.only and name != args.only:
            continue
        if isinstance(factory, str):
            results["skipped"][name] = factory
            print(f"\n== {name}: skipped ({factory})")
            continue
        with tempfile.TemporaryDirectory(prefix="lb-") as tmp:
            bench = Bench(factory, Path(tmp))
            try:
                results["backends"][name] = measure(bench, args.count, args.duration)
            finally:
                bench.close()
        print_table(name, results["backends"][name])
    if "paths" not in args.skip:
        with tempfile.TemporaryDirectory(prefix="lb-") as tmp:
            results["paths"] = measure_paths(args.count, args.path_interval, Path(tmp))
        print_paths(results["paths"])
    results["load_after"] = os.getloadavg()
    print(f"\nload average before {results['load_before'][0]:.2f}, after {results['load_after'][0]:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
