"""Passive failure evidence: a RST or ICMP unreachable from a critical service port turns fail-safe on at once."""

from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from testbed.failsafe.config import NicConfig, ServiceConfig
from testbed.failsafe.nic import Nic

from failsafe_frames import (BACKUP, BACKUP_MAC, CLIENT, CLIENT_MAC, HOST, HOST_MAC, NIC, NIC_MAC, tcp_segment,
                             udp_request)
from test_failsafe_nic import run

ALL = {"platform", "echo", "web"}


def learned_nic(tmp_path: Path, passive: bool = True) -> Nic:
    cfg = NicConfig("mec1", "ab12", HOST, NIC, NIC_MAC, host_mac=HOST_MAC,
                    services=(ServiceConfig("echo", "udp", 5000, message="udp", payload=b"hb"),
                              ServiceConfig("web", "tcp", 7000, message="tcp")),
                    default_backups=((BACKUP, 0),), interval_s=0.01, threshold=3.0, learn=3, hysteresis=2,
                    min_rtt_s=0.001, neighbours={BACKUP: BACKUP_MAC}, events_path=str(tmp_path / "events.jsonl"),
                    passive_evidence=passive)
    nic = Nic(cfg, now=0.0)
    run(nic, 0.0, 0.1, alive=ALL)
    assert nic.heartbeats.status()["web"]["mode"] == "normal"
    return nic


def rst_from_host(syn: bytes) -> bytes:
    s = Ether(syn)
    return bytes(Ether(src=HOST_MAC, dst=CLIENT_MAC) / IP(src=HOST, dst=CLIENT) /
                 TCP(sport=s[TCP].dport, dport=s[TCP].sport, flags="RA", seq=0, ack=s[TCP].seq + 1))


def port_unreachable(request: bytes) -> bytes:
    inner = Ether(request)[IP]
    return bytes(Ether(src=HOST_MAC, dst=CLIENT_MAC) / IP(src=HOST, dst=CLIENT) / ICMP(type=3, code=3) /
                 bytes(inner)[:28])


def test_rst_to_a_pending_syn_is_evidence_not_forwarded_and_the_syn_goes_to_the_backup(tmp_path: Path) -> None:
    nic = learned_nic(tmp_path)
    syn = tcp_segment("S", sport=40001, seq=1000)
    assert nic.pipeline.process(syn, "net", 0.101) == [("host", syn)]
    out = nic.pipeline.process(rst_from_host(syn), "host", 0.102)
    assert nic.pipeline.in_failsafe("web") and not nic.pipeline.in_failsafe("echo")
    assert all(port != "net" or TCP not in Ether(f) or not Ether(f)[TCP].flags.R for port, f in out)
    resent = [Ether(f) for port, f in out if port == "net"]
    assert len(resent) == 1 and resent[0][IP].dst == BACKUP and resent[0].dst == BACKUP_MAC
    assert resent[0][TCP].flags == "S" and resent[0][TCP].seq == 1000 and resent[0][IP].src == NIC
    assert nic.handler.pending_count == 0
    assert nic.failover_counters()["passive"] == 1
    assert nic.pipeline.counters.reasons["passive_rst"] == 1
    event = nic.events[-1]
    assert event["target"] == "web" and event["active"] and event["reason"].startswith("passive: RST")
    # the client's SYN retransmission goes to the backup as well
    again = nic.pipeline.process(syn, "net", 0.2)
    assert [Ether(f)[IP].dst for _, f in again] == [BACKUP]


def test_without_passive_evidence_the_rst_reaches_the_client_and_clears_the_pending_syn(tmp_path: Path) -> None:
    nic = learned_nic(tmp_path, passive=False)
    syn = tcp_segment("S", sport=40002, seq=5)
    nic.pipeline.process(syn, "net", 0.101)
    rst = rst_from_host(syn)
    assert nic.pipeline.process(rst, "host", 0.102) == [("net", rst)]
    assert not nic.pipeline.in_failsafe("web")
    assert nic.handler.pending_count == 0 and nic.handler.stats.pending_refused == 1
    # a later activation does not replay the refused SYN: the client already gave up on it
    nic.handlers()["mode"]({"service": "web", "mode": "on"})
    assert not [f for port, f in nic.pending_out if port == "net"]


def test_rst_on_a_connection_without_pending_syn_is_just_forwarded(tmp_path: Path) -> None:
    nic = learned_nic(tmp_path)
    rst = bytes(Ether(src=HOST_MAC, dst=CLIENT_MAC) / IP(src=HOST, dst=CLIENT) /
                TCP(sport=7000, dport=40003, flags="R", seq=9))
    assert nic.pipeline.process(rst, "host", 0.101) == [("net", rst)]
    assert not nic.pipeline.in_failsafe("web")


def test_icmp_port_unreachable_for_a_pending_udp_request_is_evidence(tmp_path: Path) -> None:
    nic = learned_nic(tmp_path)
    req = udp_request(sport=1234, payload=b"REQ 1")
    nic.pipeline.process(req, "net", 0.101)
    out = nic.pipeline.process(port_unreachable(req), "host", 0.102)
    assert nic.pipeline.in_failsafe("echo") and not nic.pipeline.in_failsafe("web")
    assert not [f for port, f in out if ICMP in Ether(f)]
    resent = [Ether(f) for port, f in out if port == "net"]
    assert len(resent) == 1 and resent[0][IP].dst == BACKUP and bytes(resent[0][UDP].payload) == b"REQ 1"
    assert nic.pipeline.counters.reasons["passive_icmp"] == 1


def test_icmp_unreachable_about_other_traffic_is_forwarded(tmp_path: Path) -> None:
    nic = learned_nic(tmp_path)
    other = udp_request(sport=1234, dport=6000)  # not a critical port
    icmp = port_unreachable(other)
    assert nic.pipeline.process(icmp, "host", 0.101) == [("net", icmp)]
    unrelated = port_unreachable(udp_request(sport=999))  # critical port, but never seen by the NIC
    assert nic.pipeline.process(unrelated, "host", 0.102) == [("net", unrelated)]
    assert not nic.pipeline.in_failsafe("echo")
    truncated = bytes(Ether(src=HOST_MAC, dst=CLIENT_MAC) / IP(src=HOST, dst=CLIENT) / ICMP(type=3, code=3) / b"x")
    assert nic.pipeline.process(truncated, "host", 0.103) == [("net", truncated)]


def test_evidence_recovers_like_a_failed_heartbeat(tmp_path: Path) -> None:
    nic = learned_nic(tmp_path)
    syn = tcp_segment("S", sport=40004)
    nic.pipeline.process(syn, "net", 0.101)
    nic.pipeline.process(rst_from_host(syn), "host", 0.102)
    assert nic.pipeline.in_failsafe("web")
    run(nic, 0.103, 0.2, alive=ALL)  # the service answers its heartbeats again: hysteresis 2
    assert not nic.pipeline.in_failsafe("web")


def test_passive_mode_can_be_switched_by_the_control_api(tmp_path: Path) -> None:
    nic = learned_nic(tmp_path)
    assert nic.handlers()["passive"]({"mode": "off"}) == {"passive": "off"}
    syn = tcp_segment("S", sport=40005)
    nic.pipeline.process(syn, "net", 0.101)
    rst = rst_from_host(syn)
    assert nic.pipeline.process(rst, "host", 0.102) == [("net", rst)]
    assert nic.pipeline.counters.reasons["refused_rst"] == 1


def test_a_service_without_heartbeat_is_not_failed_by_evidence(tmp_path: Path) -> None:
    nic = learned_nic(tmp_path)
    nic.handlers()["heartbeat_delete"]({"target": "web"})  # nothing would ever turn its fail-safe off again
    syn = tcp_segment("S", sport=40006)
    nic.pipeline.process(syn, "net", 0.101)
    rst = rst_from_host(syn)
    assert nic.pipeline.process(rst, "host", 0.102) == [("net", rst)]
    assert not nic.pipeline.in_failsafe("web") and nic.handler.pending_count == 0
