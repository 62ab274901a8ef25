"""The fail-safe handler (Fig. 6): DNAT/SNAT to a backup, reverse NAT of its replies, pending requests.

In fail-safe mode a critical packet is sent to a backup chosen once per flow (through the `chooser`,
normally `Discovery.choose`): destination rewritten to the backup's IP and port, source to the NIC's
own IP and a NIC-chosen port. A reply from the backup to that port gets its source set back to the
service's IP/port and its destination back to the client, and is sent to the client.

In normal mode the classifier mirrors critical requests here; each is kept until the host answers the
flow (the oldest pending request of a flow is answered by each reply the host sends on it), bounded
by age (`pending_max_age_s`: a flow at r requests/s keeps about r x that many, which must cover the
heartbeat interval + timeout), optionally per flow (`pending_per_flow`), and in total; requests
dropped by the per-flow or total bounds are counted as overflows. When a service enters fail-safe mode its pending requests are re-sent to a backup:
UDP requests and TCP SYNs (a connection the host never accepted is opened on the backup instead).
Segments of TCP connections the host had already accepted are not replayed: once redirected, the
backup answers them with RST, so the client learns at once that it must reconnect.
The store is this object's own unless a data path keeps it elsewhere (`store`: the BPF data path's is in
the kernel, testbed/failsafe/bpf_pending.py, with the same operations and counters).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Hashable, Protocol, Sequence

from testbed.failsafe.conntrack import Conn, ConnTrack, flow_key
from testbed.failsafe.packet import (ETH_LEN, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Parsed,
                                     apply_rewrite, ip_bytes, ip_str, rewrite_l3l4)
from testbed.failsafe.service_table import ServiceTable

log = logging.getLogger(__name__)

Chooser = Callable[[Sequence[tuple[str, int]], Hashable, float], "tuple[str, int] | None"]
Releaser = Callable[[tuple[str, int], Hashable], None]


def first_backup(backups: Sequence[tuple[str, int]], flow: Hashable, now: float) -> tuple[str, int] | None:
    """A chooser without discovery: spread flows over the backups by hash."""
    if not backups:
        return None
    return backups[hash(flow) % len(backups)]


@dataclass
class HandlerStats:
    """What the fail-safe handler did, for the control API's counters."""

    translated: int = 0
    reversed: int = 0
    no_backup: int = 0
    no_conn: int = 0
    mirrored: int = 0
    answered: int = 0
    resent: int = 0
    pending_evicted: int = 0  # dropped because the whole store was full
    pending_overflow: int = 0  # dropped because the flow's own store was full
    pending_expired: int = 0
    pending_refused: int = 0  # pending SYNs cleared by the host's RST (the client got the RST)
    relayed: int = 0  # packets redirected for a client that is itself a NIC (already redirected once)
    carried: int = 0  # established TCP connections re-opened on a backup at failover (tcp_carry)
    carry_failed: int = 0  # established TCP connections that could not be carried: the client got a RST
    carry_untracked: int = 0  # TCP connections not followed (too many): reset at failover as before
    reopened: int = 0  # closing TCP connections forgotten for a client's new SYN on the same ports
    per_backup: dict[str, int] = field(default_factory=dict)


class PendingStore(Protocol):
    """The replay store kept outside the handler (same semantics and counters as the handler's own)."""

    def mirror_key(self, key: bytes, frame: bytes, service: str, now: float) -> None: ...
    def answered_key(self, key: bytes) -> None: ...
    def has_pending(self, key: bytes) -> bool: ...
    def clear_pending(self, key: bytes) -> int: ...
    def take_pending(self, service: str, now: float) -> list[bytes]: ...
    def prune(self, now: float) -> None: ...
    def count(self) -> int: ...


class FailsafeHandler:
    """Rewrites critical traffic to and from backups and keeps unanswered requests for failover."""

    def __init__(self, nic_ip: bytes, nic_mac: bytes, services: ServiceTable, conntrack: ConnTrack,
                 chooser: Chooser = first_backup, release: Releaser | None = None,
                 pending_per_flow: int = 0, pending_total: int = 4096, pending_max_age_s: float = 1.0) -> None:
        self.nic_ip = nic_ip
        self.nic_mac = nic_mac
        self.services = services
        self.conntrack = conntrack
        self.chooser = chooser
        self.release = release
        self.pending_per_flow = pending_per_flow
        self.pending_total = pending_total
        self.pending_max_age_s = pending_max_age_s
        self.stats = HandlerStats()
        self._pending: dict[bytes, deque[tuple[float, str, bytes]]] = {}
        self._pending_count = 0
        self.store: PendingStore | None = None  # the replay store kept by the data path (BPF: in the kernel)
        self.relay_sources: set[bytes] = set()  # raw IPs of other NICs (their redirected traffic is relayed)
        conntrack.on_drop = self._dropped

    # -- normal mode: the mirror ------------------------------------------------------------
    def mirror(self, frame: bytes, p: Parsed, service: str, now: float) -> None:
        """Keep a copy of critical request `frame` until the host answers its flow."""
        if p.proto == PROTO_TCP and not (p.tcp_flags & TCP_SYN and not p.tcp_flags & TCP_ACK):
            return  # only connection attempts are worth replaying
        self.mirror_key(flow_key(p.proto, p.src_ip, p.sport, p.dst_ip, p.dport), frame, service, now)

    def mirror_key(self, key: bytes, frame: bytes, service: str, now: float) -> None:
        """`mirror` for a request whose `flow_key` the caller already has (the fast path's raw slices)."""
        if self.store is not None:
            self.store.mirror_key(key, frame, service, now)
            return
        q = self._pending.get(key)
        if q is None:
            q = self._pending[key] = deque()
        while q and now - q[0][0] > self.pending_max_age_s:
            q.popleft()
            self._pending_count -= 1
            self.stats.pending_expired += 1
        cap = self.pending_per_flow
        while cap and len(q) >= cap:
            q.popleft()
            self._pending_count -= 1
            self.stats.pending_overflow += 1
        while self._pending_count >= self.pending_total:
            self._evict_oldest_flow(keep=key)
        q.append((now, service, bytes(frame)))
        self._pending_count += 1
        self.stats.mirrored += 1

    def answered(self, p: Parsed) -> None:
        """The host sent reply `p`: the oldest pending request of its flow is answered."""
        self.answered_key(flow_key(p.proto, p.dst_ip, p.dport, p.src_ip, p.sport))

    def answered_key(self, key: bytes) -> None:
        """`answered` for the reply of the request flow `key`."""
        if self.store is not None:
            self.store.answered_key(key)
            return
        q = self._pending.get(key)
        if not q:
            return
        q.popleft()
        self._pending_count -= 1
        self.stats.answered += 1
        if not q:
            del self._pending[key]

    def has_pending(self, key: bytes) -> bool:
        """True when flow `key` has a request the host has not answered."""
        if self.store is not None:
            return self.store.has_pending(key)
        return bool(self._pending.get(key))

    def clear_pending(self, key: bytes) -> int:
        """Forget flow `key`'s pending requests (the host refused them); how many there were."""
        if self.store is not None:
            return self.store.clear_pending(key)
        q = self._pending.pop(key, None)
        if not q:
            return 0
        self._pending_count -= len(q)
        self.stats.pending_refused += len(q)
        return len(q)

    def take_pending(self, service: str, now: float) -> list[bytes]:
        """Remove and return the unanswered, still fresh requests of `service`, oldest first."""
        if self.store is not None:
            return self.store.take_pending(service, now)
        out: list[tuple[float, bytes]] = []
        for key in list(self._pending):
            q = self._pending[key]
            keep: deque[tuple[float, str, bytes]] = deque()
            for rec in q:
                if rec[1] != service:
                    keep.append(rec)
                elif now - rec[0] <= self.pending_max_age_s:
                    out.append((rec[0], rec[2]))
                else:
                    self.stats.pending_expired += 1
            self._pending_count -= len(q) - len(keep)
            if keep:
                self._pending[key] = keep
            else:
                del self._pending[key]
        out.sort(key=lambda r: r[0])
        return [f for _, f in out]

    def prune(self, now: float) -> None:
        """Forget pending requests older than the maximum age and expired connections."""
        if self.store is not None:
            self.store.prune(now)
        for key in list(self._pending):
            q = self._pending[key]
            while q and now - q[0][0] > self.pending_max_age_s:
                q.popleft()
                self._pending_count -= 1
                self.stats.pending_expired += 1
            if not q:
                del self._pending[key]
        for conn in self.conntrack.expire(now):
            if self.release is not None:
                self.release((ip_str(conn.backup_ip), conn.backup_port), conn.key)

    @property
    def pending_count(self) -> int:
        return self.store.count() if self.store is not None else self._pending_count

    # -- fail-safe mode: NAT ----------------------------------------------------------------
    def translate(self, frame: bytes, p: Parsed, service: str, now: float) -> tuple[bytearray, bytes] | None:
        """`frame` rewritten towards its flow's backup, and that backup's IP (the caller fills in its MAC).

        None when no backup is available (the packet is dropped and counted).
        """
        key = flow_key(p.proto, p.src_ip, p.sport, p.dst_ip, p.dport)
        conn = self.conntrack.get(key)
        if conn is not None and conn.closing and p.proto == PROTO_TCP and p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN:
            self.reopen(conn)  # a new connection on a closing one's ports (as Linux conntrack re-opens one)
            conn = None
        if conn is None:
            backups = self.services.lookup(p.dst_ip, p.dport)
            choice = self.chooser([(ip_str(h), port) for h, port in backups], key, now) if backups else None
            if choice is None:
                self.stats.no_backup += 1
                return None
            conn = self.conntrack.create(service, p.proto, p.src_ip, p.sport, p.src_mac, p.dst_ip, p.dport,
                                         p.dst_mac, ip_bytes(choice[0]), choice[1], now, nic_ip=self.nic_ip)
            if conn is None:
                self.stats.no_backup += 1
                return None
            conn.relayed = p.src_ip in self.relay_sources
            if log.isEnabledFor(logging.DEBUG):
                log.debug("flow %s:%d -> %s:%d (%s) goes to backup %s:%d", ip_str(p.src_ip), p.sport,
                          ip_str(p.dst_ip), p.dport, service, choice[0], choice[1])
        self.conntrack.seen(conn, now, p.tcp_flags)
        if p.l3 == ETH_LEN and p.ihl == 20 and conn.to_backup is not None:
            out = apply_rewrite(frame, conn.to_backup, p.l4 + (16 if p.proto == PROTO_TCP else 6),
                                p.proto == PROTO_UDP)
        else:
            out = bytearray(frame)
            rewrite_l3l4(out, p.l3, p.l4, p.proto, self.nic_ip, conn.nat_port, conn.backup_ip, conn.backup_port)
        out[6:12] = self.nic_mac
        self.count_translated(conn)
        return out, conn.backup_ip

    def reopen(self, conn: Conn) -> None:
        """Forget closing `conn` for a client's new SYN on its ports: the new connection gets a new NAT port.

        Continuing it would keep it closing (its segments off the BPF fast path) and send the SYN to the
        backup on the old NAT port, where the backup may still hold the old connection (TIME-WAIT).
        """
        self.conntrack.remove(conn)
        self.stats.reopened += 1
        if self.release is not None:
            self.release((ip_str(conn.backup_ip), conn.backup_port), conn.key)

    def count_translated(self, conn: Conn) -> None:
        """Count one packet sent to `conn`'s backup."""
        self.stats.translated += 1
        per = self.stats.per_backup
        per[conn.backup_name] = per.get(conn.backup_name, 0) + 1
        if conn.relayed:
            self.stats.relayed += 1

    def translate_fast(self, frame: bytes, conn: Conn, l4_csum_at: int, udp: bool, flags: int,
                       now: float) -> bytearray:
        """A request of established flow `conn` rewritten towards its backup (source MAC set, not the destination)."""
        conn.last_seen = now
        if conn.replied:
            conn.assured = True
        if flags & (TCP_FIN | TCP_RST) and not udp:
            conn.closing = True
        out = apply_rewrite(frame, conn.to_backup, l4_csum_at, udp)  # type: ignore[arg-type]
        out[6:12] = self.nic_mac
        self.count_translated(conn)
        return out

    def reverse_fast(self, frame: bytes, conn: Conn, l4_csum_at: int, udp: bool, flags: int,
                     now: float) -> bytearray:
        """A backup's reply on `conn` rewritten to come from the service and go to the client."""
        conn.last_seen = now
        conn.replied = True
        if flags & (TCP_FIN | TCP_RST) and not udp:
            conn.closing = True
        self.stats.reversed += 1
        return apply_rewrite(frame, conn.to_client, l4_csum_at, udp)  # type: ignore[arg-type]

    def sticky(self, p: Parsed) -> bool:
        """True when `p` belongs to a TCP connection already moved to a backup (it stays there)."""
        if p.proto != PROTO_TCP:
            return False
        conn = self.conntrack.get(flow_key(p.proto, p.src_ip, p.sport, p.dst_ip, p.dport))
        return conn is not None and not conn.closing

    def reverse(self, frame: bytes, p: Parsed, now: float) -> bytearray | None:
        """A backup's reply to the NIC's address, rewritten to come from the service and go to the client."""
        if p.proto not in (PROTO_TCP, PROTO_UDP):
            return None
        conn = self.conntrack.by_nat(p.proto, p.dport)
        if conn is None or conn.backup_ip != p.src_ip or conn.backup_port != p.sport:
            self.stats.no_conn += 1
            return None
        self.conntrack.seen(conn, now, p.tcp_flags, reply=True)
        if p.l3 == ETH_LEN and p.ihl == 20 and conn.nic_ip == p.dst_ip and conn.to_client is not None:
            out = apply_rewrite(frame, conn.to_client, p.l4 + (16 if p.proto == PROTO_TCP else 6),
                                p.proto == PROTO_UDP)
        else:
            out = bytearray(frame)
            out[0:6] = conn.client_mac
            out[6:12] = conn.service_mac
            rewrite_l3l4(out, p.l3, p.l4, p.proto, conn.service_ip, conn.service_port, conn.client_ip,
                         conn.client_port)
        self.stats.reversed += 1
        return out

    def _dropped(self, conn: Conn) -> None:
        """Connection tracking dropped `conn` to make room: its backup choice is released."""
        if self.release is not None:
            self.release((ip_str(conn.backup_ip), conn.backup_port), conn.key)

    def _evict_oldest_flow(self, keep: bytes) -> None:
        for key in self._pending:
            if key == keep and len(self._pending) > 1:
                continue
            q = self._pending[key]
            q.popleft()
            self._pending_count -= 1
            self.stats.pending_evicted += 1
            if not q:
                del self._pending[key]
            return
