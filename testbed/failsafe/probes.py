"""Heartbeat packets on the wire: builds them from HeartbeatManager's schedule and matches the replies.

Messages, all from the NIC's own IP/MAC to the host, out "host":
* icmp: echo request with a per-target identifier and seq = the heartbeat's seq.
* udp: the entry's payload from source port PORT_BASE + 16*index + seq % 16 to the service port;
  a reply from the service port to that source port answers the latest heartbeat with that residue.
* tcp: a SYN from such a port with ISN = seq << 16. Without a payload, a SYN-ACK (ack = ISN + 1)
  means the service accepted: the reply is fed to the manager and the half-open connection is reset
  with an RST. With a payload (as udp; it must be what the service answers, e.g. a line for the
  echo image), the SYN-ACK is answered with an ACK carrying the payload, and only the service's data
  segment is the reply (fed with its payload, so `expect` applies), after which the connection is
  reset: a frozen host's kernel completes the handshake, but no data comes back, so it times out.
  An RST means the host is up but nothing listens on the port: for a service heartbeat that is NOT
  alive, so it is only counted and the heartbeat times out.
* Replies count only from the probed address (the NIC's pipeline hands it only host-side frames);
  others are counted as `spoofed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from testbed.failsafe.packet import (PROTO_ICMP, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_PSH, TCP_RST, TCP_SYN, Parsed,
                                     icmp_echo, ip_bytes, ipv4_frame, tcp, udp)

PORT_BASE = 33000
SLOTS = 16
ICMP_IDENT_BASE = 0x4E00
MAX_TARGETS = 60


@dataclass(frozen=True)
class Reply:
    """A heartbeat reply recognised in a frame: whose, which seq, its payload, frames to send back.

    `fed` is False for a step of an exchange that is not yet the reply (a SYN-ACK before the data).
    """

    target: str
    seq: int
    payload: bytes | None
    send: tuple[bytes, ...] = ()
    fed: bool = True


@dataclass
class ProbeStats:
    """Heartbeat replies seen that were not fed to the manager."""

    rst: int = 0
    unmatched: int = 0
    sent: int = 0
    spoofed: int = 0


@dataclass
class Prober:
    """Turns (entry, seq) into frames and frames back into (target, seq)."""

    nic_ip: bytes
    nic_mac: bytes
    host_ip: bytes
    stats: ProbeStats = field(default_factory=ProbeStats)
    _index: dict[str, int] = field(default_factory=dict)
    _by_index: dict[int, str] = field(default_factory=dict)
    _last: dict[tuple[str, int], int] = field(default_factory=dict)  # (target, slot) -> last seq sent
    _payload: dict[str, bytes] = field(default_factory=dict)  # target -> its TCP heartbeat payload
    _dst: dict[str, bytes] = field(default_factory=dict)  # target -> the address it probes

    def index(self, target: str) -> int:
        """The small number identifying `target` in ports and ICMP identifiers."""
        idx = self._index.get(target)
        if idx is None:
            free = [i for i in range(MAX_TARGETS) if i not in self._by_index]
            if not free:
                raise ValueError("too many heartbeat targets")
            idx = self._index[target] = free[0]
            self._by_index[idx] = target
        return idx

    def forget(self, target: str) -> None:
        """Stop matching replies for `target`."""
        idx = self._index.pop(target, None)
        if idx is not None:
            self._by_index.pop(idx, None)
        self._payload.pop(target, None)
        self._dst.pop(target, None)

    def build(self, entry: object, seq: int, host_mac: bytes) -> bytes:
        """The frame for heartbeat `seq` of `entry` (a HeartbeatEntry), addressed to `host_mac`."""
        target: str = entry.target  # type: ignore[attr-defined]
        dst = ip_bytes(entry.dst_ip) if entry.dst_ip else self.host_ip  # type: ignore[attr-defined]
        idx = self.index(target)
        message = entry.message  # type: ignore[attr-defined]
        self._dst[target] = dst
        self.stats.sent += 1
        if message == "icmp":
            body = icmp_echo(ICMP_IDENT_BASE + idx, seq, b"fatriot-hb")
            return ipv4_frame(host_mac, self.nic_mac, self.nic_ip, dst, PROTO_ICMP, body, ident=seq)
        slot = seq % SLOTS
        self._last[(target, slot)] = seq
        sport = PORT_BASE + idx * SLOTS + slot
        if message == "udp":
            body = udp(self.nic_ip, dst, sport, entry.dst_port, entry.payload)  # type: ignore[attr-defined]
            return ipv4_frame(host_mac, self.nic_mac, self.nic_ip, dst, PROTO_UDP, body, ident=seq)
        self._payload[target] = entry.payload  # type: ignore[attr-defined]
        body = tcp(self.nic_ip, dst, sport, entry.dst_port, seq << 16, 0, TCP_SYN,  # type: ignore[attr-defined]
                   options=b"\x02\x04\x05\xb4")
        return ipv4_frame(host_mac, self.nic_mac, self.nic_ip, dst, PROTO_TCP, body, ident=seq)

    def match(self, frame: bytes, p: Parsed) -> Reply | None:
        """The heartbeat reply carried by `frame` (parsed as `p`, addressed to the NIC), if any."""
        if p.error or p.dst_ip != self.nic_ip:
            return None
        if p.proto == PROTO_ICMP:
            if p.icmp_type != 0:
                return None
            target = self._by_index.get(p.icmp_id - ICMP_IDENT_BASE)
            if target is None:
                self.stats.unmatched += 1
                return None
            if p.src_ip != self._dst.get(target, self.host_ip):
                self.stats.spoofed += 1
                return None
            return Reply(target, p.icmp_seq, frame[p.payload:p.end])
        if p.proto not in (PROTO_UDP, PROTO_TCP):
            return None
        rel = p.dport - PORT_BASE
        target = self._by_index.get(rel // SLOTS) if 0 <= rel < MAX_TARGETS * SLOTS else None
        if target is None:
            return None
        seq = self._last.get((target, rel % SLOTS))
        if seq is None:
            self.stats.unmatched += 1
            return None
        if p.src_ip != self._dst.get(target, self.host_ip):
            self.stats.spoofed += 1
            return None
        if p.proto == PROTO_UDP:
            return Reply(target, seq, frame[p.payload:p.end])
        if p.tcp_flags & TCP_RST:
            self.stats.rst += 1
            return None
        payload = self._payload.get(target, b"")
        synack = p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
        if payload and synack:  # the handshake is done: send the payload
            seq = ((p.tcp_ack - 1) >> 16) & 0xFFFF
            data = tcp(self.nic_ip, p.src_ip, p.dport, p.sport, p.tcp_ack, p.tcp_seq + 1, TCP_ACK | TCP_PSH,
                       payload=payload)
            return Reply(target, seq, None, (self._frame(p, data),), fed=False)
        if payload and not p.tcp_flags & TCP_SYN and p.tcp_flags & TCP_ACK and p.end > p.payload:
            seq = ((p.tcp_ack - 1 - len(payload)) >> 16) & 0xFFFF
            rst = tcp(self.nic_ip, p.src_ip, p.dport, p.sport, p.tcp_ack, 0, TCP_RST, window=0)
            return Reply(target, seq, frame[p.payload:p.end], (self._frame(p, rst),))
        if payload or not synack:
            return None
        seq = ((p.tcp_ack - 1) >> 16) & 0xFFFF
        rst = tcp(self.nic_ip, p.src_ip, p.dport, p.sport, p.tcp_ack, 0, TCP_RST, window=0)
        return Reply(target, seq, None, (self._frame(p, rst),))

    def _frame(self, p: Parsed, segment: bytes) -> bytes:
        """A TCP `segment` from the NIC back to the sender of `p`."""
        return ipv4_frame(p.src_mac, self.nic_mac, self.nic_ip, p.src_ip, PROTO_TCP, segment)


__all__ = ["Prober", "Reply", "ProbeStats", "PORT_BASE"]
