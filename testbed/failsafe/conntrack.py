"""Connection tracking for the fail-safe handler: flow -> chosen backup and NAT port, with timeouts.

A flow is (proto, client ip, client port, service ip, service port). Its connection remembers the
backup it was given (so it stays there), the NIC source port used towards the backup, and the MACs
needed to send replies back. Time is passed in; `expire(now)` drops idle connections.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from testbed.failsafe.packet import PROTO_TCP, TCP_FIN, TCP_RST

NAT_PORTS = (40000, 60999)


def flow_key(proto: int, client_ip: bytes, client_port: int, service_ip: bytes, service_port: int) -> bytes:
    """The raw key of a flow as seen from the client."""
    return struct.pack("!B4sH4sH", proto, client_ip, client_port, service_ip, service_port)


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

    @property
    def key(self) -> bytes:
        return flow_key(self.proto, self.client_ip, self.client_port, self.service_ip, self.service_port)


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
        self._next = ports[0]

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
               backup_ip: bytes, backup_port: int, now: float) -> Conn | None:
        """Track a new flow and give it a free NAT port; None when the table or port range is full."""
        if len(self._by_key) >= self.max_conns:
            self.expire(now)
            if len(self._by_key) >= self.max_conns:
                return None
        port = self._free_port(proto)
        if port is None:
            return None
        conn = Conn(service, proto, client_ip, client_port, client_mac, service_ip, service_port,
                    service_mac, backup_ip, backup_port, port, now, now)
        self._by_key[conn.key] = conn
        self._by_nat[(proto, port)] = conn
        return conn

    def seen(self, conn: Conn, now: float, tcp_flags: int = 0) -> None:
        """Note traffic on `conn` at `now` (a TCP FIN or RST starts its short closing timeout)."""
        conn.last_seen = now
        if conn.proto == PROTO_TCP and tcp_flags & (TCP_FIN | TCP_RST):
            conn.closing = True

    def remove(self, conn: Conn) -> None:
        """Stop tracking `conn`."""
        self._by_key.pop(conn.key, None)
        self._by_nat.pop((conn.proto, conn.nat_port), None)

    def expire(self, now: float) -> list[Conn]:
        """Drop connections idle longer than their timeout; returns them."""
        gone = [c for c in self._by_key.values() if now - c.last_seen > self._timeout(c)]
        for c in gone:
            self.remove(c)
        return gone

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
