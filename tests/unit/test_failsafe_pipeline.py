"""The NIC pipeline's rules: forwarding, classification, mirror and replay, ARP, robustness."""

from __future__ import annotations

import random

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether

from testbed.failsafe.packet import ip_bytes

from failsafe_frames import (BACKUP, CLIENT, CLIENT_MAC, HOST, HOST_MAC, NIC, NIC_MAC, arp_request, make_pipeline,
                             tcp_segment, udp_reply, udp_request)


def test_normal_mode_forwards_both_ways_unchanged() -> None:
    pipe = make_pipeline()
    req, rep = udp_request(), udp_reply()
    assert pipe.process(req, "net", 1.0) == [("host", req)]
    assert pipe.process(rep, "host", 1.0) == [("net", rep)]
    other = udp_request(dport=9999)
    assert pipe.process(other, "net", 1.0) == [("host", other)]
    stranger = udp_request(dst="10.0.0.50")
    assert pipe.process(stranger, "net", 1.0) == [("host", stranger)]
    assert pipe.counters.ports["net"].rx_packets == 3 and pipe.counters.ports["host"].tx_packets == 3


def test_non_critical_traffic_never_redirected_in_failsafe() -> None:
    pipe = make_pipeline()
    pipe.set_failsafe("echo", True, 0.0)
    other = udp_request(dport=9999)
    assert pipe.process(other, "net", 1.0) == [("host", other)]
    tcp_other = tcp_segment("S", dport=22)
    assert pipe.process(tcp_other, "net", 1.0) == [("host", tcp_other)]
    # the other critical service is not affected either
    web = tcp_segment("S")
    assert pipe.process(web, "net", 1.0) == [("host", web)]


def test_pending_requests_replayed_to_backup_on_activation() -> None:
    pipe = make_pipeline()
    for i in range(3):
        pipe.process(udp_request(sport=1000 + i, payload=b"r%d" % i), "net", 1.0 + i * 0.01)
    pipe.process(udp_reply(dport=1000), "host", 1.05)  # host answered the first one
    assert pipe.handler.pending_count == 2
    out = pipe.set_failsafe("echo", True, 1.1)
    assert [Ether(f)[IP].dst for _, f in out] == [BACKUP, BACKUP]
    assert [bytes(Ether(f)[UDP].payload) for _, f in out] == [b"r1", b"r2"]
    assert pipe.handler.pending_count == 0
    assert pipe.set_failsafe("echo", True, 1.2) == []  # already active: nothing more


def test_pending_requests_age_out_and_are_bounded() -> None:
    pipe = make_pipeline()
    pipe.handler.pending_total = 10
    for i in range(50):
        pipe.process(udp_request(sport=2000 + i), "net", 1.0)
    assert pipe.handler.pending_count == 10
    assert pipe.set_failsafe("echo", True, 5.0) == []  # all older than pending_max_age_s
    assert pipe.handler.stats.pending_expired == 10


def test_tcp_syn_replayed_but_not_data() -> None:
    pipe = make_pipeline()
    pipe.process(tcp_segment("S", sport=4000), "net", 1.0)
    pipe.process(tcp_segment("PA", sport=4001, payload=b"data"), "net", 1.0)
    out = pipe.set_failsafe("web", True, 1.1)
    assert len(out) == 1 and Ether(out[0][1])[IP].dst == BACKUP and Ether(out[0][1])["TCP"].flags == "S"
    assert [c.client_port for c in pipe.handler.conntrack.conns()] == [4000]


def test_arp_for_nic_answered_from_both_sides_and_not_forwarded() -> None:
    pipe = make_pipeline()
    for side, (ip, mac) in (("net", (CLIENT, CLIENT_MAC)), ("host", (HOST, HOST_MAC))):
        out = pipe.process(arp_request(ip, mac, NIC), side, 1.0)
        assert len(out) == 1 and out[0][0] == side
        a = Ether(out[0][1])[ARP]
        assert a.op == 2 and a.psrc == NIC and a.hwsrc == NIC_MAC and a.pdst == ip
    other = arp_request(CLIENT, CLIENT_MAC, HOST)
    assert pipe.process(other, "net", 1.0) == [("host", other)]
    assert pipe.neighbours[ip_bytes(CLIENT)] == bytes.fromhex(CLIENT_MAC.replace(":", ""))


def test_proxy_arp_for_host_only_while_platform_failed() -> None:
    pipe = make_pipeline()
    req = arp_request(CLIENT, CLIENT_MAC, HOST)
    assert pipe.process(req, "net", 1.0) == [("host", req)]
    pipe.platform_failsafe = True
    out = pipe.process(req, "net", 1.0)
    assert ("host", req) in out
    proxy = [Ether(f)[ARP] for port, f in out if port == "net"]
    assert len(proxy) == 1 and proxy[0].psrc == HOST and proxy[0].hwsrc == HOST_MAC


def test_frames_for_nic_go_to_cpu_and_ping_is_answered() -> None:
    pipe = make_pipeline()
    hb_reply = bytes(Ether(src=HOST_MAC, dst=NIC_MAC) / IP(src=HOST, dst=NIC) / ICMP(type=0, id=1, seq=2))
    assert pipe.process(hb_reply, "host", 1.0) == [("cpu", hb_reply)]
    ping = bytes(Ether(src=CLIENT_MAC, dst=NIC_MAC) / IP(src=CLIENT, dst=NIC) / ICMP(type=8, id=9, seq=1) / b"abc")
    out = pipe.process(ping, "net", 1.0)
    r = Ether(out[0][1])
    assert out[0][0] == "net" and r[ICMP].type == 0 and r[IP].dst == CLIENT and r[IP].src == NIC
    chk = r[ICMP].chksum
    del r[ICMP].chksum
    assert Ether(bytes(r))[ICMP].chksum == chk


def test_robustness_rules() -> None:
    pipe = make_pipeline()
    assert pipe.process(b"\x01\x02", "net", 1.0) == []
    assert pipe.counters.reasons["truncated"] == 1
    tagged = bytes(Ether() / Dot1Q(vlan=5) / IP(src=CLIENT, dst=HOST) / UDP(sport=1, dport=5000))
    assert pipe.process(tagged, "net", 1.0) == [("host", tagged)]
    frag = bytes(Ether(src=CLIENT_MAC, dst=HOST_MAC) / IP(src=CLIENT, dst=HOST, flags="MF") / UDP(sport=1, dport=5000) / b"x")
    pipe.set_failsafe("echo", True, 0.0)
    assert pipe.process(frag, "net", 1.0) == [("host", frag)]  # fragments are never redirected
    bad = bytearray(udp_request())
    bad[14] = 0x44  # ihl 4
    assert pipe.process(bytes(bad), "net", 1.0) == []
    liar = bytearray(udp_request())
    liar[16:18] = (1400).to_bytes(2, "big")
    assert pipe.process(bytes(liar), "net", 1.0) == []
    ipv6 = b"\x00" * 12 + b"\x86\xdd" + b"\x60" + b"\x00" * 60
    assert pipe.process(ipv6, "host", 1.0) == [("net", ipv6)]
    r = pipe.counters.reasons
    assert r["vlan"] == 1 and r["fragment"] == 1 and r["bad_ihl"] == 1 and r["bad_total_length"] == 1 and r["non_ip"] == 1


def test_garbage_never_raises() -> None:
    rng = random.Random(99)
    pipe = make_pipeline()
    pipe.set_failsafe("echo", True, 0.0)
    seeds = [udp_request(), udp_reply(), tcp_segment("S"), arp_request(CLIENT, CLIENT_MAC, NIC),
             bytes(Ether(src=CLIENT_MAC, dst=NIC_MAC) / IP(src=BACKUP, dst=NIC) / UDP(sport=5000, dport=40000))]
    for i in range(4000):
        f = bytearray(rng.choice(seeds))
        f = f[:rng.randrange(len(f) + 1)]
        for _ in range(rng.randrange(5)):
            if f:
                f[rng.randrange(len(f))] = rng.randrange(256)
        out = pipe.process(bytes(f), rng.choice(["net", "host"]), 1.0 + i * 1e-3)
        assert isinstance(out, list)
    assert pipe.counters.reasons.get("error", 0) == 0


def test_critical_tcp_fast_path_counts_and_respects_sticky_flows() -> None:
    pipe = make_pipeline()
    syn = tcp_segment("S")
    assert pipe.process(syn, "net", 1.0) == [("host", syn)]  # slow path: mirrored
    ack = tcp_segment("A", seq=101, ack=1)
    assert pipe.forward(ack, "net") is True  # fast path once the service has counters
    assert pipe.counters.services["web"].packets == 2 and pipe.counters.services["web"].to_host == 2
    pipe.set_failsafe("web", True, 2.0)
    assert pipe.forward(ack, "net") is False  # fail-safe: must be rewritten
    pipe.process(tcp_segment("S", sport=5555), "net", 2.0)
    pipe.set_failsafe("web", False, 3.0)
    moved = tcp_segment("A", sport=5555, seq=101, ack=1)
    assert pipe.forward(moved, "net") is False  # a tracked connection stays on its backup
    assert Ether(pipe.process(moved, "net", 3.1)[0][1])[IP].dst == BACKUP
