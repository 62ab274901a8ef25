"""Connection tracking for the fail-safe handler: flow -> chosen backup and NAT port, with timeouts.

A flow is (proto, client ip, client port, service ip, service port). Its connection remembers the
backup it was given (so it stays there), the NIC source port used towards the backup, and the MACs
needed to send replies back. Time is passed in; `expire(now)` drops idle connections. A connection is *assured* once the client
sent again after the backup replied (as Linux conntrack's ASSURED); when the table is full, a new
flow first expires idle connections, then early-drops the oldest unassured one (counted), and is
refused only when every tracked connection is assured.

Keys are raw bytes laid out as in the frame, so the NIC's fast path finds a connection from two
slices of an untagged, option-less frame: `frame[23:24] + frame[26:38]` (protocol, source IP,
destination IP, source port, destination port) is a client's request's `flow_key`, and the same
slices of a backup's reply are its connection's `reply_key`. Each connection carries precomputed
rewrites (`packet.Rewrite`) for both directions, so translating a packet builds no objects.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Callable

from testbed.failsafe.packet import PROTO_TCP, TCP_FIN, TCP_RST, Rewrite, make_rewrite

NAT_PORTS = (40000, 60999)


def flow_key(proto: int, client_ip: bytes, client_port: int, service_ip: bytes, service_port: int) -> bytes:
    """The raw key of a flow as seen from the client (protocol, IPs, ports: the frame's byte order)."""
    return struct.pack("!B4s4sHH", proto, client_ip, service_ip, client_port, service_port)


def reply_key(proto: int, backup_ip: bytes, backup_port: int, nic_ip: bytes, nat_port: int) -> bytes:
    """The raw key of a backup's reply to the NIC (same layout as `flow_key`)."""
    return struct.pack("!B4s4sHH", proto, backup_ip, nic_ip, backup_port, nat_port)


@dataclass(slots=True)
class Conn:
    """One tracked flow redirected to a backup."""

    service: str
    proto: int
    client_ip: bytes
    client_port: int
    client_mac: bytes
    service_ip: bytes
    service_port: int
    service_mac: bytes
    backup_ip: bytes
    backup_port: int
    nat_port: int
    created: float
    last_seen: float
    closing: bool = False
    nic_ip: bytes = b"\x00\x00\x00\x00"
    backup_name: str = ""  # dotted backup IP, for per-backup counters
    to_backup: Rewrite | None = None  # client -> service becomes NIC -> backup (MACs set by the caller)
    to_client: Rewrite | None = None  # backup -> NIC becomes service -> client, MACs included
    replied: bool = False  # the backup answered
    assured: bool = False  # the client sent again after a reply: not dropped early
    relayed: bool = False  # the client is another NIC (traffic it had already redirected)

    def __post_init__(self) -> None:
        self.backup_name = socket.inet_ntoa(self.backup_ip)
        request = struct.pack("!4s4sHH", self.client_ip, self.service_ip, self.client_port, self.service_port)
        translated = struct.pack("!4s4sHH", self.nic_ip, self.backup_ip, self.nat_port, self.backup_port)
        reply = struct.pack("!4s4sHH", self.backup_ip, self.nic_ip, self.backup_port, self.nat_port)
        restored = struct.pack("!4s4sHH", self.service_ip, self.client_ip, self.service_port, self.client_port)
        self.to_backup = make_rewrite(request, translated)
        self.to_client = make_rewrite(reply, restored, self.client_mac + self.service_mac)

    @property
    def key(self) -> bytes:
        return flow_key(self.proto, self.client_ip, self.client_port, self.service_ip, self.service_port)

    @property
    def reply_key(self) -> bytes:
        return reply_key(self.proto, self.backup_ip, self.backup_port, self.nic_ip, self.nat_port)


@dataclass(frozen=True)
class Timeouts:
    """Idle timeouts in seconds per kind of flow."""

    udp: float = 30.0
    tcp: float = 300.0
    tcp_closing: float = 5.0


class ConnTrack:
    """Tracks redirected flows, by client-side key and by (proto, NAT port) for replies."""

    def __init__(self, timeouts: Timeouts = Timeouts(), ports: tuple[int, int] = NAT_PORTS,
                 max_conns: int = 16384) -> None:
        self.timeouts = timeouts
        self.ports = ports
        self.max_conns = max_conns
        self._by_key: dict[bytes, Conn] = {}
        self._by_nat: dict[tuple[int, int], Conn] = {}
        self._by_reply: dict[bytes, Conn] = {}
        self._next = ports[0]
        self.early_drops = 0  # unassured connections dropped to make room
        self.full = 0  # new flows refused: table full of assured connections (or no free port)
        self.on_drop: Callable[[Conn], None] | None = None  # told of each early-dropped connection
        self.by_key = self._by_key.get  # the fast path's lookups: raw key -> Conn | None
        self.by_reply = self._by_reply.get

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, key: bytes) -> Conn | None:
        """The connection of flow `key`, if tracked."""
        return self._by_key.get(key)

    def by_nat(self, proto: int, nat_port: int) -> Conn | None:
        """The connection whose NIC-side port towards the backup is `nat_port`."""
        return self._by_nat.get((proto, nat_port))

    def create(self, service: str, proto: int, client_ip: bytes, client_port: int, client_mac: bytes,
               service_ip: bytes, service_port: int, service_mac: bytes,
               backup_ip: bytes, backup_port: int, now: float, nic_ip: bytes = b"\x00\x00\x00\x00") -> Conn | None:
        """Track a new flow and give it a free NAT port (towards the backup from `nic_ip`).

        None when the table or the port range is full.
        """
        if len(self._by_key) >= self.max_conns:
            gone = self.expire(now)
            if len(self._by_key) >= self.max_conns and not self._early_drop():
                self.full += 1
                return None
            for c in gone:
                if self.on_drop is not None:
                    self.on_drop(c)
        port = self._free_port(proto)
        if port is None:
            self.full += 1
            return None
        conn = Conn(service, proto, client_ip, client_port, client_mac, service_ip, service_port,
                    service_mac, backup_ip, backup_port, port, now, now, nic_ip=nic_ip)
        self._by_key[conn.key] = conn
        self._by_nat[(proto, port)] = conn
        self._by_reply[conn.reply_key] = conn
        return conn

    def seen(self, conn: Conn, now: float, tcp_flags: int = 0, reply: bool = False) -> None:
        """Note traffic on `conn` at `now`, a request or (`reply`) the backup's answer; FIN/RST start closing."""
        conn.last_seen = now
        if reply:
            conn.replied = True
        elif conn.replied:
            conn.assured = True
        if conn.proto == PROTO_TCP and tcp_flags & (TCP_FIN | TCP_RST):
            conn.closing = True

    def remove(self, conn: Conn) -> None:
        """Stop tracking `conn`."""
        self._by_key.pop(conn.key, None)
        self._by_nat.pop((conn.proto, conn.nat_port), None)
        self._by_reply.pop(conn.reply_key, None)

    def expire(self, now: float) -> list[Conn]:
        """Drop connections idle longer than their timeout; returns them."""
        gone = [c for c in self._by_key.values() if now - c.last_seen > self._timeout(c)]
        for c in gone:
            self.remove(c)
        return gone

    def _early_drop(self) -> bool:
        """Remove the oldest unassured connection; False when there is none."""
        victim = next((c for c in self._by_key.values() if not c.assured), None)
        if victim is None:
            return False
        self.remove(victim)
        self.early_drops += 1
        if self.on_drop is not None:
            self.on_drop(victim)
        return True

    def conns(self) -> list[Conn]:
        """All tracked connections."""
        return list(self._by_key.values())

    def _timeout(self, conn: Conn) -> float:
        if conn.proto == PROTO_TCP:
            return self.timeouts.tcp_closing if conn.closing else self.timeouts.tcp
        return self.timeouts.udp

    def _free_port(self, proto: int) -> int | None:
        lo, hi = self.ports
        span = hi - lo + 1
        for _ in range(span):
            port = self._next
            self._next = lo if port >= hi else port + 1
            if (proto, port) not in self._by_nat:
                return port
        return None
