"""The fail-safe NIC process in namespaces: normal forwarding, failover to the backup and back, per-service fail-safe."""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether

from testbed.failsafe.config import ServiceConfig
from testbed.failsafe.control import call
from testbed.failsafe.labnet import MAIN_IP, Lab, in_netns, lab_run
from testbed.failsafe.launcher import NicProcess

pytestmark = pytest.mark.integration

INTERVAL = 0.02
THRESHOLD = 4.0
MIN_RTT = 0.005


class Env:
    """The running lab: its NIC, control socket, client socket and the main host's delay file."""

    def __init__(self, lab: Lab, nic: NicProcess, delay: Path) -> None:
        self.lab, self.nic, self.delay = lab, nic, delay
        self.udp = in_netns(lab.ns["c"], lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        self.udp.settimeout(0.5)

    def ask(self, port: int, payload: bytes = b"hi", timeout: float = 0.5) -> str | None:
        """Send one UDP request to the main host; the name of whoever answered (None: no answer)."""
        self.udp.settimeout(timeout)
        self.udp.sendto(payload, (MAIN_IP, port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = self.udp.recv(2048)
            except socket.timeout:
                return None
            name, _, body = data.partition(b":")
            if body == payload:
                return name.decode()
        return None

    def tcp_ask(self, port: int) -> str:
        sock = in_netns(self.lab.ns["c"], lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        sock.settimeout(2)
        try:
            sock.connect((MAIN_IP, port))
            sock.sendall(b"tcp")
            return sock.recv(100).partition(b":")[0].decode()
        finally:
            sock.close()

    def modes(self) -> dict[str, str]:
        return call(self.nic.socket, "show")["modes"]  # type: ignore[index]

    def wait_modes(self, want: dict[str, str], timeout: float = 5.0) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if all(self.modes().get(k) == v for k, v in want.items()):
                return time.monotonic() - start
            time.sleep(0.01)
        raise AssertionError(f"modes {self.modes()} never became {want}")


@pytest.fixture(scope="module", params=["python", "bpf"])
def env(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    tmp = tmp_path_factory.mktemp("nic")
    with lab_run(tmp) as run:
        lab = run.lab
        delay = tmp / "delay-main"
        delay.write_text("0")
        lab.echo("m", "main", [5000, 5001], [7000], delay)
        lab.echo("b", "backup", [5000, 5001], [7000], tmp / "delay-backup")
        nic = run.start_nic(services=(ServiceConfig("echo", "udp", 5000, message="udp", payload=b"hb"),
                                      ServiceConfig("web", "tcp", 7000, message="tcp")),
                            interval_s=INTERVAL, threshold=THRESHOLD, learn=5, hysteresis=3, min_rtt_s=MIN_RTT,
                            datapath=request.param)
        e = Env(lab, nic, delay)
        e.wait_modes({"echo": "normal", "web": "normal"})
        assert call(nic.socket, "show")["datapath"] == request.param  # type: ignore[index]
        deadline = time.monotonic() + 5
        while any(v["mode"] == "learning" for v in call(nic.socket, "heartbeat_show").values()):  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "heartbeats never learned"
            time.sleep(0.02)
        yield e
        e.udp.close()


def test_normal_mode_replies_from_main(env: Env) -> None:
    assert [env.ask(5000) for _ in range(5)] == ["main"] * 5
    assert env.ask(5001) == "main"
    assert env.tcp_ask(7000) == "main"
    c = call(env.nic.socket, "counters")
    assert c["services"]["echo"]["to_host"] >= 5 and c["services"]["echo"]["to_backup"] == 0  # type: ignore[index]


def test_forced_failsafe_redirects_only_that_service(env: Env) -> None:
    call(env.nic.socket, "mode", service="echo", mode="on")
    try:
        assert env.ask(5000) == "backup"
        assert env.ask(5001) == "main"  # non-critical: never redirected
        assert env.tcp_ask(7000) == "main"  # the other service stays on the host
    finally:
        call(env.nic.socket, "mode", service="echo", mode="auto")
    env.wait_modes({"echo": "normal"})
    assert env.ask(5000) == "main"


def test_slow_service_fails_over_alone(env: Env) -> None:
    env.delay.write_text("0.1")
    try:
        env.wait_modes({"echo": "failsafe"}, timeout=3)
        assert env.modes()["web"] == "normal"
        assert env.ask(5000, b"slow") == "backup"
        assert env.tcp_ask(7000) == "main"
    finally:
        env.delay.write_text("0")
    env.wait_modes({"echo": "normal"}, timeout=5)
    time.sleep(0.3)  # late replies to the slow period drain
    assert env.ask(5000, b"again") == "main"


def test_host_down_fails_over_and_back(env: Env) -> None:
    env.udp.settimeout(0.001)
    while True:  # drain stale replies
        try:
            env.udp.recv(2048)
        except OSError:
            break
    sent: dict[int, float] = {}
    got: dict[int, tuple[float, str]] = {}
    t_fault = 0.0

    def pump(until: float) -> None:
        """Send a request every 5 ms and collect replies until monotonic time `until`."""
        nxt = time.monotonic()
        while time.monotonic() < until:
            now = time.monotonic()
            if now >= nxt:
                seq = len(sent)
                sent[seq] = now
                env.udp.sendto(b"%d" % seq, (MAIN_IP, 5000))
                nxt += 0.005
            env.udp.settimeout(max(0.0005, nxt - time.monotonic()))
            try:
                data = env.udp.recv(2048)
            except OSError:
                continue
            name, _, body = data.partition(b":")
            if body.isdigit() and int(body) not in got:
                got[int(body)] = (time.monotonic(), name.decode())

    pump(time.monotonic() + 0.2)
    t_fault = time.monotonic()
    env.lab.ns_cmd("m", "ip", "link", "set", "eth0", "down")
    try:
        pump(time.monotonic() + 0.6)
        assert env.modes() == {"echo": "failsafe", "web": "failsafe"}
    finally:
        env.lab.ns_cmd("m", "ip", "link", "set", "eth0", "up")
    back_by = time.monotonic() + 3.0  # hysteresis: wait for the evidence (both services normal), at most 3 s
    while time.monotonic() < back_by and set(env.modes().values()) != {"normal"}:
        pump(time.monotonic() + 0.1)
    pump(time.monotonic() + 0.4)
    first_backup = min(t for t, name in got.values() if name == "backup")
    failover = first_backup - t_fault
    lost = [s for s, t in sent.items() if s not in got and t < time.monotonic() - 0.3]
    after = [got[s][1] for s in sorted(got) if sent[s] > time.monotonic() - 0.2]
    print(f"failover {failover * 1e3:.1f} ms, lost {len(lost)} of {len(sent)}")
    assert failover < INTERVAL + THRESHOLD * MIN_RTT + 0.1, failover
    assert after and set(after) == {"main"}, after  # back on the host after hysteresis
    assert len(lost) <= 2, lost  # pending requests are replayed to the backup
    events = [json.loads(line) for line in Path(env.nic.config.events_path).read_text().splitlines()]
    platform = [e for e in events if e["target"] == "platform"]
    assert platform[-2]["active"] is True and platform[-1]["active"] is False
    assert all({"time", "node", "target", "active", "reason"} <= set(e) for e in events)


def test_nic_survives_garbage(env: Env) -> None:
    eth = b"\x02\x09\x00\x00\x00\x11\x02\x09\x00\x00\x00\x07"
    ip = bytes(Ether() / IP(src="10.9.0.7", dst=MAIN_IP) / UDP(sport=1, dport=5000) / b"x")[14:]
    frames = {"bad_ihl": eth + b"\x08\x00" + b"\x43" + ip[1:],
              "bad_total_length": eth + b"\x08\x00" + ip[:2] + b"\x05\xdc" + ip[4:],
              "truncated_l4": eth + b"\x08\x00" + ip[:2] + b"\x00\x18" + ip[4:24],
              "arp": b"\xff" * 6 + eth[6:] + b"\x08\x06" + b"\x00" * 10,
              "short": eth + b"\x08\x00\x45"}

    def blast() -> None:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind((env.lab.prefix + "sn", 0))  # straight into nic-n: the bridge would drop bad IPv4
        for _ in range(50):
            for f in frames.values():
                s.send(f)
        s.close()

    in_netns(env.lab.ns["s"], blast)
    assert env.ask(5000) == "main" and env.nic.alive()
    rules = call(env.nic.socket, "counters")["rules"]  # type: ignore[index]
    for rule in ("bad_ihl", "bad_total_length", "truncated_l4", "bad_arp", "truncated_ip"):
        assert rules.get(rule, 0) >= 50, (rule, rules)


def test_vlan_tag_crosses_the_nic(env: Env) -> None:
    marker = secrets.token_bytes(8)
    tagged = bytes(Ether(src="02:09:00:00:00:07", dst="02:09:00:00:00:11") / Dot1Q(vlan=5) /
                   IP(src="10.9.0.7", dst="10.9.0.99") / UDP(sport=9, dport=9) / marker)

    def listen() -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        s.setsockopt(263, 8, 1)  # PACKET_AUXDATA
        s.bind(("eth0", 0))
        s.settimeout(0.2)
        return s

    rx = in_netns(env.lab.ns["m"], listen)

    def send() -> None:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind((env.lab.prefix + "sn", 0))
        s.send(tagged)
        s.close()

    try:
        in_netns(env.lab.ns["s"], send)
        deadline = time.monotonic() + 2
        found = None
        while time.monotonic() < deadline and found is None:
            try:
                data, anc, _, _ = rx.recvmsg(2048, socket.CMSG_SPACE(20))
            except socket.timeout:
                continue
            if marker in data:
                found = anc
        assert found, "tagged frame never reached the host"
        status, tci = int.from_bytes(found[0][2][0:4], "little"), int.from_bytes(found[0][2][16:18], "little")
        assert status & 0x10 and tci & 0x0FFF == 5  # TP_STATUS_VLAN_VALID, VLAN 5
    finally:
        rx.close()
