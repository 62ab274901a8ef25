"""The NIC's logic without sockets: heartbeat probes on the wire, transitions, events and control commands."""

from __future__ import annotations

import json
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from testbed.failsafe.config import NicConfig, ServiceConfig
from testbed.failsafe.nic import Nic

from failsafe_frames import BACKUP, BACKUP_MAC, CLIENT, HOST, HOST_MAC, NIC, NIC_MAC, udp_request


def make_nic(tmp_path: Path, message: str = "udp") -> Nic:
    cfg = NicConfig("mec1", "ab12", HOST, NIC, NIC_MAC, host_mac=HOST_MAC,
                    services=(ServiceConfig("echo", "udp", 5000, message=message, payload=b"hb"),
                              ServiceConfig("web", "tcp", 7000, message="tcp")),
                    default_backups=((BACKUP, 0),), interval_s=0.01, threshold=3.0, learn=3, hysteresis=2,
                    min_rtt_s=0.001, neighbours={BACKUP: BACKUP_MAC}, events_path=str(tmp_path / "events.jsonl"))
    return Nic(cfg, now=0.0)


def answer(frame: bytes, delay_ok: bool = True) -> bytes | None:
    """What a healthy host sends back for heartbeat `frame`."""
    p = Ether(frame)
    ip = p[IP]
    base = Ether(src=HOST_MAC, dst=NIC_MAC) / IP(src=HOST, dst=ip.src)
    if ICMP in p:
        return bytes(base / ICMP(type=0, id=p[ICMP].id, seq=p[ICMP].seq) / bytes(p[ICMP].payload))
    if UDP in p:
        return bytes(base / UDP(sport=p[UDP].dport, dport=p[UDP].sport) / bytes(p[UDP].payload))
    if TCP in p:
        return bytes(base / TCP(sport=p[TCP].dport, dport=p[TCP].sport, flags="SA", seq=77, ack=p[TCP].seq + 1))
    return None


def run(nic: Nic, start: float, end: float, alive: set[str], step: float = 0.001) -> list[tuple[str, bytes]]:
    """Drive the NIC's clock; heartbeats to targets in `alive` are answered after 0.2 ms."""
    sent: list[tuple[str, bytes]] = []
    t = start
    while t < end:
        for port, frame in nic.heartbeats_due(t) + nic.tick(t):
            sent.append((port, frame))
            p = Ether(frame)
            target = "platform" if ICMP in p else ("echo" if UDP in p else "web")
            if port == "host" and target in alive:
                reply = answer(frame)
                for port2, f2 in nic.pipeline.process(reply, "host", t + 0.0002):
                    if port2 == "cpu":
                        sent += nic.to_cpu(f2, t + 0.0002)
        t += step
    return sent


def test_probes_are_well_formed(tmp_path: Path) -> None:
    nic = make_nic(tmp_path)
    out = nic.heartbeats_due(0.0)
    kinds = {}
    for port, frame in out:
        assert port == "host"
        p = Ether(frame)
        assert p.src == NIC_MAC and p.dst == HOST_MAC and p[IP].src == NIC and p[IP].dst == HOST
        l4 = p[IP].payload
        chk = l4.chksum
        del l4.chksum
        assert Ether(bytes(p))[IP].payload.chksum == chk
        kinds[type(l4).__name__] = l4
    assert set(kinds) == {"ICMP", "UDP", "TCP"}
    assert kinds["UDP"].dport == 5000 and bytes(kinds["UDP"].payload) == b"hb"
    assert kinds["TCP"].dport == 7000 and kinds["TCP"].flags == "S"


def test_tcp_synack_is_reset_and_rst_is_not_alive(tmp_path: Path) -> None:
    nic = make_nic(tmp_path)
    syn = [f for _, f in nic.heartbeats_due(0.0) if TCP in Ether(f)][0]
    s = Ether(syn)
    synack = answer(syn)
    out = nic.to_cpu(synack, 0.0005)
    rst = [Ether(f) for port, f in out if port == "host" and TCP in Ether(f)]
    assert len(rst) == 1 and rst[0][TCP].flags == "R" and rst[0][TCP].seq == s[TCP].seq + 1
    assert nic.heartbeats.status()["web"]["received"] == 1
    refused = bytes(Ether(src=HOST_MAC, dst=NIC_MAC) / IP(src=HOST, dst=NIC) /
                    TCP(sport=7000, dport=s[TCP].sport, flags="RA", ack=s[TCP].seq + 1))
    assert nic.to_cpu(refused, 0.001) == []
    assert nic.prober.stats.rst == 1 and nic.heartbeats.status()["web"]["received"] == 1


def test_service_failure_turns_failsafe_on_and_recovery_off(tmp_path: Path) -> None:
    nic = make_nic(tmp_path)
    run(nic, 0.0, 0.1, alive={"platform", "echo", "web"})
    assert not nic.pipeline.in_failsafe("echo")
    status = nic.heartbeats.status()
    assert status["echo"]["rtt_avg_ms"] is not None and status["platform"]["mode"] == "normal"
    # a request the host will never answer is kept, then replayed to the backup on activation
    nic.pipeline.process(udp_request(), "net", 0.1)
    sent = run(nic, 0.1, 0.2, alive={"platform", "web"})
    assert nic.pipeline.in_failsafe("echo") and not nic.pipeline.in_failsafe("web")
    replayed = [Ether(f) for port, f in sent if port == "net" and UDP in Ether(f) and Ether(f)[IP].dst == BACKUP]
    assert len(replayed) == 1 and replayed[0][IP].src == NIC
    assert not (tmp_path / "events.jsonl").exists(), "the file waits until the loop has sent the replay"
    nic.write_events()
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert events[0]["target"] == "echo" and events[0]["active"] is True and events[0]["node"] == "mec1"
    assert "timeout" in events[0]["reason"]
    run(nic, 0.2, 0.3, alive={"platform", "echo", "web"})
    assert not nic.pipeline.in_failsafe("echo")
    assert [e["active"] for e in nic.events if e["target"] == "echo"] == [True, False]


def test_platform_failure_puts_every_service_in_failsafe(tmp_path: Path) -> None:
    nic = make_nic(tmp_path)
    run(nic, 0.0, 0.1, alive={"platform", "echo", "web"})
    run(nic, 0.1, 0.15, alive={"echo", "web"})
    assert nic.pipeline.platform_failsafe
    assert nic.pipeline.in_failsafe("echo") and nic.pipeline.in_failsafe("web")


def test_control_commands(tmp_path: Path) -> None:
    nic = make_nic(tmp_path)
    h = nic.handlers(clock=lambda: 1.0)
    assert h["show"]({})["modes"] == {"echo": "normal", "web": "normal"}
    assert h["mode"]({"service": "echo", "mode": "on"})["modes"]["echo"] == "failsafe"
    out = nic.pipeline.process(udp_request(), "net", 1.0)
    assert Ether(out[0][1])[IP].dst == BACKUP
    c = h["counters"]({})
    assert c["services"]["echo"]["packets"] == 1 and c["services"]["echo"]["mode"] == "failsafe"
    assert c["ports"]["net"]["rx_packets"] == 1
    h["mode"]({"service": "echo", "mode": "auto"})
    assert not nic.pipeline.in_failsafe("echo")
    h["table_add"]({"table": "target", "action": "set_service", "match": [HOST, "udp", "6000"], "params": ["other"]})
    h["table_add"]({"table": "service", "action": "to_backups", "match": [HOST, "6000"], "params": ["10.0.0.13:6001"]})
    dump = h["table_dump"]({"table": "target"})
    assert ["10.0.0.11", "17", "6000"] in [e["match"] for e in dump["entries"]]
    h["mode"]({"service": "other", "mode": "on"})
    nic.pipeline.neighbours[bytes([10, 0, 0, 13])] = b"\x02" * 6
    out = nic.pipeline.process(udp_request(dport=6000), "net", 1.0)
    assert Ether(out[0][1])[IP].dst == "10.0.0.13" and Ether(out[0][1])[UDP].dport == 6001
    h["table_delete"]({"table": "target", "match": [HOST, "udp", "6000"]})
    plain = udp_request(dport=6000)
    assert nic.pipeline.process(plain, "net", 1.0) == [("host", plain)]
    h["heartbeat_add"]({"target": "extra", "message": "icmp", "interval": 0.5, "threshold": 2})
    assert "extra" in h["heartbeat_show"]({})
    h["heartbeat_delete"]({"target": "extra"})
    assert "extra" not in h["heartbeat_show"]({})
    assert [e["target"] for e in h["events"]({})] == ["echo", "echo"]
    assert CLIENT


def test_replay_window_follows_the_heartbeat_interval_and_timeout_but_never_below_one_second() -> None:
    from testbed.failsafe.config import NicConfig, ServiceConfig
    from testbed.failsafe.nic import Nic

    def window(interval: float) -> float:
        cfg = NicConfig(node="n", rid="0000", host_ip="10.0.0.11", nic_ip="10.0.0.111", nic_mac="02:00:00:00:01:11",
                        services=(ServiceConfig("echo", "udp", 5000, message="udp"),), interval_s=interval,
                        threshold=2.0, min_rtt_s=0.01)
        nic = Nic(cfg, 0.0)
        assert nic.handler.pending_max_age_s == nic.update_replay_window()
        return nic.handler.pending_max_age_s

    assert window(0.05) == 1.0
    assert window(1.0) == 2 * (1.0 + 2.0 * 0.01)
    cfg = NicConfig(node="n", rid="0000", host_ip="10.0.0.11", nic_ip="10.0.0.111", nic_mac="02:00:00:00:01:11",
                    pending_max_age_s=0.3)
    assert Nic(cfg, 0.0).handler.pending_max_age_s == 0.3
