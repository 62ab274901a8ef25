"""The NIC's packet pipeline (Fig. 4 and 6): parser -> classifier -> queue/mirror -> fail-safe handler.

`Pipeline.process(frame, ingress, now)` takes one frame from port "host" (nic-h) or "net" (nic-n) and
returns what to send: a list of (port, frame) with port "host", "net" or "cpu" (frames addressed to
the NIC itself: heartbeat replies, discovery). Pure logic: no sockets, time passed in.

Rules, in order (each outcome is counted):
* Frames shorter than an Ethernet header: dropped ("truncated").
* 802.1Q/QinQ-tagged frames: forwarded unchanged, never classified ("vlan"); the NIC only
  protects untagged traffic, which is what the testbed's access links carry. (The kernel strips
  the tag on receive; the NIC loop puts it back from PACKET_AUXDATA before the pipeline sees the
  frame, unless the config's `vlan_passthrough` is off.)
* ARP: requests for the NIC's own IP are answered (from either side) and consumed; replies to the
  NIC teach it neighbours (backups' MACs) and are consumed; every ARP's sender is learnt; while the
  platform is in fail-safe, requests from the network for the host's IP are answered for it (so
  clients keep resolving the service address); all other ARP is forwarded.
* Non-IPv4 (IPv6, LLDP, garbage ethertypes): forwarded unchanged ("non_ip").
* IPv4 not addressed to a critical service or to the NIC: forwarded unchanged without further
  checks (the hot path: two slice compares and a dict lookup).
* Untagged, option-less, unfragmented TCP/UDP frames of critical flows take `fast`, which looks the
  flow up by raw header slices and builds no parse result: established NAT flows are rewritten with
  the connection's precomputed template (both directions), critical requests in normal mode are
  mirrored and forwarded, critical replies from the host mark their request answered. Anything
  else (new flows, unknown backup MAC, odd headers) falls through to the full parse below.
* IPv4 fragments (MF set or offset != 0): forwarded as non-critical ("fragment"): a non-first
  fragment carries no ports, so it cannot be classified, and NAT of fragments is not done.
* Critical-looking frames whose IPv4 header is bad (ihl < 5, total length longer than the frame or
  shorter than the header, truncated L4 header): dropped (counted under the parser's reason).
* Critical traffic from the network in normal mode: forwarded to the host and mirrored to the
  fail-safe handler; in fail-safe mode (or for a TCP connection already moved to a backup): NATed
  to the backup and sent out "net" (held while the backup's MAC is resolved by ARP).
* From the host: replies of critical services mark the flow's oldest pending request answered;
  frames to the NIC's IP go to "cpu".
* Passive failure evidence (`passive`, on by default): a TCP RST from a critical service's port
  answering a SYN the NIC holds pending, or an ICMP destination unreachable from the host about a
  pending request to a critical service, is not forwarded: `on_evidence` turns that service's
  fail-safe on at once, and its pending requests (that SYN included) go to a backup. Without it
  (or if the service cannot be failed over) the RST is forwarded and clears the pending SYN: the
  client has been refused and will not accept a SYN-ACK for it later.
* From the network to the NIC's IP: backup replies to a NAT port are reverse-NATed to the client;
  ICMP echo requests are answered; UDP to one of `net_cpu_ports` (discovery) goes to "cpu"; the
  rest is dropped ("net_to_nic"): heartbeat replies only count when they come from the host side.
* TCP connections carried over a failover (`carry`, a `tcp_carry.TcpCarry`, when the NIC's
  `carry_tcp` is on): the client's segments to a critical TCP service and the host's data/FIN
  segments skip `forward`'s shortcuts, so the client's unacknowledged bytes are kept; at failover each established connection is re-opened on
  a backup, and its segments both ways take the slow path through `carry` (sequence numbers shifted);
  the host's own segments on it (it may come back) are dropped ("carry_stale").
* Learnt ARP neighbours are bounded (`neighbours_max`); the oldest learnt entry that is neither
  static nor `pinned` (backups and peers) makes room, counted as "neighbour_evicted".
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from testbed.failsafe.classifier import Classifier
from testbed.failsafe.failsafe_handler import FailsafeHandler
from testbed.failsafe.packet import (ARP_REPLY, ARP_REQUEST, ETH_ARP, ETH_IPV4, ETH_QINQ, ETH_VLAN,
                                     PROTO_ICMP, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Parsed, arp_frame,
                                     checksum, ip_str, mac_str, parse, parse_arp)
from testbed.failsafe.conntrack import flow_key
from testbed.failsafe.tcp_carry import TcpCarry

log = logging.getLogger(__name__)

HOST, NET, CPU = "host", "net", "cpu"
OTHER = {HOST: NET, NET: HOST}
ARP_RETRY_S = 0.1
ARP_QUEUE = 256
ICMP_UNREACHABLE = 3
#: (service, reason, now) -> frames to send, or None when the service cannot be failed over
Evidence = Callable[[str, str, float], "list[tuple[str, bytes]] | None"]


@dataclass
class PortCounters:
    """Frames and bytes received and sent on one port."""

    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0


@dataclass
class ServiceCounters:
    """Traffic of one critical service: to the host, and redirected to backups."""

    packets: int = 0
    bytes: int = 0
    to_host: int = 0
    to_backup: int = 0
    from_backup: int = 0
    dropped: int = 0


@dataclass
class PipelineCounters:
    """All of the pipeline's counters."""

    ports: dict[str, PortCounters] = field(default_factory=lambda: {HOST: PortCounters(), NET: PortCounters(),
                                                                     CPU: PortCounters()})
    reasons: dict[str, int] = field(default_factory=dict)
    services: dict[str, ServiceCounters] = field(default_factory=dict)

    def note(self, reason: str) -> None:
        """Count one frame handled by rule `reason`."""
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


class Pipeline:
    """Classifies, forwards, mirrors and redirects the frames crossing the NIC."""

    def __init__(self, nic_ip: bytes, nic_mac: bytes, host_ip: bytes, host_mac: bytes | None,
                 classifier: Classifier, handler: FailsafeHandler,
                 neighbours: dict[bytes, bytes] | None = None, neighbours_max: int = 1024) -> None:
        self.nic_ip = nic_ip
        self.nic_mac = nic_mac
        self.host_ip = host_ip
        self.host_mac = host_mac
        self.classifier = classifier
        self.handler = handler
        self.neighbours: dict[bytes, bytes] = dict(neighbours or {})
        self.static = set(self.neighbours)
        self.neighbours_max = neighbours_max
        self.pinned: set[bytes] = set()  # learnt neighbours never evicted (backups, peers)
        self.passive = True
        self.on_evidence: Evidence | None = None
        self.net_cpu_ports: frozenset[int] = frozenset()
        self.failsafe: dict[str, bool] = {}
        self.platform_failsafe = False
        self.counters = PipelineCounters()
        self.carry: TcpCarry | None = None
        self._arp_wait: dict[bytes, deque[bytearray]] = {}
        self._arp_sent: dict[bytes, float] = {}
        self._rx = {p: c for p, c in self.counters.ports.items()}
        self._version = -1
        self._net_watch: frozenset[bytes] = frozenset()
        self._cls: dict[bytes, str] = {}

    # -- mode ---------------------------------------------------------------------------------
    def set_failsafe(self, service: str, active: bool, now: float) -> list[tuple[str, bytes]]:
        """Put `service` into (or out of) fail-safe mode; on activation its pending requests go to a backup."""
        was = self.failsafe.get(service, False)
        self.failsafe[service] = active
        if not active or was:
            return []
        out: list[tuple[str, bytes]] = []
        for frame in self.handler.take_pending(service, now):
            p = parse(frame)
            if p.error:
                continue
            self.handler.stats.resent += 1
            out += self._to_backup(frame, p, service, now)
        if out:
            log.info("service %s: %d pending requests re-sent to backups", service, len(out))
        if self.carry is not None:
            out += self._carry_start(service, now)
        return out

    def _carry_start(self, service: str, now: float) -> list[tuple[str, bytes]]:
        """Re-open `service`'s established TCP connections on backups (SYNs out "net"; RSTs for those that cannot be)."""
        assert self.carry is not None
        syns, resets = self.carry.start(service)
        out: list[tuple[str, bytes]] = [(NET, f) for f in resets]
        for key, syn in syns:
            out += self._to_backup(syn, parse(syn), service, now)
            rst = self.carry.attach(key, self.handler.conntrack.get(key), now)
            if rst is not None:
                out.append((NET, rst))
        if syns or resets:
            log.info("service %s: %d TCP connections re-opened on backups, %d reset", service, len(syns),
                     len(resets))
        return out

    def carry_timeouts(self, now: float) -> list[tuple[str, bytes]]:
        """RSTs for the clients of carries a backup did not answer in time (their NAT connections forgotten)."""
        if self.carry is None:
            return []
        out: list[tuple[str, bytes]] = []
        for _, conn, rst in self.carry.expire(now):
            self.handler.conntrack.remove(conn)
            out.append((NET, rst))
        for key in [k for k in self.carry.carried if self.handler.conntrack.get(k) is None]:
            self.carry.forget(key)
        return self._out(out)

    def in_failsafe(self, service: str) -> bool:
        """True when `service`'s traffic goes to backups."""
        return self.failsafe.get(service, False)

    # -- the data path ------------------------------------------------------------------------
    def forward(self, frame: bytes, ingress: str) -> bool:
        """The hot path: count `frame` and return True if it just goes out the other port unchanged."""
        c = self._rx[ingress]
        c.rx_packets += 1
        c.rx_bytes += len(frame)
        if self._version != self.classifier.table.version:
            self._refresh()
        if len(frame) < 34 or frame[12:14] != ETH_IPV4:
            return False
        if ingress == NET:
            dst = frame[30:34]
            if dst not in self._net_watch:
                return True
            if dst == self.nic_ip or frame[14] != 0x45 or frame[20] & 0x3F or frame[21]:
                return False
            sid = self._cls.get(dst + frame[23:24] + frame[36:38])
            if sid is None:
                return True
            # critical TCP in normal mode that is not a SYN: nothing to mirror, nothing to rewrite
            if (frame[23] == PROTO_TCP and len(frame) >= 54 and not frame[47] & TCP_SYN
                    and not self.failsafe.get(sid) and not len(self.handler.conntrack) and self.carry is None):
                sc = self.counters.services.get(sid)
                if sc is not None:
                    sc.packets += 1
                    sc.bytes += len(frame)
                    sc.to_host += 1
                    return True
            return False
        if frame[30:34] == self.nic_ip:
            return False
        src = frame[26:30]
        if src not in self._net_watch or frame[14] != 0x45 or frame[20] & 0x3F or frame[21]:
            return True
        if frame[23] == PROTO_TCP and len(frame) >= 54 and not frame[47] & (TCP_SYN | TCP_RST):
            # only SYNs are kept pending for TCP: nothing to mark answered (but `carry` follows data and FINs)
            if self.carry is None or not (frame[47] & TCP_FIN
                                          or ((frame[16] << 8) | frame[17]) > 20 + (frame[46] >> 4) * 4):
                return True
            return (src + frame[23:24] + frame[34:36]) not in self._cls
        if frame[23] == PROTO_ICMP:
            return len(frame) < 35 or frame[34] != ICMP_UNREACHABLE  # unreachables may be evidence
        return (src + frame[23:24] + frame[34:36]) not in self._cls

    def fast(self, frame: bytes, ingress: str, now: float) -> tuple[str, bytes] | None:
        """The one (port, frame) to send for a critical frame that needs no parsing, else None.

        Called after `forward` returned False (the frame is counted as received, not yet as sent);
        None means nothing was done or counted and the frame belongs to `process_slow`.
        """
        n = len(frame)
        if n < 42 or frame[12:14] != ETH_IPV4 or frame[14] != 0x45 or frame[20] & 0x3F or frame[21]:
            return None
        proto = frame[23]
        total = (frame[16] << 8) | frame[17]
        if total + 14 > n:
            return None
        if proto == PROTO_UDP:
            if total < 28:
                return None
            at, udp, flags = 40, True, 0
        elif proto == PROTO_TCP:
            doff = (frame[46] >> 4) * 4 if n >= 54 else 0
            if doff < 20 or doff + 20 > total:
                return None
            at, udp, flags = 50, False, frame[47]
        else:
            return None
        key = frame[23:24] + frame[26:38]
        handler = self.handler
        if ingress == NET:
            if frame[30:34] == self.nic_ip:
                conn = handler.conntrack.by_reply(key)
                if conn is None or (self.carry is not None and conn.key in self.carry.carried):
                    return None
                out = handler.reverse_fast(frame, conn, at, udp, flags, now)
                sc = self.counters.services.get(conn.service)
                if sc is not None:
                    sc.from_backup += 1
                self.counters.note("from_backup")
                return NET, out
            conn = handler.conntrack.by_key(key)
            if conn is not None:
                if self.carry is not None and key in self.carry.carried:
                    return None
                if not udp and conn.closing and flags & (TCP_SYN | TCP_ACK) == TCP_SYN:
                    return None  # a new connection on a closing one's ports: the slow path opens it afresh
                if not (self.failsafe.get(conn.service) or (not udp and not conn.closing)):
                    return None  # the service recovered: new decision on the slow path
                mac = self.neighbours.get(conn.backup_ip)
                sc = self.counters.services.get(conn.service)
                if mac is None or sc is None:
                    return None
                out = handler.translate_fast(frame, conn, at, udp, flags, now)
                out[0:6] = mac
                sc.packets += 1
                sc.bytes += n
                sc.to_backup += 1
                self.counters.note("to_backup")
                return NET, out
            sid = self._cls.get(frame[30:34] + frame[23:24] + frame[36:38])
            if sid is None or self.failsafe.get(sid):
                return None
            sc = self.counters.services.get(sid)
            if sc is None:
                return None
            if udp or flags & (TCP_SYN | TCP_ACK) == TCP_SYN:
                handler.mirror_key(key, frame, sid, now)
            if not udp and self.carry is not None:
                self.carry.client_segment(key, frame, 34, total + 14, sid, now)
            sc.packets += 1
            sc.bytes += n
            sc.to_host += 1
            self.counters.note("critical")
            return HOST, frame
        if frame[30:34] == self.nic_ip:
            return None
        if self._cls.get(frame[26:30] + frame[23:24] + frame[34:36]) is None:
            return None
        if not udp and flags & TCP_RST:
            return None  # maybe failure evidence: the slow path decides
        rkey = frame[23:24] + frame[30:34] + frame[26:30] + frame[36:38] + frame[34:36]
        if not udp and self.carry is not None:
            if rkey in self.carry.carried:
                return None  # the host's segment of a connection now on a backup: the slow path drops it
            self.carry.host_segment(rkey, frame, 34, total + 14, now)
            if not flags & TCP_SYN:
                self.counters.note("reply")
                return NET, frame
        handler.answered_key(rkey)
        self.counters.note("reply")
        return NET, frame

    def process(self, frame: bytes, ingress: str, now: float) -> list[tuple[str, bytes]]:
        """Everything to send because `frame` arrived on `ingress` ("host" or "net") at `now`."""
        if self.forward(frame, ingress):
            return self._out([(OTHER[ingress], frame)])
        try:
            done = self.fast(frame, ingress, now)
        except Exception:  # noqa: BLE001 - one bad frame must never stop the NIC
            log.exception("fast path error on a %d-byte frame from %s", len(frame), ingress)
            self.counters.note("error")
            return []
        if done is not None:
            return self._out([done])
        return self.process_slow(frame, ingress, now)

    def process_slow(self, frame: bytes, ingress: str, now: float) -> list[tuple[str, bytes]]:
        """`process` for a frame `forward` did not take (already counted as received)."""
        try:
            return self._out(self._slow(frame, ingress, now))
        except Exception:  # noqa: BLE001 - one bad frame must never stop the NIC
            log.exception("pipeline error on a %d-byte frame from %s", len(frame), ingress)
            self.counters.note("error")
            return []

    def sent(self, port: str, nbytes: int) -> None:
        """Count a frame sent on `port` (for frames the NIC loop forwards itself)."""
        c = self.counters.ports[port]
        c.tx_packets += 1
        c.tx_bytes += nbytes

    def _out(self, out: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        for port, f in out:
            self.sent(port, len(f))
        return out

    def _slow(self, frame: bytes, ingress: str, now: float) -> list[tuple[str, bytes]]:
        note = self.counters.note
        other = OTHER[ingress]
        if len(frame) < 14:
            note("truncated")
            return []
        etype = frame[12:14]
        if etype in (ETH_VLAN, ETH_QINQ):
            note("vlan")
            return [(other, frame)]
        if etype == ETH_ARP:
            return self._arp(frame, ingress, now)
        if etype != ETH_IPV4:
            note("non_ip")
            return [(other, frame)]
        p = parse(frame)
        if p.error:
            note(p.error)
            if p.error in ("truncated_ip", "bad_ihl", "bad_total_length"):
                return []
            if p.dst_ip == self.nic_ip:
                return []
        if p.is_fragment:
            note("fragment")
            return [(other, frame)]
        if ingress == NET:
            if p.dst_ip == self.nic_ip:
                return self._to_nic(frame, p, now)
            if p.error:
                return []
            sid = self._cls.get(p.dst_ip + bytes((p.proto,)) + struct.pack("!H", p.dport))
            if sid is None:
                note("forward")
                return [(HOST, frame)]
            return self._critical(frame, p, sid, now)
        # from the host
        if p.dst_ip == self.nic_ip:
            if p.src_ip == self.host_ip and self.host_mac is None:
                self.host_mac = p.src_mac
            note("to_cpu")
            return [(CPU, frame)]
        if p.error:
            return [(NET, frame)]
        if p.proto == PROTO_ICMP and p.icmp_type == ICMP_UNREACHABLE:
            return self._unreachable(frame, p, now)
        sid = self._cls.get(p.src_ip + bytes((p.proto,)) + struct.pack("!H", p.sport))
        if sid is not None:
            if p.proto == PROTO_TCP and self.carry is not None:
                ckey = flow_key(PROTO_TCP, p.dst_ip, p.dport, p.src_ip, p.sport)
                if ckey in self.carry.carried:
                    note("carry_stale")  # the connection is the backup's now: the host's segments would corrupt it
                    return []
                self.carry.host_segment(ckey, frame, p.l4, p.end, now)
            if p.proto == PROTO_TCP and p.tcp_flags & TCP_RST:
                key = flow_key(PROTO_TCP, p.dst_ip, p.dport, p.src_ip, p.sport)
                return self._refused(frame, key, sid, "rst", f"RST from port {p.sport} to a pending SYN", now)
            self.handler.answered(p)
            note("reply")
        return [(NET, frame)]

    def _refused(self, frame: bytes, key: bytes, sid: str, kind: str, what: str,
                 now: float) -> list[tuple[str, bytes]]:
        """The host refused pending request flow `key` of `sid`: evidence (frame dropped) or forwarded."""
        if not self.handler.has_pending(key) or self.failsafe.get(sid):
            self.counters.note("reply")
            return [(NET, frame)]
        if self.passive and self.on_evidence is not None:
            out = self.on_evidence(sid, f"passive: {what}", now)
            if out is not None:
                self.counters.note(f"passive_{kind}")
                return out
        self.handler.clear_pending(key)
        self.counters.note(f"refused_{kind}")
        return [(NET, frame)]

    def _unreachable(self, frame: bytes, p: Parsed, now: float) -> list[tuple[str, bytes]]:
        """An ICMP destination unreachable from the host: evidence if it is about a pending critical request."""
        inner = p.l4 + 8
        if p.end - inner < 28 or frame[inner] >> 4 != 4:
            return [(NET, frame)]
        ihl = (frame[inner] & 0x0F) * 4
        l4 = inner + ihl
        if ihl < 20 or p.end - l4 < 4 or frame[inner + 16:inner + 20] != p.src_ip:
            return [(NET, frame)]
        proto = frame[inner + 9]
        sport, dport = struct.unpack_from("!HH", frame, l4)
        sid = self._cls.get(p.src_ip + bytes((proto,)) + struct.pack("!H", dport))
        if sid is None:
            self.counters.note("forward")
            return [(NET, frame)]
        key = flow_key(proto, bytes(frame[inner + 12:inner + 16]), sport, p.src_ip, dport)
        return self._refused(frame, key, sid, "icmp", f"ICMP unreachable (code {frame[p.l4 + 1]}) for port {dport}",
                             now)

    def _critical(self, frame: bytes, p: Parsed, sid: str, now: float) -> list[tuple[str, bytes]]:
        sc = self.counters.services.get(sid)
        if sc is None:
            sc = self.counters.services[sid] = ServiceCounters()
        sc.packets += 1
        sc.bytes += len(frame)
        key = flow_key(p.proto, p.src_ip, p.sport, p.dst_ip, p.dport)
        if self.carry is not None and key in self.carry.carried:
            out = self.carry_client(frame, p, sid, now)
            if out:
                sc.to_backup += 1
            return out
        if self.failsafe.get(sid) or self.handler.sticky(p):
            out = self._to_backup(frame, p, sid, now)
            if out:
                sc.to_backup += 1
            else:
                sc.dropped += 1
            return out
        self.handler.mirror(frame, p, sid, now)
        if p.proto == PROTO_TCP and self.carry is not None:
            self.carry.client_segment(key, frame, p.l4, p.end, sid, now)
        sc.to_host += 1
        self.counters.note("critical")
        return [(HOST, frame)]

    def carry_client(self, frame: bytes, p: Parsed, sid: str, now: float) -> list[tuple[str, bytes]]:
        """A client's segment of a connection carried to a backup: held until it is open, then shifted and NATed."""
        assert self.carry is not None
        out = self.carry.from_client(frame, p.l4, p.end, now, flow_key(p.proto, p.src_ip, p.sport, p.dst_ip, p.dport))
        if out is None:
            self.counters.note("carry_held")
            return []
        return self._to_backup(out, p, sid, now)

    def _carry_backup(self, frame: bytes, p: Parsed, now: float) -> list[tuple[str, bytes]] | None:
        """A backup's segment on a carried connection (None: not one); its SYN-ACK is answered here."""
        conn = self.handler.conntrack.by_nat(p.proto, p.dport)
        if (self.carry is None or conn is None or conn.key not in self.carry.carried or conn.backup_ip != p.src_ip
                or conn.backup_port != p.sport):
            return None
        seg, to_backup = self.carry.from_backup(frame, p.l4, p.end, p.src_mac, conn.key, self.nic_mac)
        out = [(NET, f) for f in to_backup]
        if conn.key not in self.carry.carried:  # the backup refused: the client gets a RST
            self.handler.conntrack.remove(conn)
            self.counters.note("carry_failed")
            return out
        if seg is None:
            self.counters.note("carry_open")
            return out
        rev = self.handler.reverse(seg, p, now)
        if rev is not None:
            sc = self.counters.services.get(conn.service)
            if sc is not None:
                sc.from_backup += 1
            self.counters.note("from_backup")
            out.append((NET, bytes(rev)))
        return out

    def _to_backup(self, frame: bytes, p: Parsed, sid: str, now: float) -> list[tuple[str, bytes]]:
        done = self.handler.translate(frame, p, sid, now)
        if done is None:
            self.counters.note("no_backup")
            return []
        out, backup_ip = done
        mac = self.neighbours.get(backup_ip)
        if mac is not None:
            out[0:6] = mac
            self.counters.note("to_backup")
            return [(NET, bytes(out))]
        q = self._arp_wait.setdefault(backup_ip, deque(maxlen=ARP_QUEUE))
        q.append(out)
        self.counters.note("arp_wait")
        return self._arp_request(backup_ip, NET, now)

    def _to_nic(self, frame: bytes, p: Parsed, now: float) -> list[tuple[str, bytes]]:
        if p.proto in (PROTO_UDP, PROTO_TCP):
            lo, hi = self.handler.conntrack.ports
            if lo <= p.dport <= hi:
                carried = self._carry_backup(frame, p, now) if p.proto == PROTO_TCP else None
                if carried is not None:
                    return carried
                out = self.handler.reverse(frame, p, now)
                if out is None:
                    self.counters.note("nat_miss")
                    return []
                sc = self.counters.services.get(self.handler.conntrack.by_nat(p.proto, p.dport).service)  # type: ignore[union-attr]
                if sc is not None:
                    sc.from_backup += 1
                self.counters.note("from_backup")
                return [(NET, bytes(out))]
        elif p.proto == PROTO_ICMP and p.icmp_type == 8:
            self.counters.note("ping")
            return [(NET, self._echo_reply(frame, p))]
        if p.proto == PROTO_UDP and p.dport in self.net_cpu_ports:
            self.counters.note("to_cpu")
            return [(CPU, frame)]
        self.counters.note("net_to_nic")
        return []

    def _echo_reply(self, frame: bytes, p: Parsed) -> bytes:
        out = bytearray(frame[:p.end])
        out[0:6], out[6:12] = frame[6:12], self.nic_mac
        out[p.l3 + 12:p.l3 + 16], out[p.l3 + 16:p.l3 + 20] = p.dst_ip, p.src_ip
        out[p.l3 + 8] = 64
        out[p.l3 + 10:p.l3 + 12] = b"\x00\x00"
        out[p.l3 + 10:p.l3 + 12] = checksum(out[p.l3:p.l4]).to_bytes(2, "big")
        out[p.l4] = 0
        out[p.l4 + 2:p.l4 + 4] = b"\x00\x00"
        out[p.l4 + 2:p.l4 + 4] = checksum(out[p.l4:p.end]).to_bytes(2, "big")
        return bytes(out)

    # -- ARP ----------------------------------------------------------------------------------
    def _arp(self, frame: bytes, ingress: str, now: float) -> list[tuple[str, bytes]]:
        a = parse_arp(frame)
        if a is None:
            self.counters.note("bad_arp")
            return [(OTHER[ingress], frame)]
        if a.spa != b"\x00\x00\x00\x00" and a.spa != self.nic_ip:
            if a.spa == self.host_ip:
                if ingress == HOST:
                    self.host_mac = a.sha
            elif a.spa not in self.static:
                self.learn_neighbour(a.spa, a.sha)
        out: list[tuple[str, bytes]] = []
        if a.tpa == self.nic_ip:
            if a.op == ARP_REQUEST:
                self.counters.note("arp_answered")
                return [(ingress, arp_frame(ARP_REPLY, self.nic_mac, self.nic_ip, a.sha, a.spa))]
            self.counters.note("arp_learnt")
            return self._flush_arp(a.spa)
        if (a.op == ARP_REQUEST and ingress == NET and a.tpa == self.host_ip and self.platform_failsafe
                and self.host_mac is not None):
            self.counters.note("arp_proxy")
            out.append((NET, arp_frame(ARP_REPLY, self.host_mac, self.host_ip, a.sha, a.spa)))
        self.counters.note("arp_forward")
        out.append((OTHER[ingress], frame))
        if a.spa in self._arp_wait:
            out += self._flush_arp(a.spa)
        return out

    def learn_neighbour(self, ip: bytes, mac: bytes) -> None:
        """Remember `ip` at `mac`; when the table is full the oldest evictable learnt entry goes."""
        table = self.neighbours
        if ip not in table and len(table) >= self.neighbours_max:
            victim = next((k for k in table if k not in self.static and k not in self.pinned), None)
            if victim is None:
                self.counters.note("neighbour_refused")
                return
            del table[victim]
            self.counters.note("neighbour_evicted")
        table[ip] = mac

    def _flush_arp(self, ip: bytes) -> list[tuple[str, bytes]]:
        mac = self.neighbours.get(ip)
        q = self._arp_wait.pop(ip, None)
        if not q or mac is None:
            return []
        out: list[tuple[str, bytes]] = []
        for f in q:
            f[0:6] = mac
            out.append((NET, bytes(f)))
        log.info("resolved %s at %s: %d held frames sent", ip_str(ip), mac_str(mac), len(out))
        return out

    def _arp_request(self, ip: bytes, port: str, now: float) -> list[tuple[str, bytes]]:
        last = self._arp_sent.get(ip)
        if last is not None and now - last < ARP_RETRY_S:
            return []
        self._arp_sent[ip] = now
        self.counters.note("arp_request")
        return [(port, arp_frame(ARP_REQUEST, self.nic_mac, self.nic_ip, b"\x00" * 6, ip))]

    def resolve(self, ips: set[bytes], now: float) -> list[tuple[str, bytes]]:
        """ARP requests for backups (out "net") and the host (out "host") whose MACs are not known yet."""
        out: list[tuple[str, bytes]] = []
        for ip in sorted(ips):
            if ip not in self.neighbours:
                out += self._arp_request(ip, NET, now)
        if self.host_mac is None:
            out += self._arp_request(self.host_ip, HOST, now)
        return self._out(out)

    # -- internals ----------------------------------------------------------------------------
    def _refresh(self) -> None:
        self.classifier.lookup(b"")  # rebuilds the classifier's fast dict
        self._cls = self.classifier._keys  # noqa: SLF001 - shared read-only view for the hot path
        self._net_watch = self.classifier.ips | {self.nic_ip}
        self._version = self.classifier.table.version


__all__ = ["CPU", "HOST", "NET", "Pipeline", "PipelineCounters", "ServiceCounters", "PROTO_ICMP"]
