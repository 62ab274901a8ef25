"""The NIC on inputs no shipped file uses: TCP heartbeats with a payload, full tables, spoofed replies, asymmetric backups."""

from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from testbed.failsafe.config import ECHO_TCP_PAYLOAD, NicConfig, ServiceConfig
from testbed.failsafe.conntrack import ConnTrack
from testbed.failsafe.discovery import Discovery
from testbed.failsafe.nic import Nic
from testbed.failsafe.packet import PROTO_UDP, ip_bytes, mac_bytes
from testbed.topology.model import CriticalService, HeartbeatSpec, HostSpec, NicSpec, SiteSpec, TopologySpec

from failsafe_frames import (BACKUP, BACKUP_MAC, CLIENT, HOST, HOST_MAC, NIC, NIC_MAC, arp_request, make_pipeline,
                             udp_request)

PAYLOAD = b"hb\n"


def tcp_nic(tmp_path: Path, payload: bytes = PAYLOAD) -> Nic:
    cfg = NicConfig("mec1", "ab12", HOST, NIC, NIC_MAC, host_mac=HOST_MAC,
                    services=(ServiceConfig("web", "tcp", 7000, message="tcp", payload=payload,
                                            expect=payload.strip() or None),),
                    default_backups=((BACKUP, 0),), interval_s=0.01, threshold=3.0, learn=3, hysteresis=2,
                    min_rtt_s=0.001, neighbours={BACKUP: BACKUP_MAC}, events_path=str(tmp_path / "events.jsonl"))
    return Nic(cfg, now=0.0)


def host_answers(nic: Nic, frame: bytes, t: float, frozen: bool, echo: bytes | None = None) -> list[tuple[str, bytes]]:
    """A host kernel (handshake) and, unless `frozen`, its echo service (a data reply) answering `frame`."""
    p = Ether(frame)
    base = Ether(src=HOST_MAC, dst=NIC_MAC) / IP(src=HOST, dst=NIC)
    replies = []
    if ICMP in p:
        replies.append(base / ICMP(type=0, id=p[ICMP].id, seq=p[ICMP].seq) / bytes(p[ICMP].payload))
    elif TCP in p and p[TCP].flags == "S":
        replies.append(base / TCP(sport=7000, dport=p[TCP].sport, flags="SA", seq=5000, ack=p[TCP].seq + 1))
    elif TCP in p and p[TCP].flags == "PA":
        data = bytes(p[TCP].payload)
        replies.append(base / TCP(sport=7000, dport=p[TCP].sport, flags="A", seq=5001, ack=p[TCP].seq + len(data)))
        if not frozen:
            replies.append(base / TCP(sport=7000, dport=p[TCP].sport, flags="PA", seq=5001,
                                      ack=p[TCP].seq + len(data)) / (data if echo is None else echo))
    out = []
    for r in replies:
        for port, f in nic.pipeline.process(bytes(r), "host", t):
            if port == "cpu":
                out += nic.to_cpu(f, t)
    return out


def drive(nic: Nic, start: float, end: float, frozen: bool, step: float = 0.0005,
          echo: bytes | None = None) -> list[bytes]:
    """Run the NIC's clock; the host answers after 0.2 ms. Returns every frame sent to the host."""
    sent: list[bytes] = []
    t = start
    queue: list[bytes] = []
    while t < end:
        queue += [f for port, f in nic.heartbeats_due(t) + nic.tick(t) if port == "host"]
        while queue:
            frame = queue.pop(0)
            sent.append(frame)
            queue += [f for port, f in host_answers(nic, frame, t + 0.0002, frozen, echo) if port == "host"]
        t += step
    return sent


def test_tcp_heartbeat_with_payload_needs_the_service_to_answer(tmp_path: Path) -> None:
    nic = tcp_nic(tmp_path)
    sent = drive(nic, 0.0, 0.1, frozen=False)
    st = nic.heartbeats.status()["web"]
    assert st["mode"] == "normal" and st["received"] >= 5
    kinds = [str(Ether(f)[TCP].flags) for f in sent if TCP in Ether(f)]
    assert "PA" in kinds and "R" in kinds  # payload sent after the handshake, connection reset after the reply
    data = [bytes(Ether(f)[TCP].payload) for f in sent if TCP in Ether(f) and Ether(f)[TCP].flags == "PA"]
    assert set(data) == {PAYLOAD}
    # a frozen host: its kernel completes the handshake, the service never answers
    drive(nic, 0.1, 0.1 + nic.config.interval_s + 0.01, frozen=True)
    assert nic.pipeline.in_failsafe("web")
    assert nic.events[-1]["target"] == "web" and "timeout" in nic.events[-1]["reason"]
    # a connect-only heartbeat does not see the freeze
    plain = tcp_nic(tmp_path, payload=b"")
    drive(plain, 0.0, 0.1, frozen=False)
    drive(plain, 0.1, 0.2, frozen=True)
    assert not plain.pipeline.in_failsafe("web") and plain.heartbeats.status()["web"]["received"] > 10


def test_tcp_heartbeat_wrong_reply_is_a_failure(tmp_path: Path) -> None:
    nic = tcp_nic(tmp_path)
    drive(nic, 0.0, 0.1, frozen=False)
    drive(nic, 0.1, 0.13, frozen=False, echo=b"500 busy\n")  # the service answers, but not the expected reply
    assert nic.pipeline.in_failsafe("web") and "unexpected reply" in nic.events[-1]["reason"]


def test_heartbeat_replies_only_count_from_the_probed_address_on_the_host_side(tmp_path: Path) -> None:
    nic = tcp_nic(tmp_path)
    frame = nic.heartbeats_due(0.0)[0][1]  # the platform's ICMP echo request
    p = Ether(frame)
    spoof_net = bytes(Ether(src="02:66:00:00:00:01", dst=NIC_MAC) / IP(src=HOST, dst=NIC) /
                      ICMP(type=0, id=p[ICMP].id, seq=p[ICMP].seq) / bytes(p[ICMP].payload))
    assert nic.pipeline.process(spoof_net, "net", 0.001) == []
    assert nic.pipeline.counters.reasons["net_to_nic"] == 1
    wrong_src = bytes(Ether(src=HOST_MAC, dst=NIC_MAC) / IP(src="10.0.0.99", dst=NIC) /
                      ICMP(type=0, id=p[ICMP].id, seq=p[ICMP].seq) / bytes(p[ICMP].payload))
    for port, f in nic.pipeline.process(wrong_src, "host", 0.001):
        assert port == "cpu" and nic.to_cpu(f, 0.001) == []
    assert nic.prober.stats.spoofed == 1 and nic.heartbeats.status()["platform"]["received"] == 0
    good = bytes(Ether(src=HOST_MAC, dst=NIC_MAC) / IP(src=HOST, dst=NIC) /
                 ICMP(type=0, id=p[ICMP].id, seq=p[ICMP].seq) / bytes(p[ICMP].payload))
    for port, f in nic.pipeline.process(good, "host", 0.001):
        nic.to_cpu(f, 0.001)
    assert nic.heartbeats.status()["platform"]["received"] == 1


def test_full_conntrack_drops_unassured_flows_early_and_counts() -> None:
    ct = ConnTrack(max_conns=3)
    args = (b"\x0a\x00\x00\x0b", 5000, b"\x00" * 6, ip_bytes(BACKUP), 5000, 0.0)
    conns = [ct.create("echo", PROTO_UDP, ip_bytes(CLIENT), 1000 + i, b"\x00" * 6, *args) for i in range(3)]
    for c in conns[1:]:  # request, reply, request: assured
        ct.seen(c, 0.1, reply=True)
        ct.seen(c, 0.2)
    new = ct.create("echo", PROTO_UDP, ip_bytes(CLIENT), 2000, b"\x00" * 6, *args)
    assert new is not None and ct.early_drops == 1 and conns[0] not in ct.conns()
    ct.seen(new, 0.3, reply=True)
    ct.seen(new, 0.4)
    assert ct.create("echo", PROTO_UDP, ip_bytes(CLIENT), 2001, b"\x00" * 6, *args) is None
    assert ct.full == 1 and len(ct) == 3


def test_failover_serves_new_flows_when_the_table_is_full_of_unanswered_flows() -> None:
    released = []
    pipe = make_pipeline()
    pipe.handler.conntrack.max_conns = 50
    pipe.handler.release = lambda backup, flow: released.append(flow)
    pipe.set_failsafe("echo", True, 0.0)
    for i in range(200):  # a flood of spoofed one-shot requests the backup never answers
        pipe.process(udp_request(sport=10000 + i, src=f"10.0.{1 + i // 250}.{1 + i % 250}"), "net", 0.001)
    assert len(pipe.handler.conntrack) == 50 and pipe.handler.conntrack.early_drops == 150
    assert len(released) == 150
    out = pipe.process(udp_request(sport=1111), "net", 0.002)
    assert [Ether(f)[IP].dst for _, f in out] == [BACKUP]


def test_neighbour_table_is_bounded_and_keeps_static_and_pinned_entries() -> None:
    pipe = make_pipeline()
    pipe.neighbours_max = 8
    pinned = ip_bytes("10.0.0.13")
    pipe.pinned = {pinned}
    pipe.process(arp_request("10.0.0.13", "02:00:00:00:00:13", NIC), "net", 0.0)
    for i in range(100):
        pipe.process(arp_request(f"10.1.{i // 200}.{i % 200 + 1}", f"02:01:00:00:{i // 256:02x}:{i % 256:02x}",
                                 "10.0.0.200"), "net", 0.0)
    assert len(pipe.neighbours) <= 8
    assert pipe.neighbours[ip_bytes(BACKUP)] == mac_bytes(BACKUP_MAC) and pinned in pipe.neighbours
    assert pipe.counters.reasons["neighbour_evicted"] >= 90


def test_replay_store_keeps_a_fast_flow_over_the_window_and_counts_overflows() -> None:
    pipe = make_pipeline()
    h = pipe.handler
    for i in range(500):  # 5,000 requests/s for 0.1 s: more than the old 64 per flow
        pipe.process(udp_request(payload=b"REQ %d" % i), "net", i * 0.0002)
    assert h.pending_count == 500 and h.stats.pending_overflow == 0
    h.pending_per_flow = 100
    pipe.process(udp_request(payload=b"REQ x"), "net", 0.1)
    assert h.pending_count == 100 and h.stats.pending_overflow == 401
    out = pipe.set_failsafe("echo", True, 0.1)
    assert len(out) == 100 and bytes(Ether(out[-1][1])[UDP].payload) == b"REQ x"


def test_relayed_traffic_and_failover_counters(tmp_path: Path) -> None:
    cfg = NicConfig("mec2", "ab12", BACKUP, "10.0.0.112", "02:00:00:00:01:12", host_mac=BACKUP_MAC,
                    services=(ServiceConfig("echo", "udp", 5000, message="udp", payload=b"hb"),),
                    default_backups=(("10.0.0.13", 0),), peers=(NIC,), neighbours={"10.0.0.13": "02:00:00:00:00:13"})
    nic = Nic(cfg, now=0.0)
    nic.handlers()["mode"]({"service": "echo", "mode": "on"})
    relayed = udp_request(src=NIC, src_mac=NIC_MAC, dst=BACKUP, dst_mac=BACKUP_MAC, sport=40000)
    direct = udp_request(dst=BACKUP, dst_mac=BACKUP_MAC, sport=1234)
    for f in (relayed, relayed, direct):
        nic.pipeline.process(f, "net", 0.01)
    c = nic.handlers()["failover"]({})
    assert c["per_backup"] == {"10.0.0.13": 3} and c["relayed"] == 2 and c["no_backup"] == 0
    assert nic.handlers()["counters"]({})["failover"] == c
    assert set(c) >= {"per_backup", "relayed", "dropped", "no_backup", "passive", "conntrack_early_drop",
                      "replay_overflow", "neighbour_evicted"}


def test_a_nic_learns_a_backup_that_does_not_list_it() -> None:
    """mec1's NIC backs up to mec2; mec2's NIC backs up to mec3 only: mec1 still hears mec2's state."""
    main = Discovery("10.0.0.111", ["10.0.0.112"], 0.0)
    backup = Discovery("10.0.0.112", ["10.0.0.113"], 0.0)
    for dst, payload in main.announce(0.0, {"10.0.0.11:*": {"state": "normal", "capacity": 1}}):
        if dst == "10.0.0.112":
            backup.on_message("10.0.0.111", payload, 0.0)
    assert backup.garbage == 0 and "10.0.0.111" in backup.nics()
    failed = {"10.0.0.12:5000": {"state": "failsafe", "capacity": 1}, "10.0.0.12:*": {"state": "normal"}}
    sent = backup.announce(0.05, failed)
    assert {dst for dst, _ in sent} == {"10.0.0.111", "10.0.0.113"}
    for dst, payload in sent:
        if dst == "10.0.0.111":
            main.on_message("10.0.0.112", payload, 0.05)
    assert not main.healthy(("10.0.0.12", 5000), 0.1) and main.healthy(("10.0.0.12", 7001), 0.1)
    # a listener that stops talking is forgotten
    backup.announce(5.0, failed)
    assert "10.0.0.111" not in backup.nics()


def asymmetric() -> TopologySpec:
    svc = (CriticalService("echo-tcp", "tcp", 7001, HeartbeatSpec("tcp")),
           CriticalService("echo-udp", "udp", 7000, HeartbeatSpec("udp", payload=b"ping")))
    mec1 = HostSpec("mec1", "lab", "10.0.0.11/24", image="testbed/echo",
                    nic=NicSpec(ip="10.0.0.111/24", backups=("mec2",), services=svc))
    mec2 = HostSpec("mec2", "lab", "10.0.0.12/24", image="testbed/echo",
                    nic=NicSpec(ip="10.0.0.112/24", backups=("mec3",), services=svc))
    mec3 = HostSpec("mec3", "lab", "10.0.0.13/24", image="testbed/other",
                    nic=NicSpec(ip="10.0.0.113/24", backups=("mec1",), services=svc))
    return TopologySpec("asym", (SiteSpec("lab", hosts=(mec1, mec2, mec3)),))


def test_config_peers_include_the_nics_that_back_up_to_this_host(tmp_path: Path) -> None:
    t = asymmetric()
    cfg2 = NicConfig.from_spec(t.host("mec2"), t, "ab12", tmp_path)
    assert cfg2.peers == ("10.0.0.113", "10.0.0.111")  # its backup's NIC, then mec1's, which sends it traffic
    assert cfg2.passive_evidence is True


def test_echo_image_tcp_services_get_a_payload_heartbeat(tmp_path: Path) -> None:
    t = asymmetric()
    echo = {s.name: s for s in NicConfig.from_spec(t.host("mec1"), t, "ab12", tmp_path).services}
    assert echo["echo-tcp"].payload == ECHO_TCP_PAYLOAD and echo["echo-tcp"].expect == ECHO_TCP_PAYLOAD.strip()
    assert echo["echo-udp"].payload == b"ping" and echo["echo-udp"].expect is None
    other = {s.name: s for s in NicConfig.from_spec(t.host("mec3"), t, "ab12", tmp_path).services}
    assert other["echo-tcp"].payload == b"" and other["echo-tcp"].expect is None
    cfg = NicConfig.from_spec(t.host("mec1"), t, "ab12", tmp_path)
    assert NicConfig.from_json(cfg.to_json()) == cfg
