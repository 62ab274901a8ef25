"""Packet parsing, building and checksums, checked against scapy's own parsing and checksums."""

from __future__ import annotations

import random

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether

from testbed.failsafe import packet as pk

A, B = pk.ip_bytes("10.0.0.1"), pk.ip_bytes("10.0.0.2")
MA, MB = pk.mac_bytes("02:00:00:00:00:01"), pk.mac_bytes("02:00:00:00:00:02")


def scapy_checksums(frame: bytes) -> tuple[int, int | None]:
    """(ip chksum, l4 chksum) as scapy recomputes them for `frame`."""
    pkt = Ether(frame)
    ip = pkt[IP]
    del ip.chksum
    l4 = ip.payload
    if hasattr(l4, "chksum"):
        del l4.chksum
    again = Ether(bytes(pkt))
    return again[IP].chksum, getattr(again[IP].payload, "chksum", None)


def test_checksum_matches_rfc1071_example() -> None:
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert pk.checksum(data) == 0x220D


def test_checksum_odd_length() -> None:
    assert pk.checksum(b"\x01") == (~0x0100) & 0xFFFF


def test_built_udp_frame_parses_in_scapy_with_same_checksums() -> None:
    frame = pk.ipv4_frame(MB, MA, A, B, pk.PROTO_UDP, pk.udp(A, B, 1234, 5000, b"hello"), ident=7)
    s = Ether(frame)
    assert s[IP].src == "10.0.0.1" and s[UDP].dport == 5000 and bytes(s[UDP].payload) == b"hello"
    assert scapy_checksums(frame) == (s[IP].chksum, s[UDP].chksum)


def test_built_tcp_and_icmp_frames_have_scapy_checksums() -> None:
    t = pk.ipv4_frame(MB, MA, A, B, pk.PROTO_TCP, pk.tcp(A, B, 40000, 80, 1 << 16, 0, pk.TCP_SYN,
                                                            options=b"\x02\x04\x05\xb4"))
    s = Ether(t)
    assert s[TCP].flags == "S" and s[TCP].seq == 1 << 16
    assert scapy_checksums(t) == (s[IP].chksum, s[TCP].chksum)
    i = pk.ipv4_frame(MB, MA, A, B, pk.PROTO_ICMP, pk.icmp_echo(0x4E01, 3, b"x" * 11))
    s = Ether(i)
    assert s[ICMP].type == 8 and s[ICMP].id == 0x4E01 and s[ICMP].seq == 3
    assert scapy_checksums(i) == (s[IP].chksum, s[ICMP].chksum)


def test_parse_scapy_frames() -> None:
    frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") /
                  IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, flags="SA", seq=5, ack=9) / b"abc")
    p = pk.parse(frame)
    assert not p.error
    assert (p.src_ip, p.dst_ip, p.proto, p.sport, p.dport) == (A, B, pk.PROTO_TCP, 1, 2)
    assert p.tcp_flags == pk.TCP_SYN | pk.TCP_ACK and p.tcp_seq == 5 and p.tcp_ack == 9
    assert frame[p.payload:p.end] == b"abc"


def test_parse_vlan_and_arp() -> None:
    tagged = bytes(Ether() / Dot1Q(vlan=42) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2))
    p = pk.parse(tagged)
    assert p.vlan == 42 and p.l3 == 18 and p.dport == 2 and not p.error
    a = bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, psrc="10.0.0.1", pdst="10.0.0.2", hwsrc="02:00:00:00:00:01"))
    p = pk.parse(a)
    assert p.ethertype == pk.ETH_ARP and not p.error
    arp = pk.parse_arp(a)
    assert arp is not None and arp.op == 1 and arp.spa == A and arp.tpa == B and arp.sha == MA


@pytest.mark.parametrize("frame,error", [
    (b"\x00" * 5, "truncated_eth"),
    (b"\x00" * 12 + b"\x08\x00" + b"\x45" + b"\x00" * 5, "truncated_ip"),
    (b"\x00" * 12 + b"\x08\x00" + b"\x43" + b"\x00" * 30, "bad_ihl"),
    (b"\x00" * 12 + b"\x08\x00" + b"\x45\x00\x05\xdc" + b"\x00" * 30, "bad_total_length"),
    (b"\x00" * 12 + b"\x08\x00" + b"\x45\x00\x00\x0a" + b"\x00" * 30, "bad_total_length"),
    (b"\x00" * 12 + b"\x86\xdd" + b"\x60" * 40, "non_ip"),
    (b"\x00" * 12 + b"\x81\x00\x00", "truncated_vlan"),
])
def test_parse_reports_bad_frames(frame: bytes, error: str) -> None:
    assert pk.parse(frame).error == error


def test_parse_never_raises_on_garbage() -> None:
    rng = random.Random(1234)
    base = pk.ipv4_frame(MB, MA, A, B, pk.PROTO_TCP, pk.tcp(A, B, 1, 2, 3, 4, pk.TCP_ACK, b"data"))
    for _ in range(3000):
        f = bytearray(base[:rng.randrange(len(base) + 1)])
        for _ in range(rng.randrange(4)):
            if f:
                f[rng.randrange(len(f))] = rng.randrange(256)
        pk.parse(bytes(f))
        pk.parse_arp(bytes(f))


def test_fragment_flags() -> None:
    frag = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2", flags="MF", frag=0) / UDP(sport=1, dport=2))
    later = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2", frag=100, proto=17) / (b"x" * 16))
    assert pk.parse(frag).is_fragment
    p = pk.parse(later)
    assert p.is_fragment and p.frag_offset == 800 and p.dport == 0


@pytest.mark.parametrize("proto", ["udp", "tcp", "udp0"])
def test_rewrite_l3l4_checksums_equal_scapy(proto: str) -> None:
    rng = random.Random(7)
    for _ in range(50):
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        if proto == "tcp":
            l4 = TCP(sport=rng.randrange(1, 65536), dport=5000, seq=rng.randrange(1 << 32), flags="PA") / payload
        else:
            l4 = UDP(sport=rng.randrange(1, 65536), dport=5000) / payload
        frame = bytearray(bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") /
                                IP(src="10.0.0.7", dst="10.0.0.11", id=rng.randrange(65536)) / l4))
        if proto == "udp0":
            frame[40:42] = b"\x00\x00"
        new_src = bytes(rng.randrange(256) for _ in range(4))
        new_dst = bytes(rng.randrange(256) for _ in range(4))
        pk.rewrite_l3l4(frame, 14, 34, pk.PROTO_TCP if proto == "tcp" else pk.PROTO_UDP,
                        new_src, 41000, new_dst, 6000)
        s = Ether(bytes(frame))
        assert s[IP].src == pk.ip_str(new_src) and s[IP].dst == pk.ip_str(new_dst)
        assert s[IP].payload.sport == 41000 and s[IP].payload.dport == 6000
        ip_c, l4_c = scapy_checksums(bytes(frame))
        assert s[IP].chksum == ip_c
        if proto == "udp0":
            assert s[UDP].chksum == 0
        else:
            assert s[IP].payload.chksum == l4_c


def test_csum_update_equals_full_recompute() -> None:
    data = bytearray(b"\x12\x34\x56\x78\x9a\xbc\xde\xf0" * 8)
    c = pk.checksum(data)
    old = bytes(data[4:8])
    data[4:8] = b"\xff\xff\x00\x01"
    assert pk.csum_update(c, old, b"\xff\xff\x00\x01") == pk.checksum(data)


def test_arp_frame_round_trip() -> None:
    f = pk.arp_frame(pk.ARP_REPLY, MA, A, MB, B)
    s = Ether(f)
    assert s.dst == "02:00:00:00:00:02" and s[ARP].op == 2 and s[ARP].psrc == "10.0.0.1" and s[ARP].hwdst == pk.mac_str(MB)
