"""Conntrack and the fail-safe handler's NAT: DNAT/SNAT to the backup, reverse NAT, checksums per scapy."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from testbed.failsafe.conntrack import ConnTrack, Timeouts
from testbed.failsafe.packet import PROTO_TCP, PROTO_UDP, ip_bytes, parse

from failsafe_frames import (BACKUP, BACKUP_MAC, CLIENT, CLIENT_MAC, HOST, HOST_MAC, NIC, NIC_MAC, make_pipeline,
                             tcp_segment, udp_request)


def checksums_ok(frame: bytes) -> bool:
    """True when scapy's recomputed IP and L4 checksums equal the ones in `frame`."""
    pkt = Ether(frame)
    ip = pkt[IP]
    l4 = ip.payload
    have = (ip.chksum, l4.chksum)
    del ip.chksum
    del l4.chksum
    again = Ether(bytes(pkt))
    want = (again[IP].chksum, again[IP].payload.chksum)
    if isinstance(l4, UDP) and have[1] == 0:
        return have[0] == want[0]
    return have == want


def test_conntrack_ports_timeouts_and_reuse() -> None:
    ct = ConnTrack(Timeouts(udp=1.0, tcp=10.0, tcp_closing=0.5), ports=(40000, 40001), max_conns=10)
    a = ct.create("s", PROTO_UDP, b"\x01" * 4, 1, b"m" * 6, b"\x02" * 4, 5, b"n" * 6, b"\x03" * 4, 5, now=0.0)
    b = ct.create("s", PROTO_TCP, b"\x01" * 4, 2, b"m" * 6, b"\x02" * 4, 5, b"n" * 6, b"\x03" * 4, 5, now=0.0)
    c = ct.create("s", PROTO_UDP, b"\x01" * 4, 3, b"m" * 6, b"\x02" * 4, 5, b"n" * 6, b"\x03" * 4, 5, now=0.0)
    assert a and b and c and a.nat_port != c.nat_port  # same proto: different ports
    assert ct.create("s", PROTO_UDP, b"\x01" * 4, 4, b"m" * 6, b"\x02" * 4, 5, b"n" * 6, b"\x03" * 4, 5, now=0.0) is None
    assert ct.by_nat(PROTO_UDP, a.nat_port) is a and ct.get(a.key) is a
    ct.seen(b, 0.9, tcp_flags=0x01)  # FIN: short timeout
    gone = ct.expire(1.5)
    assert set(id(x) for x in gone) == {id(a), id(b), id(c)} and len(ct) == 0


def test_udp_dnat_snat_and_reverse() -> None:
    pipe = make_pipeline()
    pipe.set_failsafe("echo", True, 0.0)
    out = pipe.process(udp_request(payload=b"hello"), "net", 1.0)
    assert len(out) == 1 and out[0][0] == "net"
    fwd = Ether(out[0][1])
    assert (fwd.src, fwd.dst) == (NIC_MAC, BACKUP_MAC)
    assert (fwd[IP].src, fwd[IP].dst, fwd[UDP].dport) == (NIC, BACKUP, 5000)
    assert fwd[UDP].sport >= 40000 and bytes(fwd[UDP].payload) == b"hello"
    assert checksums_ok(out[0][1])
    # the backup answers the NIC
    reply = bytes(Ether(src=BACKUP_MAC, dst=NIC_MAC) / IP(src=BACKUP, dst=NIC) /
                  UDP(sport=5000, dport=fwd[UDP].sport) / b"from-backup")
    back = pipe.process(reply, "net", 1.1)
    assert len(back) == 1 and back[0][0] == "net"
    r = Ether(back[0][1])
    assert (r.src, r.dst) == (HOST_MAC, CLIENT_MAC)
    assert (r[IP].src, r[IP].dst, r[UDP].sport, r[UDP].dport) == (HOST, CLIENT, 5000, 1111)
    assert checksums_ok(back[0][1])
    assert pipe.counters.services["echo"].to_backup == 1 and pipe.counters.services["echo"].from_backup == 1


def test_zero_checksum_udp_stays_zero() -> None:
    pipe = make_pipeline()
    pipe.set_failsafe("echo", True, 0.0)
    frame = bytearray(udp_request())
    frame[40:42] = b"\x00\x00"
    out = pipe.process(bytes(frame), "net", 1.0)
    assert Ether(out[0][1])[UDP].chksum == 0
    assert checksums_ok(out[0][1])


def test_flow_stays_on_one_backup_and_flows_spread() -> None:
    pipe = make_pipeline(backups=((BACKUP, 0), ("10.0.0.13", 0)))
    pipe.neighbours[ip_bytes("10.0.0.13")] = b"\x02\x00\x00\x00\x00\x13"
    pipe.set_failsafe("echo", True, 0.0)
    seen = {}
    for sport in range(1000, 1040):
        dsts = {Ether(pipe.process(udp_request(sport=sport), "net", 1.0 + i)[0][1])[IP].dst for i in range(3)}
        assert len(dsts) == 1
        seen[sport] = dsts.pop()
    assert set(seen.values()) == {BACKUP, "10.0.0.13"}


def test_backup_port_rewrite_and_reply_from_wrong_source_dropped() -> None:
    pipe = make_pipeline(backups=((BACKUP, 6000),))
    pipe.set_failsafe("echo", True, 0.0)
    fwd = Ether(pipe.process(udp_request(), "net", 1.0)[0][1])
    assert fwd[UDP].dport == 6000
    spoof = bytes(Ether(src=BACKUP_MAC, dst=NIC_MAC) / IP(src="10.0.0.66", dst=NIC) /
                  UDP(sport=6000, dport=fwd[UDP].sport) / b"x")
    assert pipe.process(spoof, "net", 1.1) == []
    assert pipe.counters.reasons["nat_miss"] == 1


def test_tcp_nat_checksums_and_sticky_connection() -> None:
    pipe = make_pipeline()
    pipe.set_failsafe("web", True, 0.0)
    syn = pipe.process(tcp_segment("S", payload=b""), "net", 1.0)
    s = Ether(syn[0][1])
    assert s[IP].dst == BACKUP and s[TCP].dport == 7000 and s[TCP].flags == "S" and checksums_ok(syn[0][1])
    synack = bytes(Ether(src=BACKUP_MAC, dst=NIC_MAC) / IP(src=BACKUP, dst=NIC) /
                   TCP(sport=7000, dport=s[TCP].sport, flags="SA", seq=5000, ack=101))
    back = Ether(pipe.process(synack, "net", 1.01)[0][1])
    assert back[IP].src == HOST and back[TCP].dport == 2222 and back[TCP].flags == "SA"
    # service recovers: the established connection stays on the backup, a new one goes to the host
    pipe.set_failsafe("web", False, 2.0)
    data = pipe.process(tcp_segment("PA", seq=101, ack=5001, payload=b"GET"), "net", 2.1)
    assert Ether(data[0][1])[IP].dst == BACKUP and checksums_ok(data[0][1])
    new = pipe.process(tcp_segment("S", sport=3333), "net", 2.2)
    assert new[0][0] == "host" and Ether(new[0][1])[IP].dst == HOST


def test_no_backup_drops_and_counts() -> None:
    pipe = make_pipeline(backups=())
    pipe.set_failsafe("echo", True, 0.0)
    assert pipe.process(udp_request(), "net", 1.0) == []
    assert pipe.counters.reasons["no_backup"] == 1 and pipe.counters.services["echo"].dropped == 1


def test_unknown_backup_mac_is_resolved_by_arp_then_sent() -> None:
    from failsafe_frames import arp_reply

    pipe = make_pipeline(know_backup=False)
    pipe.set_failsafe("echo", True, 0.0)
    out = pipe.process(udp_request(), "net", 1.0)
    assert len(out) == 1 and out[0][0] == "net"
    req = parse(out[0][1])
    assert req.ethertype == b"\x08\x06"
    held = pipe.process(arp_reply(BACKUP, BACKUP_MAC), "net", 1.01)
    assert len(held) == 1 and Ether(held[0][1]).dst == BACKUP_MAC and checksums_ok(held[0][1])
    assert CLIENT_MAC  # addresses module used
