"""The fail-safe NIC in front of Docker hosts on the fatriot topology: crash, freeze, slow service."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

import pytest

from testbed.emulation.testbed import Testbed
from testbed.failsafe.control import call
from testbed.testing import leftovers, live_processes
from testbed.topology.api import MecTopo
from testbed.topology.loader import load_topology

INTERVAL = 0.05  # s; heartbeat interval used here
THRESHOLD = 1.5
MIN_RTT_S = 0.02  # the default floor: 5 ms (a 7.5 ms timeout) gave false failovers under the suite's load
TIMEOUT = MIN_RTT_S * THRESHOLD  # the NIC's timeout: max(RTT_avg, floor) x threshold


@dataclass
class Reply:
    seq: int
    send: float
    rtt_ms: float | None
    by: str


def probe(tb: Testbed, target: str, rate: float, count: int, proto: str = "udp") -> subprocess.Popen:
    """Start the prober in `gen`; its CSV comes on stdout."""
    return tb.node("gen").popen(["python3", "/app/probe.py", "--target", target, "--rate", str(rate),
                                 "--count", str(count), "--proto", proto, "--timeout", "1"],
                                text=True)


def replies(p: subprocess.Popen) -> list[Reply]:
    """The prober's rows, once it has finished."""
    out, err = p.communicate(timeout=120)
    rows = []
    for line in out.splitlines():
        if line.startswith("#") or line.startswith("seq,") or not line.strip():
            continue
        seq, send, _reply, rtt, by = line.split(",")
        rows.append(Reply(int(seq), float(send), float(rtt) if rtt else None, by.strip()))
    assert rows, f"the prober printed nothing: {err}"
    return rows


def modes(tb: Testbed, host: str) -> dict[str, str]:
    """Each heartbeat target's mode on `host`'s NIC."""
    status = call(tb.nic_socket(host), "heartbeat_show")
    return {target: row["mode"] for target, row in status.items()}


def wait_for(pred, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def started(tb: Testbed) -> None:
    """Wait until the echo services answer and the NICs have learned their RTTs."""
    assert wait_for(lambda: all(m == "normal" for m in modes(tb, "mec1").values()), 20), modes(tb, "mec1")


@pytest.fixture(params=["python", "bpf"])
def fatriot(tmp_path, request):
    tb = Testbed(load_topology("fatriot"), tmp_path / "run",
                 nic_overrides={"datapath": request.param, "interval_s": INTERVAL, "threshold": THRESHOLD,
                                "min_rtt_ms": MIN_RTT_S * 1000})
    with tb:
        started(tb)
        assert f"{request.param}: " in tb.backends()["nic"], tb.backends()
        yield tb
    assert leftovers(tb.rid) == []
    assert live_processes(tb.run_dir) == []


def test_host_crash_moves_requests_to_the_backup(fatriot):
    start = time.time()
    p = probe(fatriot, "10.0.0.11:7000", rate=50, count=150)
    p_tcp = probe(fatriot, "10.0.0.11:7001", rate=10, count=30, proto="tcp")
    time.sleep(1.0)
    crash = time.time()
    fatriot.container("mec1").kill()
    rows = replies(p)
    tcp = replies(p_tcp)
    # the TCP service too: a new connection per request, and those after the crash reach the backup
    tcp_after = [r for r in tcp if r.send > crash + 0.5]
    events = [e for e in fatriot.nic_events() if e["node"] == "mec1"]
    tcp_before = [r for r in tcp if r.send < crash - 0.05]
    assert_on_primary_unless_detected(tcp_before, events, "echo-tcp", start, crash)
    assert tcp_after and share(tcp_after, "mec2") >= 0.9, [(r.seq, r.by) for r in tcp_after]
    before = [r for r in rows if r.send < crash - 0.05]
    after = [r for r in rows if r.send > crash + 0.5]
    assert_on_primary_unless_detected(before, events, "echo-udp", start, crash)
    assert after and share(after, "mec2") >= 0.9, ([(r.seq, r.by) for r in after], events)
    assert not any(r.by == "mec1" for r in after)
    first_backup = min(r.send + (r.rtt_ms or 0) / 1000 for r in rows if r.by == "mec2" and r.send > crash)
    # detection needs at most one interval plus the heartbeat timeout; allow scheduling slack
    assert first_backup - crash <= INTERVAL + TIMEOUT + 0.25
    lost = [r for r in rows if r.rtt_ms is None]
    assert len(lost) <= 3, ([(r.seq, round(r.send - crash, 3)) for r in lost], events,
                            call(fatriot.nic_socket("mec1"), "failover"))


def share(rows: list[Reply], host: str) -> float:
    """The fraction of `rows` answered by `host`."""
    return sum(r.by == host for r in rows) / len(rows)


def assert_on_primary_unless_detected(rows: list[Reply], events: list[dict], target: str, since: float,
                                      until: float) -> None:
    """`rows` went to mec1, or else only to mec2 after a detection on `target` logged in [since, until).

    A loaded machine can delay a heartbeat reply past this fixture's tight timeout (1.5 x 20 ms):
    the NIC then fails over for real, and says so in its events; only that may take requests away.
    """
    assert rows
    if share(rows, "mec1") >= 0.9:
        return
    detected = [e for e in events if e["target"] in (target, "platform") and e["active"]
                and since <= e["time"] < until]
    assert detected, ([(r.seq, r.by) for r in rows], events)
    assert all(r.by in ("mec1", "mec2") for r in rows), rows


def test_freeze_then_unfreeze_goes_to_backup_and_back(fatriot):
    box = fatriot.container("mec1")
    box.pause()
    try:
        # frozen processes stop answering; the container's kernel still answers ICMP, so it is the
        # service heartbeats (not the ICMP platform one) that see a freeze
        assert wait_for(lambda: modes(fatriot, "mec1")["echo-udp"] == "failsafe", 5)
        rows = replies(probe(fatriot, "10.0.0.11:7000", rate=20, count=10))
        assert share(rows, "mec2") >= 0.9, rows
    finally:
        box.unpause()
    assert wait_for(lambda: all(m == "normal" for m in modes(fatriot, "mec1").values()), 10)
    back = time.time()
    rows = replies(probe(fatriot, "10.0.0.11:7000", rate=20, count=10))
    events = [e for e in fatriot.nic_events() if e["node"] == "mec1"]
    assert_on_primary_unless_detected(rows, events, "echo-udp", back, time.time() + 1.0)
    assert any(e["target"] == "echo-udp" and e["active"] for e in events)
    assert any(e["target"] == "echo-udp" and not e["active"] for e in events)


def test_freeze_without_traffic_turns_the_tcp_service_failsafe_within_interval_plus_timeout(fatriot):
    """The echo image's TCP heartbeat sends a line and expects it back: a frozen kernel's handshake is not enough."""
    status = call(fatriot.nic_socket("mec1"), "heartbeat_show")
    limit_s = max(status["echo-tcp"]["rtt_avg_ms"] / 1000.0, MIN_RTT_S) * THRESHOLD
    box = fatriot.container("mec1")
    box.pause()
    frozen = time.time()  # the freeze took effect before this
    try:
        assert wait_for(lambda: modes(fatriot, "mec1")["echo-tcp"] == "failsafe", 5)
        assert modes(fatriot, "mec1")["platform"] == "normal"  # the kernel still answers ICMP
    finally:
        box.unpause()
    on = [e for e in fatriot.nic_events() if e["node"] == "mec1" and e["target"] == "echo-tcp" and e["active"]
          and e["time"] >= frozen - 1.0]
    assert on and on[0]["reason"].startswith("timeout"), on
    late = on[0]["time"] - frozen
    print(f"echo-tcp fail-safe {late * 1e3:.1f} ms after docker pause returned "
          f"(interval {INTERVAL * 1e3:.0f} ms + timeout {limit_s * 1e3:.1f} ms)")
    assert late <= INTERVAL + limit_s + 0.03, late  # 30 ms for the NIC's scheduling on a shared machine
    assert wait_for(lambda: all(m == "normal" for m in modes(fatriot, "mec1").values()), 10)


def two_services(tmp_path):
    """fatriot with a second critical UDP service (7100) and a non-critical one (7200) on mec1."""
    t = MecTopo("fatriot2", subnet="10.0.0.0/24")
    t.addSite("lab")
    t.addDocker("gen", site="lab", dimage="testbed/probe", ip="10.0.0.1")
    services = [t.service("echo-udp", "udp", 7000), t.service("aux-udp", "udp", 7100)]
    t.addDocker("mec1", site="lab", dimage="testbed/echo", ip="10.0.0.11",
                nic=t.nic(ip="10.0.0.111", backups=["mec2"], services=services, interval="50ms",
                          threshold=THRESHOLD, min_rtt="20ms"))
    t.addDocker("mec2", site="lab", dimage="testbed/echo", ip="10.0.0.12")
    return Testbed(t.build(), tmp_path / "run")


def test_slow_service_fails_over_alone_and_noncritical_stays(tmp_path):
    tb = two_services(tmp_path)
    with tb:
        extra = []
        for host in ("mec1", "mec2"):
            for port, delay_file in ((7100, "/run/echo/aux_delay"), (7200, "/run/echo/x_delay")):
                extra.append(tb.node(host).popen(
                    ["python3", "/app/echo.py", "--udp-port", str(port), "--tcp-port", "0",
                     "--delay-file", delay_file, "--pid-file", f"/run/echo/pid{port}"]))
        started(tb)
        tb.node("mec1").cmd("echo 200 > /run/echo/delay_ms")  # only the main echo service slows
        assert wait_for(lambda: modes(tb, "mec1")["echo-udp"] == "failsafe", 5)
        m = modes(tb, "mec1")
        assert m["aux-udp"] == "normal" and m["platform"] == "normal", m
        assert share(replies(probe(tb, "10.0.0.11:7000", 20, 10)), "mec2") >= 0.9
        assert share(replies(probe(tb, "10.0.0.11:7100", 20, 10)), "mec1") >= 0.9
        # non-critical traffic is never redirected, even with every service forced into fail-safe
        call(tb.nic_socket("mec1"), "mode", service="platform", mode="on")
        rows = replies(probe(tb, "10.0.0.11:7200", 20, 10))
        assert share(rows, "mec1") >= 0.9 and not any(r.by == "mec2" for r in rows), rows
        call(tb.nic_socket("mec1"), "mode", service="platform", mode="auto")
        tb.node("mec1").cmd("echo 0 > /run/echo/delay_ms")
        assert wait_for(lambda: modes(tb, "mec1")["echo-udp"] == "normal", 10)
        assert share(replies(probe(tb, "10.0.0.11:7000", 20, 10)), "mec1") >= 0.9
        for p in extra:
            p.kill()
    assert leftovers(tb.rid) == []
