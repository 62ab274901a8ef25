"""Parses and builds the frames the fail-safe NIC handles: Ethernet, 802.1Q, ARP, IPv4, ICMP, UDP, TCP.

Everything works on raw `bytes`/`bytearray`; offsets below are for an untagged IPv4 frame. Checksums
are the Internet checksum (RFC 1071) and its incremental update (RFC 1624, eqn. 3), so rewriting a few
header fields never re-reads the payload.
"""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass

ETH_LEN = 14
ETH_IPV4 = b"\x08\x00"
ETH_ARP = b"\x08\x06"
ETH_VLAN = b"\x81\x00"
ETH_QINQ = b"\x88\xa8"
BROADCAST = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_NAMES = {"icmp": PROTO_ICMP, "tcp": PROTO_TCP, "udp": PROTO_UDP}
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
ARP_REQUEST, ARP_REPLY = 1, 2
_LITTLE = sys.byteorder == "little"


def mac_bytes(text: str) -> bytes:
    """b'\\x02\\x00...' from '02:00:...'."""
    raw = bytes.fromhex(text.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"bad MAC address {text!r}")
    return raw


def mac_str(raw: bytes) -> str:
    """'02:00:...' from six bytes."""
    return ":".join(f"{b:02x}" for b in raw)


def ip_bytes(text: str) -> bytes:
    """Four bytes from a dotted IPv4 address (prefix length, if any, ignored)."""
    return socket.inet_aton(text.split("/", 1)[0])


def ip_str(raw: bytes) -> str:
    """Dotted IPv4 address from four bytes."""
    return socket.inet_ntoa(bytes(raw))


def proto_number(text: str | int) -> int:
    """IP protocol number from 'tcp'/'udp'/'icmp' or a number."""
    if isinstance(text, int):
        return text
    name = text.strip().lower()
    return PROTO_NAMES[name] if name in PROTO_NAMES else int(name, 0)


# --- checksums -------------------------------------------------------------------------------

def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """The 16-bit ones' complement sum of `data` (big-endian words, odd length padded), folded."""
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    total = sum(memoryview(data).cast("H"))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    if _LITTLE:
        total = ((total & 0xFF) << 8) | (total >> 8)
    return total


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The Internet checksum of `data`, optionally continuing from the ones' sum `initial`."""
    total = ones_sum(data) + initial
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Ones' sum of the IPv4 pseudo-header that TCP and UDP checksums cover."""
    return ones_sum(src + dst + struct.pack("!BBH", 0, proto, length))


def csum_delta(old: bytes, new: bytes) -> int:
    """The ones' sum that 16-bit-aligned bytes `old` becoming `new` adds to ~checksum (RFC 1624: ~m + m').

    It depends only on the bytes that change, so a NAT flow precomputes it once and applies it to
    every packet with `csum_apply`.
    """
    total = 0
    for i in range(0, len(old), 2):
        total += (~((old[i] << 8) | old[i + 1])) & 0xFFFF
        total += (new[i] << 8) | new[i + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def csum_apply(csum: int, delta: int) -> int:
    """Checksum `csum` after a change whose `csum_delta` is `delta` (RFC 1624, eqn. 3: HC' = ~(~HC + delta))."""
    total = (~csum & 0xFFFF) + delta
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def csum_update(csum: int, old: bytes, new: bytes) -> int:
    """Checksum after 16-bit-aligned bytes `old` became `new` (RFC 1624: HC' = ~(~HC + ~m + m'))."""
    return csum_apply(csum, csum_delta(old, new))


# --- parsing ---------------------------------------------------------------------------------

@dataclass(slots=True)
class Parsed:
    """What the parser found in one frame; `error` names the first problem ('' when none)."""

    dst_mac: bytes = b""
    src_mac: bytes = b""
    vlan: int | None = None
    ethertype: bytes = b""
    l3: int = ETH_LEN
    src_ip: bytes = b""
    dst_ip: bytes = b""
    proto: int = -1
    ihl: int = 0
    total_len: int = 0
    frag_offset: int = 0
    more_fragments: bool = False
    l4: int = 0
    sport: int = 0
    dport: int = 0
    tcp_flags: int = 0
    tcp_seq: int = 0
    tcp_ack: int = 0
    icmp_type: int = -1
    icmp_id: int = 0
    icmp_seq: int = 0
    payload: int = 0  # offset of the L4 payload
    end: int = 0  # end of the IP datagram (Ethernet padding excluded)
    error: str = ""

    @property
    def is_fragment(self) -> bool:
        return self.more_fragments or self.frag_offset != 0


def parse(frame: bytes | bytearray) -> Parsed:
    """Parse Ethernet (through 802.1Q tags), ARP or IPv4 and its ICMP/UDP/TCP header; never raises."""
    p = Parsed()
    n = len(frame)
    if n < ETH_LEN:
        p.error = "truncated_eth"
        return p
    p.dst_mac, p.src_mac = bytes(frame[0:6]), bytes(frame[6:12])
    off = 12
    etype = bytes(frame[12:14])
    while etype in (ETH_VLAN, ETH_QINQ):
        if n < off + 6:
            p.error = "truncated_vlan"
            return p
        if p.vlan is None:
            p.vlan = int.from_bytes(frame[off + 2:off + 4], "big") & 0x0FFF
        off += 4
        etype = bytes(frame[off:off + 2])
    p.ethertype = etype
    p.l3 = l3 = off + 2
    if etype == ETH_ARP:
        if n < l3 + 28:
            p.error = "truncated_arp"
        return p
    if etype != ETH_IPV4:
        p.error = "non_ip"
        return p
    if n < l3 + 20:
        p.error = "truncated_ip"
        return p
    vihl = frame[l3]
    p.ihl = ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < 20:
        p.error = "bad_ihl"
        return p
    p.total_len = total = int.from_bytes(frame[l3 + 2:l3 + 4], "big")
    if total < ihl or l3 + total > n:
        p.error = "bad_total_length"
        return p
    p.end = l3 + total
    flags = int.from_bytes(frame[l3 + 6:l3 + 8], "big")
    p.more_fragments = bool(flags & 0x2000)
    p.frag_offset = (flags & 0x1FFF) * 8
    p.proto = frame[l3 + 9]
    p.src_ip, p.dst_ip = bytes(frame[l3 + 12:l3 + 16]), bytes(frame[l3 + 16:l3 + 20])
    p.l4 = l4 = l3 + ihl
    if p.frag_offset:
        return p  # no L4 header in a non-first fragment
    room = p.end - l4
    if p.proto == PROTO_UDP:
        if room < 8:
            p.error = "truncated_l4"
            return p
        p.sport, p.dport = struct.unpack_from("!HH", frame, l4)
        p.payload = l4 + 8
    elif p.proto == PROTO_TCP:
        if room < 20:
            p.error = "truncated_l4"
            return p
        p.sport, p.dport, p.tcp_seq, p.tcp_ack, offs, p.tcp_flags = struct.unpack_from("!HHIIBB", frame, l4)
        doff = (offs >> 4) * 4
        if doff < 20 or doff > room:
            p.error = "bad_tcp_offset"
            return p
        p.payload = l4 + doff
    elif p.proto == PROTO_ICMP:
        if room < 8:
            p.error = "truncated_l4"
            return p
        p.icmp_type = frame[l4]
        p.icmp_id, p.icmp_seq = struct.unpack_from("!HH", frame, l4 + 4)
        p.payload = l4 + 8
    return p


@dataclass(frozen=True, slots=True)
class Arp:
    """An Ethernet/IPv4 ARP message."""

    op: int
    sha: bytes
    spa: bytes
    tha: bytes
    tpa: bytes


def parse_arp(frame: bytes | bytearray, l3: int = ETH_LEN) -> Arp | None:
    """The ARP message at offset `l3`, or None if it is not Ethernet/IPv4 ARP."""
    if len(frame) < l3 + 28 or frame[l3:l3 + 6] != b"\x00\x01\x08\x00\x06\x04":
        return None
    op = int.from_bytes(frame[l3 + 6:l3 + 8], "big")
    return Arp(op, bytes(frame[l3 + 8:l3 + 14]), bytes(frame[l3 + 14:l3 + 18]),
               bytes(frame[l3 + 18:l3 + 24]), bytes(frame[l3 + 24:l3 + 28]))


# --- building --------------------------------------------------------------------------------

def ethernet(dst: bytes, src: bytes, ethertype: bytes, payload: bytes, vlan: int | None = None) -> bytes:
    """An Ethernet frame (802.1Q-tagged when `vlan` is given)."""
    tag = ETH_VLAN + struct.pack("!H", vlan & 0x0FFF) if vlan is not None else b""
    return dst + src + tag + ethertype + payload


def arp(op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> bytes:
    """An Ethernet/IPv4 ARP message body (without the Ethernet header)."""
    return b"\x00\x01\x08\x00\x06\x04" + struct.pack("!H", op) + sha + spa + tha + tpa


def arp_frame(op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes, dst: bytes | None = None) -> bytes:
    """A whole ARP frame: requests broadcast, replies to `tha` (or `dst`)."""
    eth_dst = dst or (BROADCAST if op == ARP_REQUEST else tha)
    return ethernet(eth_dst, sha, ETH_ARP, arp(op, sha, spa, tha if op == ARP_REPLY else ZERO_MAC, tpa))


def ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int = 0, ttl: int = 64,
         dont_fragment: bool = True) -> bytes:
    """An IPv4 datagram (20-byte header, checksum filled in)."""
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF,
                                0x4000 if dont_fragment else 0, ttl, proto, 0, src, dst))
    hdr[10:12] = checksum(hdr).to_bytes(2, "big")
    return bytes(hdr) + payload


def udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, zero_checksum: bool = False) -> bytes:
    """A UDP segment with its checksum over the pseudo-header (0 when `zero_checksum`)."""
    length = 8 + len(payload)
    seg = struct.pack("!HHHH", sport, dport, length, 0) + payload
    if zero_checksum:
        return seg
    c = checksum(seg, pseudo_sum(src, dst, PROTO_UDP, length)) or 0xFFFF
    return seg[:6] + c.to_bytes(2, "big") + seg[8:]


def tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
        payload: bytes = b"", window: int = 65535, options: bytes = b"") -> bytes:
    """A TCP segment with its checksum over the pseudo-header."""
    doff = (20 + len(options)) // 4
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, doff << 4, flags,
                      window, 0, 0) + options + payload
    c = checksum(seg, pseudo_sum(src, dst, PROTO_TCP, len(seg)))
    return seg[:16] + c.to_bytes(2, "big") + seg[18:]


def icmp_echo(ident: int, seq: int, payload: bytes = b"", reply: bool = False) -> bytes:
    """An ICMP echo request (or reply) message with its checksum."""
    msg = struct.pack("!BBHHH", 0 if reply else 8, 0, 0, ident & 0xFFFF, seq & 0xFFFF) + payload
    c = checksum(msg)
    return msg[:2] + c.to_bytes(2, "big") + msg[4:]


def ipv4_frame(dst_mac: bytes, src_mac: bytes, src: bytes, dst: bytes, proto: int, l4: bytes,
               ident: int = 0) -> bytes:
    """An Ethernet frame carrying an IPv4 datagram."""
    return ethernet(dst_mac, src_mac, ETH_IPV4, ipv4(src, dst, proto, l4, ident))


# --- rewriting -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Rewrite:
    """A precomputed NAT rewrite of an untagged, option-less IPv4 TCP/UDP frame.

    Bytes 26..38 (source IP, destination IP, source port, destination port) become `l3l4`; the IPv4
    header checksum gets `ip_delta` and the TCP/UDP checksum `l4_delta` (the pseudo-header covers
    the addresses), both per RFC 1624; `macs` (12 bytes, or empty) replaces destination+source MAC.
    """

    l3l4: bytes
    ip_delta: int
    l4_delta: int
    macs: bytes = b""


def make_rewrite(old_l3l4: bytes, new_l3l4: bytes, macs: bytes = b"") -> Rewrite:
    """The `Rewrite` turning addresses+ports `old_l3l4` (12 bytes as in the frame) into `new_l3l4`."""
    ip_delta = csum_delta(old_l3l4[:8], new_l3l4[:8])
    return Rewrite(new_l3l4, ip_delta, csum_delta(old_l3l4, new_l3l4), macs)


def apply_rewrite(frame: bytes | bytearray, rw: Rewrite, l4_csum_at: int, udp: bool) -> bytearray:
    """A copy of `frame` (untagged, IHL 5) with `rw` applied: 12 bytes replaced and two checksums updated.

    `l4_csum_at` is 40 for UDP, 50 for TCP; a UDP checksum of zero ("none") stays zero.
    """
    out = bytearray(frame)
    if rw.macs:
        out[0:12] = rw.macs
    out[26:38] = rw.l3l4
    total = (~((out[24] << 8) | out[25]) & 0xFFFF) + rw.ip_delta
    total = (total & 0xFFFF) + (total >> 16)
    total = ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF
    out[24], out[25] = total >> 8, total & 0xFF
    old = (out[l4_csum_at] << 8) | out[l4_csum_at + 1]
    if udp and old == 0:
        return out
    total = (~old & 0xFFFF) + rw.l4_delta
    total = (total & 0xFFFF) + (total >> 16)
    total = ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF
    if udp and total == 0:
        total = 0xFFFF
    out[l4_csum_at], out[l4_csum_at + 1] = total >> 8, total & 0xFF
    return out


def rewrite_l3l4(frame: bytearray, l3: int, l4: int, proto: int,
                 src_ip: bytes, sport: int, dst_ip: bytes, dport: int) -> None:
    """Rewrite IPv4 source/destination and TCP/UDP ports in place, updating both checksums.

    Both checksums are updated incrementally (RFC 1624), so the payload is never re-read; a UDP
    checksum of zero ("none") is left zero.
    """
    old = bytes(frame[l3 + 12:l3 + 20]) + bytes(frame[l4:l4 + 4])
    new = src_ip + dst_ip + struct.pack("!HH", sport, dport)
    frame[l3 + 12:l3 + 20] = new[:8]
    frame[l4:l4 + 4] = new[8:]
    ip_c = (frame[l3 + 10] << 8) | frame[l3 + 11]
    frame[l3 + 10:l3 + 12] = csum_update(ip_c, old[:8], new[:8]).to_bytes(2, "big")
    at = l4 + (16 if proto == PROTO_TCP else 6)
    old_c = (frame[at] << 8) | frame[at + 1]
    if proto == PROTO_UDP and old_c == 0:
        return
    new_c = csum_update(old_c, old, new)
    if proto == PROTO_UDP and new_c == 0:
        new_c = 0xFFFF
    frame[at:at + 2] = new_c.to_bytes(2, "big")
