#!/usr/bin/env python3
"""Benchmark of link emulation fidelity: configured delay vs ping RTT, configured rate vs iperf3 throughput.

Runs for the userspace emulator and, where the kernel has sch_netem (detected by trying), for netem.
Two namespaces made here (prefix "lb" + 4 hex digits), one link through the backend, removed at the end.
Prints a table and writes bench/results/link_fidelity.json.

    sudo .venv/bin/python bench/link_fidelity.py [--count 100] [--duration 3]
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
from testbed.topology.model import Shape  # noqa: E402

DELAYS_MS = (1, 5, 20, 50, 100, 200)
RATES_MBIT = (1, 10, 100, 500)
JITTER_FRACTION = 0.1  # jitter runs: jitter = 10 % of the delay, uniform
#: TCP goodput over Ethernet frames with MTU 1500 and TCP timestamps: 1448 payload bytes per 1514-byte frame.
GOODPUT_FRACTION = 1448 / 1514
IP1, IP2 = "10.78.0.1", "10.78.0.2"
DELAY_TARGET = (0.3, 0.01)  # |RTT - 2 d| <= 0.3 ms + 1 % of 2 d
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
    """Send `count` ICMP echo requests to `dest` every `interval` s; RTTs in ms of the replies (raw socket)."""
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
            sent[seq] = time.perf_counter()
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
            data = sock.recv(2048)
            got = time.perf_counter()
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
    ap.add_argument("--only", choices=("userspace", "netem"), help="measure one backend only")
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
                               "duration_s": args.duration, "backends": {}, "skipped": {}}
    for name, factory in backends().items():
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
