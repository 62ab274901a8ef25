"""Integration tests of the userspace link emulator through UserspaceBackend, between two namespaces made here."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from testbed import proc
from testbed.testing import entered_netns
from testbed.ledger import Ledger, new_run_id
from testbed.links.base import LinkEnds
from testbed.links.userspace import UserspaceBackend
from testbed.topology.model import Shape

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

IP1, IP2 = "10.77.0.1", "10.77.0.2"


class Pair:
    """Two namespaces (each held by a sleeping process whose PID names it) joined by one emulated link."""

    def __init__(self, tmp: Path) -> None:
        tag = secrets.token_hex(2)
        self.ns = (f"lt{tag}-h1", f"lt{tag}-h2")
        self.intf = (f"lt{tag}h1-e0", f"lt{tag}h2-e0")
        self.holders: list[subprocess.Popen] = []
        for ns in self.ns:
            proc.run(["ip", "netns", "add", ns])
            self.holders.append(proc.spawn(["ip", "netns", "exec", ns, "sleep", "3600"], output=tmp / f"{ns}.out"))
        self.ledger = Ledger(new_run_id(tmp), tmp, state_dir=tmp)
        self.backend = UserspaceBackend(self.ledger, tmp, seed=1)
        self.link_id = "l1"

    def pid(self, i: int) -> int:
        """The holder PID of namespace i, once `ip netns exec` has entered it."""
        return entered_netns(self.holders[i].pid, self.ns[i])

    def connect(self, shape: Shape) -> None:
        ends = LinkEnds(self.link_id, self.intf[0], self.pid(0), self.intf[1], self.pid(1))
        self.backend.create(ends, shape, shape)
        for ns, intf, ip in zip(self.ns, self.intf, (IP1, IP2)):
            proc.run(["ethtool", "-K", intf, "tx", "off"], netns=ns)
            proc.run(["ip", "addr", "add", f"{ip}/24", "dev", intf], netns=ns)
            proc.run(["ip", "link", "set", "lo", "up"], netns=ns)

    def close(self) -> None:
        try:
            self.backend.close()
        finally:
            for h in self.holders:
                h.terminate()
                h.wait(timeout=5)
            for ns in self.ns:
                proc.run(["ip", "netns", "del", ns], check=False)


def ping(pair: Pair, count: int = 10, interval: float = 0.05, wait: float = 2.0) -> tuple[int, float | None]:
    """(replies received, average RTT in ms) for pings from namespace 1 to 2."""
    res = proc.run(["ping", "-n", "-q", "-c", count, "-i", interval, "-W", wait, IP2],
                   netns=pair.ns[0], check=False, timeout=count * interval + wait + 10)
    got = re.search(r"(\d+) received", res.stdout)
    avg = re.search(r"= [\d.]+/([\d.]+)/", res.stdout)
    return (int(got.group(1)) if got else 0), (float(avg.group(1)) if avg else None)


def warm(pair: Pair) -> None:
    """Make sure neighbours are resolved so RTTs measure the link, not ARP."""
    for _ in range(20):
        if ping(pair, count=1, wait=1)[0] == 1:
            return
    raise AssertionError("link never passed a ping")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    p = Pair(tmp_path_factory.mktemp("linkemu"))
    try:
        p.connect(Shape(delay_ms=25))
        yield p
    finally:
        p.close()


def reset(pair: Pair, shape: Shape) -> None:
    pair.backend.set_up(pair.link_id, True)
    pair.backend.shape(pair.link_id, shape, shape)


def test_delay_25ms_gives_50ms_rtt(pair):
    reset(pair, Shape(delay_ms=25))
    warm(pair)
    got, avg = ping(pair)
    assert got == 10
    assert avg == pytest.approx(50.0, abs=3.0)


def test_delay_changed_at_run_time(pair):
    reset(pair, Shape(delay_ms=25))
    warm(pair)
    pair.backend.shape(pair.link_id, Shape(delay_ms=5), Shape(delay_ms=5))
    time.sleep(0.06)  # frames already held keep their 25 ms
    got, avg = ping(pair)
    assert got == 10
    assert avg == pytest.approx(10.0, abs=3.0)


def test_down_blocks_and_drops_carrier_up_restores(pair):
    reset(pair, Shape(delay_ms=1))
    warm(pair)
    pair.backend.set_up(pair.link_id, False)
    carrier = proc.run(["cat", f"/sys/class/net/{pair.intf[0]}/carrier"], netns=pair.ns[0], check=False)
    assert carrier.stdout.strip() != "1"
    assert ping(pair, count=3, interval=0.2, wait=1)[0] == 0
    pair.backend.set_up(pair.link_id, True)
    warm(pair)
    assert ping(pair, count=5)[0] == 5


def test_full_loss_passes_nothing(pair):
    reset(pair, Shape(delay_ms=1))
    warm(pair)
    before = pair.backend.stats(pair.link_id)[pair.link_id]["forward"]["dropped_loss"]
    pair.backend.shape(pair.link_id, Shape(loss_pct=100), Shape(loss_pct=100))
    assert ping(pair, count=5, interval=0.1, wait=1)[0] == 0
    after = pair.backend.stats(pair.link_id)[pair.link_id]["forward"]["dropped_loss"]
    assert after - before >= 5


def test_rate_10mbit_measured_by_iperf3(pair, tmp_path):
    if proc.which("iperf3") is None:
        pytest.skip("iperf3 not installed")
    reset(pair, Shape(bw_mbit=10, delay_ms=1))
    warm(pair)
    server = proc.spawn(["ip", "netns", "exec", pair.ns[1], "iperf3", "-s", "-1", "-B", IP2],
                        output=tmp_path / "iperf3-server.out")
    try:
        for _ in range(50):  # readiness: the server listens
            res = proc.run(["ss", "-ltn", "sport = :5201"], netns=pair.ns[1], check=False)
            if ":5201" in res.stdout:
                break
            time.sleep(0.05)
        res = proc.run(["iperf3", "-c", IP2, "-t", "3", "-J"], netns=pair.ns[0], timeout=30)
        mbit = json.loads(res.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(timeout=5)
    assert mbit == pytest.approx(10.0, rel=0.15)


def test_close_leaves_nothing_behind(tmp_path):
    p = Pair(tmp_path)
    try:
        p.connect(Shape(delay_ms=2))
        warm(p)
        emu_pid = p.backend.pid
        netns = p.backend.netns
        assert emu_pid is not None and os.path.exists(f"/run/netns/{netns}")
        p.backend.close()
        assert p.backend.pid is None
        assert not os.path.exists(f"/proc/{emu_pid}")
        assert not os.path.exists(f"/run/netns/{netns}")
        for ns, intf in zip(p.ns, p.intf):
            shown = proc.run(["ip", "-o", "link", "show"], netns=ns).stdout
            assert intf not in shown
        recorded = [json.loads(line) for line in p.ledger.path.read_text().splitlines()]
        kinds = {(r["kind"], r["name"]) for r in recorded}
        assert ("netns", netns) in kinds and ("process", str(emu_pid)) in kinds
        assert ("interface", p.intf[0]) in kinds and ("interface", p.intf[1]) in kinds
    finally:
        p.close()


def test_emulator_survives_an_outer_end_vanishing(tmp_path):
    p = Pair(tmp_path)
    try:
        p.connect(Shape(delay_ms=1))
        warm(p)
        proc.run(["ip", "link", "del", p.intf[1]], netns=p.ns[1])  # as when a container's namespace dies
        assert ping(p, count=3, interval=0.1, wait=1)[0] == 0
        assert p.backend.request("ping") == {"pid": p.backend.pid, "links": 1}
        stats = p.backend.stats(p.link_id)[p.link_id]
        assert stats["forward"]["rx"] >= 1
        p.backend.delete(p.link_id)
        assert p.backend.stats() == {}
        shown = proc.run(["ip", "-o", "link", "show"], netns=p.ns[0]).stdout
        assert p.intf[0] not in shown
    finally:
        p.close()
