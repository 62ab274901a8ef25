"""The NIC's fast path: established NAT flows and normal-mode critical frames handled without parsing."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

import testbed.failsafe.pipeline as pipeline_mod
from testbed.failsafe import packet as pk
from testbed.failsafe.config import NicConfig, ServiceConfig
from testbed.failsafe.nic import Nic

from failsafe_frames import (BACKUP, BACKUP_MAC, CLIENT, CLIENT_MAC, HOST, HOST_MAC, NIC, NIC_MAC, make_pipeline,
                             tcp_segment, udp_reply, udp_request)
from test_failsafe_nat import checksums_ok


@pytest.fixture
def no_parse(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - a switch
    """Calling `arm()` makes any parse in the pipeline fail the test."""

    def arm() -> None:
        def boom(frame: bytes) -> None:
            raise AssertionError("the fast path parsed a frame")

        monkeypatch.setattr(pipeline_mod, "parse", boom)

    return arm


def backup_reply(nat_port: int, proto: str, payload: bytes, backup_port: int = 5000) -> bytes:
    base = Ether(src=BACKUP_MAC, dst=NIC_MAC) / IP(src=BACKUP, dst=NIC)
    if proto == "tcp":
        return bytes(base / TCP(sport=7000, dport=nat_port, flags="PA", seq=9, ack=10) / payload)
    return bytes(base / UDP(sport=backup_port, dport=nat_port) / payload)


@pytest.mark.parametrize("proto", ["udp", "tcp", "udp0"])
def test_established_flow_fast_equals_slow_and_checksums_hold(proto: str, no_parse) -> None:  # noqa: ANN001
    rng = random.Random(11)
    pipe = make_pipeline()
    pipe.set_failsafe("web" if proto == "tcp" else "echo", True, 0.0)
    frames = []
    for i in range(20):
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 400)))
        if proto == "tcp":
            f = bytearray(tcp_segment("PA", sport=3000 + i, seq=rng.randrange(1 << 32), payload=payload))
        else:
            f = bytearray(udp_request(sport=3000 + i, payload=payload))
            if proto == "udp0":
                f[40:42] = b"\x00\x00"
        frames.append(bytes(f))
    slow = [pipe.process(f, "net", 1.0) for f in frames]  # first packet of each flow: parsed, conn created
    no_parse()
    fast = [pipe.process(f, "net", 1.1) for f in frames]
    assert fast == slow
    for out in fast:
        assert out[0][0] == "net" and checksums_ok(out[0][1])
        e = Ether(out[0][1])
        assert (e.src, e.dst, e[IP].src, e[IP].dst) == (NIC_MAC, BACKUP_MAC, NIC, BACKUP)
        if proto == "udp0":
            assert e[UDP].chksum == 0
    # replies from the backup, reverse-NATed on the fast path, equal a generic rewrite
    for f, out in zip(frames, fast):
        nat_port = Ether(out[0][1])[IP].payload.sport
        reply = backup_reply(nat_port, "tcp" if proto == "tcp" else "udp", b"answer %d" % nat_port)
        back = pipe.process(reply, "net", 1.2)
        want = bytearray(reply)
        want[0:12] = pk.mac_bytes(CLIENT_MAC) + pk.mac_bytes(HOST_MAC)
        client_port = Ether(f)[IP].payload.sport
        pk.rewrite_l3l4(want, 14, 34, pk.PROTO_TCP if proto == "tcp" else pk.PROTO_UDP, pk.ip_bytes(HOST),
                        7000 if proto == "tcp" else 5000, pk.ip_bytes(CLIENT), client_port)
        assert back == [("net", bytes(want))] and checksums_ok(back[0][1])
    sid = "web" if proto == "tcp" else "echo"
    sc = pipe.counters.services[sid]
    assert sc.to_backup == 40 and sc.from_backup == 20 and sc.packets == 40
    assert pipe.handler.stats.per_backup == {BACKUP: 40} and pipe.handler.stats.reversed == 20


def test_apply_rewrite_equals_scapy_for_random_addresses() -> None:
    rng = random.Random(5)
    for _ in range(200):
        proto = rng.choice(["udp", "tcp"])
        l4 = (TCP(sport=rng.randrange(65536), dport=rng.randrange(65536), flags="A") if proto == "tcp"
              else UDP(sport=rng.randrange(65536), dport=rng.randrange(65536)))
        frame = bytes(Ether() / IP(src="10.1.2.3", dst="10.3.2.1", ttl=rng.randrange(1, 256)) / l4 /
                      bytes(rng.randrange(256) for _ in range(rng.randrange(60))))
        new = bytes(rng.randrange(256) for _ in range(12))
        out = pk.apply_rewrite(frame, pk.make_rewrite(frame[26:38], new), 50 if proto == "tcp" else 40,
                               proto == "udp")
        assert bytes(out[26:38]) == new and checksums_ok(bytes(out))


def test_reply_from_wrong_port_is_not_reversed_by_fast_path() -> None:
    pipe = make_pipeline()
    pipe.set_failsafe("echo", True, 0.0)
    nat_port = Ether(pipe.process(udp_request(), "net", 1.0)[0][1])[UDP].sport
    assert pipe.process(backup_reply(nat_port, "udp", b"x", backup_port=5999), "net", 1.1) == []
    assert pipe.counters.reasons["nat_miss"] == 1


def test_recovered_udp_service_goes_back_to_host_despite_conn() -> None:
    pipe = make_pipeline()
    pipe.set_failsafe("echo", True, 0.0)
    req = udp_request()
    assert Ether(pipe.process(req, "net", 1.0)[0][1])[IP].dst == BACKUP
    pipe.set_failsafe("echo", False, 2.0)
    assert pipe.process(req, "net", 2.1) == [("host", req)]


def test_tcp_fin_on_fast_path_starts_closing() -> None:
    pipe = make_pipeline()
    pipe.set_failsafe("web", True, 0.0)
    pipe.process(tcp_segment("S", sport=4444), "net", 1.0)
    conn = pipe.handler.conntrack.conns()[0]
    assert not conn.closing
    pipe.process(tcp_segment("FA", sport=4444, seq=101), "net", 1.5)
    assert conn.closing and conn.last_seen == 1.5


def test_normal_mode_mirror_and_answer_without_parsing(no_parse) -> None:  # noqa: ANN001
    pipe = make_pipeline()
    pipe.process(udp_request(sport=999), "net", 0.5)  # creates the services' counters (slow path)
    pipe.process(tcp_segment("S", sport=3999), "net", 0.5)
    no_parse()
    reqs = [udp_request(sport=1000 + i, payload=b"r%d" % i) for i in range(3)]
    for r in reqs:
        assert pipe.process(r, "net", 1.0) == [("host", r)]
    assert pipe.handler.pending_count == 5
    rep = udp_reply(dport=1000)
    assert pipe.process(rep, "host", 1.01) == [("net", rep)]
    assert pipe.handler.pending_count == 4 and pipe.handler.stats.answered == 1
    syn, data = tcp_segment("S", sport=4000), tcp_segment("PA", sport=4000, seq=101, payload=b"d")
    before = pipe.handler.pending_count
    assert pipe.process(syn, "net", 1.0) == [("host", syn)]
    assert pipe.process(data, "net", 1.0) == [("host", data)]
    assert pipe.handler.pending_count == before + 1  # only the SYN is kept
    assert pipe.counters.services["echo"].to_host == 4


def test_ip_options_take_the_slow_path_and_still_translate() -> None:
    pipe = make_pipeline()
    pipe.set_failsafe("echo", True, 0.0)
    f = bytes(Ether(src=CLIENT_MAC, dst=HOST_MAC) / IP(src=CLIENT, dst=HOST, options=[b"\x01\x01\x01\x00"]) /
              UDP(sport=1234, dport=5000) / b"opt")
    for t in (1.0, 1.1):
        out = pipe.process(f, "net", t)
        assert Ether(out[0][1])[IP].dst == BACKUP and checksums_ok(out[0][1])


def test_announcement_carries_host_platform_state(tmp_path: Path) -> None:
    cfg = NicConfig("mec1", "ab12", HOST, NIC, NIC_MAC, host_mac=HOST_MAC,
                    services=(ServiceConfig("echo", "udp", 5000),), peers=("10.0.0.112",),
                    default_backups=((BACKUP, 0),), events_path=str(tmp_path / "e.jsonl"))
    nic = Nic(cfg, now=0.0)
    assert nic.announcement() == {f"{HOST}:5000": {"state": "normal", "capacity": 1},
                                  f"{HOST}:*": {"state": "normal", "capacity": 1}}
    nic.pipeline.platform_failsafe = True
    assert nic.announcement()[f"{HOST}:*"]["state"] == "failsafe"
    # a peer that hears it skips every backup on that host, also ports it does not announce
    from testbed.failsafe.discovery import Discovery

    peer = Discovery("10.0.0.112", [NIC], now=0.0)
    for _, payload in nic.discovery.announce(0.0, nic.announcement()):  # type: ignore[union-attr]
        peer.on_message(NIC, payload, 0.0)
    assert not peer.healthy((HOST, 6000), 0.1) and peer.healthy(("10.0.0.13", 6000), 0.1)
    assert peer.choose([(HOST, 6000), ("10.0.0.13", 6000)], "flow", 0.1) == ("10.0.0.13", 6000)
