"""Integration test: the netem backend's veth pairs and htb (and netem, where the kernel has it)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from testbed import proc
from testbed.ledger import Ledger, new_run_id
from testbed.links.base import LinkEnds
from testbed.links.netem import NetemBackend, netem_available
from testbed.topology.model import Shape

pytestmark = pytest.mark.integration


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(new_run_id(tmp_path), tmp_path / "run", state_dir=tmp_path)


@pytest.fixture
def namespaces(ledger: Ledger, tmp_path: Path):
    """Two processes, each holding a network namespace of its own; always killed (by PID)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for tool in ("unshare", "nsenter", "tc", "ip"):
        if proc.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    procs = []
    try:
        for i in range(2):
            p = proc.spawn(["unshare", "--net", "--", "sleep", "600"], output=tmp_path / f"ns{i}.log")
            ledger.record_process(p.pid, f"netns holder {i}")
            procs.append(p)
        for p in procs:  # wait until unshare has exec'd sleep in its new namespace
            for _ in range(100):
                if os.readlink(f"/proc/{p.pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                    break
                proc.run(["sleep", "0.02"])
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait(5)


@pytest.fixture
def backend(ledger: Ledger):
    b = NetemBackend(ledger)
    try:
        yield b
    finally:
        b.close()


def ns_run(pid: int, *cmd: str, check: bool = True) -> proc.Result:
    return proc.run(["nsenter", "-t", str(pid), "-n", "--", *cmd], check=check)


def qdiscs(pid: int, intf: str) -> list[dict]:
    return json.loads(ns_run(pid, "tc", "-j", "qdisc", "show", "dev", intf).stdout)


def test_htb_link_is_created_shaped_changed_and_removed(namespaces, backend, ledger) -> None:
    pid1, pid2 = namespaces
    ends = LinkEnds("l1", "eth0", pid1, "eth0", pid2)
    backend.create(ends, Shape(bw_mbit=10), Shape())
    kinds = {r["kind"] for r in map(json.loads, (ledger.run_dir / "resources.jsonl").read_text()
                                     .splitlines())}
    assert {"interface", "qdisc"} <= kinds

    assert [q["kind"] for q in qdiscs(pid1, "eth0")][0] == "htb"
    assert "htb" not in [q["kind"] for q in qdiscs(pid2, "eth0")]
    cls = ns_run(pid1, "tc", "class", "show", "dev", "eth0").stdout
    assert "rate 10Mbit" in cls, cls

    ns_run(pid1, "ip", "addr", "add", "10.78.0.1/24", "dev", "eth0")
    ns_run(pid2, "ip", "addr", "add", "10.78.0.2/24", "dev", "eth0")
    ping = ns_run(pid1, "ping", "-c", "2", "-i", "0.2", "-W", "2", "10.78.0.2", check=False)
    assert ping.ok, ping.stdout

    backend.shape("l1", forward=Shape(bw_mbit=20))
    cls = ns_run(pid1, "tc", "class", "show", "dev", "eth0").stdout
    assert "rate 20Mbit" in cls, cls

    backend.shape("l1", forward=Shape(bw_mbit=5, queue_pkts=20))  # structure change: + pfifo
    kinds = [q["kind"] for q in qdiscs(pid1, "eth0")]
    assert kinds[:2] == ["htb", "pfifo"], kinds

    backend.shape("l1", forward=Shape())
    assert "htb" not in [q["kind"] for q in qdiscs(pid1, "eth0")]

    backend.set_up("l1", False)
    link = json.loads(ns_run(pid2, "ip", "-j", "link", "show", "dev", "eth0").stdout)[0]
    assert "UP" not in link["flags"]
    backend.set_up("l1", True)
    link = json.loads(ns_run(pid2, "ip", "-j", "link", "show", "dev", "eth0").stdout)[0]
    assert "UP" in link["flags"]

    backend.delete("l1")
    assert not ns_run(pid1, "ip", "link", "show", "dev", "eth0", check=False).ok
    assert not ns_run(pid2, "ip", "link", "show", "dev", "eth0", check=False).ok


def test_htb_rate_limits_throughput(namespaces, backend, tmp_path: Path) -> None:
    if proc.which("iperf3") is None:
        pytest.skip("iperf3 not installed")
    pid1, pid2 = namespaces
    backend.create(LinkEnds("l1", "eth0", pid1, "eth0", pid2), Shape(bw_mbit=10), Shape())
    ns_run(pid1, "ip", "addr", "add", "10.78.0.1/24", "dev", "eth0")
    ns_run(pid2, "ip", "addr", "add", "10.78.0.2/24", "dev", "eth0")
    server = proc.spawn(["nsenter", "-t", str(pid2), "-n", "--", "iperf3", "-s", "-1", "-B",
                         "10.78.0.2"], output=tmp_path / "iperf3-server.log")
    try:
        for _ in range(50):
            if ns_run(pid2, "ss", "-ltnH", "sport", "= :5201").stdout.strip():
                break
            proc.run(["sleep", "0.05"])
        out = ns_run(pid1, "iperf3", "-c", "10.78.0.2", "-t", "2", "-J").stdout
    finally:
        server.kill()
        server.wait(5)
    mbit = json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6
    print(f"htb 10 Mbit/s link: iperf3 received {mbit:.2f} Mbit/s")
    assert 7.0 < mbit < 11.0, mbit


def test_netem_delay(namespaces, backend) -> None:
    if not netem_available():
        pytest.skip("kernel has no sch_netem (tc: 'Specified qdisc kind is unknown')")
    pid1, pid2 = namespaces
    backend.create(LinkEnds("l1", "eth0", pid1, "eth0", pid2), Shape(delay_ms=20), Shape(delay_ms=20))
    ns_run(pid1, "ip", "addr", "add", "10.78.0.1/24", "dev", "eth0")
    ns_run(pid2, "ip", "addr", "add", "10.78.0.2/24", "dev", "eth0")
    out = ns_run(pid1, "ping", "-c", "3", "-i", "0.2", "10.78.0.2").stdout
    avg = float(out.rsplit("=", 1)[1].split("/")[1])
    assert 39.0 < avg < 50.0, out
