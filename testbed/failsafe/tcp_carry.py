"""TCP connections carried over a failover: the client's unacknowledged bytes kept, the connection re-opened on a backup.

In normal mode the NIC follows every client connection to a critical TCP port (`client_segment`,
`host_segment`): the client's options from its SYN, the host's window scale from its SYN-ACK, the
host's next sequence number, and the client's bytes the host has not acknowledged yet (`Stream.data`).
Only the host's segments that carry data (or SYN/FIN/RST) count as acknowledgements: a request the
host acknowledged but never answered is re-sent to the backup. A gap in what the NIC saw makes the
stream not carriable until the host acknowledges everything. A bulk transfer is not request/response:
when the client's unacknowledged bytes exceed `max_bytes`, or the host sends more than that without
the client sending anything, the connection is no longer followed (`bulk`: the BPF data path stops
copying its segments) and at failover it goes to the backup as before, which resets it (counted in
`carry_failed`). When the service fails over, `start` gives, per established stream, a SYN
to send to a backup as if from the client (the pipeline NATs it like any fail-safe flow: from the
NIC's address and a NAT port). Its sequence number is the first unacknowledged client byte minus one,
so the client's sequence numbers reach the backup unchanged. The backup's SYN-ACK is consumed
(`from_backup`): the NIC acknowledges it and re-sends the unacknowledged bytes; from then on the
backup's sequence numbers are shifted by `Carried.delta` (its ISN + 1 minus the host's next sequence
number) towards the client, the client's acknowledgements the other way, and the backup's windows are
re-scaled if its window scale differs from the host's. The SYN offers no SACK or timestamps, so
neither has to be translated (the backup ignores the client's, and the client accepts segments without them).
A backup that refuses (RST) or does not answer within `timeout_s` gets the client a RST from the
service, as the connection would have had anyway (`carry_failed`); carried ones count as `carried`.

Pure logic over frames: time is passed in; the pipeline routes the frames it returns.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from testbed.failsafe.conntrack import Conn
from testbed.failsafe.packet import (PROTO_TCP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, csum_update,
                                     ipv4_frame, tcp)

MOD = 1 << 32
SEGMENT_MAX = 1400  # re-sent bytes per segment (below any MSS on the testbed's links)


def seq_diff(a: int, b: int) -> int:
    """a - b in sequence space (negative when a is before b)."""
    return (a - b + (1 << 31)) % MOD - (1 << 31)


def tcp_options(frame: bytes, l4: int) -> dict[int, bytes]:
    """The TCP options of the segment at `l4` (kind -> value), stopping at the first malformed one."""
    doff = (frame[l4 + 12] >> 4) * 4
    out: dict[int, bytes] = {}
    i, end = l4 + 20, min(l4 + doff, len(frame))
    while i < end:
        kind = frame[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= end or frame[i + 1] < 2 or i + frame[i + 1] > end:
            break
        out[kind] = bytes(frame[i + 2:i + frame[i + 1]])
        i += frame[i + 1]
    return out


def patch(frame: bytearray, l4: int, at: int, new: bytes) -> None:
    """Replace the 16-bit-aligned TCP header bytes at `l4 + at` with `new`, updating the checksum (RFC 1624)."""
    old = bytes(frame[l4 + at:l4 + at + len(new)])
    frame[l4 + at:l4 + at + len(new)] = new
    c = (frame[l4 + 16] << 8) | frame[l4 + 17]
    frame[l4 + 16:l4 + 18] = csum_update(c, old, new).to_bytes(2, "big")


@dataclass(slots=True)
class Stream:
    """A client connection to a critical TCP port as the NIC saw it in normal mode."""

    service: str
    client_ip: bytes
    client_port: int
    client_mac: bytes
    service_ip: bytes
    service_port: int
    service_mac: bytes
    una: int  # the first client byte the host has not acknowledged
    mss: int = 0  # the client's MSS option (0: none)
    wscale: int | None = None  # the client's window scale option
    host_wscale: int | None = None
    host_next: int | None = None  # the host's next sequence number (None: no SYN-ACK seen)
    window: int = 65535  # the client's last advertised window (raw field)
    host_run: int = 0  # bytes the host sent since the client last sent data
    data: bytearray = field(default_factory=bytearray)  # client bytes from `una` on
    end: int = 0  # the client's next sequence number
    broken: str = ""  # why the stream cannot be carried now ("gap", "overflow"; "" when it can)
    last: float = 0.0


@dataclass(slots=True)
class Carried:
    """A stream being re-opened, or re-opened, on a backup through NAT connection `conn`."""

    stream: Stream
    conn: Conn
    started: float
    established: bool = False
    delta: int = 0  # backup sequence number - host sequence number
    backup_wscale: int | None = None


class TcpCarry:
    """Follows client connections to critical TCP ports and carries them to a backup at failover."""

    def __init__(self, stats, max_bytes: int = 65536, max_streams: int = 4096, timeout_s: float = 1.0,
                 idle_s: float = 300.0) -> None:
        self.stats = stats  # the handler's HandlerStats: carried, carry_failed, carry_untracked
        self.max_bytes = max_bytes
        self.max_streams = max_streams
        self.timeout_s = timeout_s
        self.idle_s = idle_s
        self.streams: dict[bytes, Stream] = {}  # flow key (conntrack.flow_key) -> stream
        self.carried: dict[bytes, Carried] = {}
        self.bulk: dict[bytes, tuple[str, float]] = {}  # flow key -> (service, since): bulk transfers, not followed

    # -- normal mode ------------------------------------------------------------------------------
    def client_segment(self, key: bytes, frame: bytes, l4: int, end: int, service: str, now: float) -> None:
        """A client's segment forwarded to the host (untagged IPv4; `l4`: TCP header, `end`: datagram end)."""
        seq, flags = struct.unpack_from("!I", frame, l4 + 4)[0], frame[l4 + 13]
        s = self.streams.get(key)
        if flags & (TCP_RST | TCP_FIN) and key in self.bulk:
            del self.bulk[key]  # a bulk transfer that ends is no carry failure at a later failover
            return
        if flags & TCP_SYN:
            if flags & TCP_ACK or (s is not None and s.una == (seq + 1) % MOD):
                return
            self.bulk.pop(key, None)
            if s is None and len(self.streams) >= self.max_streams:
                self.stats.carry_untracked += 1
                return
            opts = tcp_options(frame, l4)
            mss = opts.get(2, b"")
            ws = opts.get(3, b"")
            self.streams[key] = Stream(service, bytes(frame[26:30]), int.from_bytes(frame[l4:l4 + 2], "big"),
                                       bytes(frame[6:12]), bytes(frame[30:34]),
                                       int.from_bytes(frame[l4 + 2:l4 + 4], "big"), bytes(frame[0:6]),
                                       una=(seq + 1) % MOD, mss=int.from_bytes(mss, "big") if len(mss) == 2 else 0,
                                       wscale=ws[0] if len(ws) == 1 else None, end=(seq + 1) % MOD, last=now)
            return
        if s is None:
            return
        if flags & (TCP_RST | TCP_FIN):
            del self.streams[key]  # closing: not carried (reset as before if it is still open at failover)
            return
        s.last = now
        if end <= l4 + (frame[l4 + 12] >> 4) * 4:
            return
        s.window = int.from_bytes(frame[l4 + 14:l4 + 16], "big")
        s.host_run = 0
        self.add(s, seq, frame[l4 + (frame[l4 + 12] >> 4) * 4:end])
        if len(s.data) > self.max_bytes:
            self.to_bulk(key, now)

    def to_bulk(self, key: bytes, now: float) -> None:
        """Stop following flow `key`: a bulk transfer (it will not be carried)."""
        s = self.streams.pop(key)
        self.bulk[key] = (s.service, now)

    def add(self, s: Stream, seq: int, payload: bytes) -> None:
        """Keep the client's bytes `payload` at `seq` (in order; a gap marks the stream broken)."""
        if not payload:
            return
        off = seq_diff(seq, s.end)
        if off > 0:
            s.broken, s.data = "gap", bytearray()
        elif -off < len(payload):
            if not s.broken:
                s.data += payload[-off:]
        else:
            return
        s.end = (seq + len(payload)) % MOD

    def host_segment(self, key: bytes, frame: bytes, l4: int, end: int, now: float) -> None:
        """A host's segment to the client of flow `key`: its acknowledgement and sequence numbers."""
        s = self.streams.get(key)
        if s is None:
            if frame[l4 + 13] & (TCP_RST | TCP_FIN):
                self.bulk.pop(key, None)
            return
        seq, ack = struct.unpack_from("!II", frame, l4 + 4)
        flags = frame[l4 + 13]
        if flags & (TCP_RST | TCP_FIN):
            del self.streams[key]
            return
        if flags & TCP_SYN:
            if flags & TCP_ACK:
                ws = tcp_options(frame, l4).get(3, b"")
                s.host_wscale = ws[0] if len(ws) == 1 else None
                s.host_next = (seq + 1) % MOD
            return
        n = end - l4 - (frame[l4 + 12] >> 4) * 4
        if s.host_next is None or n <= 0:
            return  # pure ACKs do not count: an acknowledged request may still be unanswered
        s.last = now
        nxt = (seq + n) % MOD
        if seq_diff(nxt, s.host_next) > 0:
            s.host_next = nxt
        s.host_run += n
        if s.host_run > self.max_bytes:
            self.to_bulk(key, now)
            return
        if flags & TCP_ACK and seq_diff(ack, s.una) > 0:
            n = seq_diff(ack, s.una)
            s.una = ack
            if seq_diff(ack, s.end) >= 0:
                s.data, s.end, s.broken = bytearray(), ack, ""
            elif not s.broken:
                del s.data[:n]

    # -- failover ---------------------------------------------------------------------------------
    def start(self, service: str) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
        """At `service`'s failover: (flow key, SYN to send to a backup) per carriable stream, and RSTs for the client of the others."""
        syns: list[tuple[bytes, bytes]] = []
        resets: list[bytes] = []
        for key in [k for k, (sid, _) in self.bulk.items() if sid == service]:
            del self.bulk[key]
            self.stats.carry_failed += 1  # goes to the backup as before, which resets it
        for key, s in list(self.streams.items()):
            if s.service != service or key in self.carried:
                continue
            if s.host_next is None or s.broken:
                del self.streams[key]
                if s.broken:  # (never accepted: its SYN is a pending request, replayed as such)
                    self.stats.carry_failed += 1
                    resets.append(self.reset(s))
                continue
            opts = (b"\x02\x04" + s.mss.to_bytes(2, "big") if s.mss else b"") + \
                (b"\x01\x03\x03" + bytes((s.wscale,)) if s.wscale is not None else b"")
            seg = tcp(s.client_ip, s.service_ip, s.client_port, s.service_port, (s.una - 1) % MOD, 0, TCP_SYN,
                      window=s.window, options=opts + b"\x00" * (-len(opts) % 4))
            syns.append((key, ipv4_frame(s.service_mac, s.client_mac, s.client_ip, s.service_ip, PROTO_TCP, seg)))
        return syns, resets

    def attach(self, key: bytes, conn: Conn | None, now: float) -> bytes | None:
        """The SYN of stream `key` went to a backup through `conn`; None, or the client's RST when it could not."""
        s = self.streams.pop(key)
        if conn is None:
            self.stats.carry_failed += 1
            return self.reset(s)
        self.carried[key] = Carried(s, conn, now)
        return None

    def from_client(self, frame: bytes, l4: int, end: int, now: float, key: bytes) -> bytearray | None:
        """A client's segment of carried flow `key`, its acknowledgement shifted for the backup; None: held or dropped."""
        c = self.carried[key]
        s = c.stream
        flags = frame[l4 + 13]
        if not c.established:
            payload = frame[l4 + (frame[l4 + 12] >> 4) * 4:end]
            if flags & TCP_RST:
                self.carried.pop(key)
            elif len(s.data) + len(payload) <= self.max_bytes:  # (more: the client sends it again later)
                self.add(s, struct.unpack_from("!I", frame, l4 + 4)[0], payload)
            return None
        out = bytearray(frame)
        if flags & TCP_ACK:
            ack = struct.unpack_from("!I", frame, l4 + 8)[0]
            patch(out, l4, 8, ((ack + c.delta) % MOD).to_bytes(4, "big"))
        return out

    def from_backup(self, frame: bytes, l4: int, end: int, src_mac: bytes, key: bytes,
                    nic_mac: bytes) -> tuple[bytearray | None, list[bytes]]:
        """A backup's segment on carried flow `key`: (segment for the client before reverse NAT, or None; frames to the backup)."""
        c = self.carried[key]
        s, conn = c.stream, c.conn
        seq, ack = struct.unpack_from("!II", frame, l4 + 4)
        flags = frame[l4 + 13]
        if not c.established:
            if flags & TCP_RST or not flags & TCP_SYN or not flags & TCP_ACK or ack != s.una:
                if flags & TCP_RST:
                    return None, self.fail(key)
                return None, []
            assert s.host_next is not None
            c.established = True
            c.delta = seq_diff((seq + 1) % MOD, s.host_next) % MOD
            opts = tcp_options(frame, l4)
            ws = opts.get(3, b"")
            c.backup_wscale = ws[0] if len(ws) == 1 else None
            mss = int.from_bytes(opts[2], "big") if len(opts.get(2, b"")) == 2 else SEGMENT_MAX
            self.stats.carried += 1
            return None, self._resend(c, src_mac, nic_mac, (seq + 1) % MOD, min(mss, SEGMENT_MAX))
        if flags & TCP_SYN:
            return None, []  # a repeated SYN-ACK: our ACK follows with the client's next segment
        out = bytearray(frame)
        patch(out, l4, 4, ((seq - c.delta) % MOD).to_bytes(4, "big"))
        hws, bws = s.host_wscale or 0, c.backup_wscale or 0
        if hws != bws:
            win = int.from_bytes(frame[l4 + 14:l4 + 16], "big")
            patch(out, l4, 14, min(0xFFFF, (win << bws) >> hws).to_bytes(2, "big"))
        return out, []

    def _resend(self, c: Carried, mac: bytes, nic_mac: bytes, ack: int, mss: int) -> list[bytes]:
        """The ACK of the backup's SYN-ACK and the client's unacknowledged bytes, from the NIC's NAT port."""
        s, conn = c.stream, c.conn
        out: list[bytes] = []
        data = bytes(s.data)
        seq = s.una
        chunks = [data[i:i + mss] for i in range(0, len(data), mss)] or [b""]
        for chunk in chunks:
            seg = tcp(conn.nic_ip, conn.backup_ip, conn.nat_port, conn.backup_port, seq, ack,
                      TCP_ACK | (TCP_PSH if chunk else 0), chunk, window=s.window)
            out.append(ipv4_frame(mac, nic_mac, conn.nic_ip, conn.backup_ip, PROTO_TCP, seg))
            seq = (seq + len(chunk)) % MOD
        s.data = bytearray()
        return out

    def fail(self, key: bytes) -> list[bytes]:
        """Give up carrying flow `key`: counted; the RST the client gets (the caller forgets the NAT connection)."""
        c = self.carried.pop(key)
        self.stats.carry_failed += 1
        return [self.reset(c.stream)]

    def expire(self, now: float) -> list[tuple[bytes, Conn, bytes]]:
        """(flow key, conn, client RST) of carries the backup did not answer within `timeout_s`; idle streams forgotten."""
        out = []
        for key, c in list(self.carried.items()):
            if not c.established and now - c.started > self.timeout_s:
                out.append((key, c.conn, self.fail(key)[0]))
        for key in [k for k, s in self.streams.items() if now - s.last > self.idle_s]:
            del self.streams[key]
        for key in [k for k, (_, since) in self.bulk.items() if now - since > self.idle_s]:
            del self.bulk[key]
        return out

    def forget(self, key: bytes) -> None:
        """Connection tracking no longer has flow `key` (expired or closed)."""
        self.carried.pop(key, None)

    @staticmethod
    def reset(s: Stream) -> bytes:
        """A RST from the service to the client of `s`, at the sequence number the client expects."""
        seq = s.host_next if s.host_next is not None else 0
        seg = tcp(s.service_ip, s.client_ip, s.service_port, s.client_port, seq, s.end, TCP_RST | TCP_ACK, window=0)
        return ipv4_frame(s.client_mac, s.service_mac, s.service_ip, s.client_ip, PROTO_TCP, seg)
