#!/usr/bin/env python3
"""Prober: numbered UDP or TCP requests at a fixed rate, one CSV line per request once settled.

Output (stdout, flushed per line): a header ``seq,send_time,reply_time,rtt_ms,answered_by``,
then one line per request as soon as it is answered or timed out (reply fields empty when
lost); times are wall-clock seconds (time.time()), the RTT is measured on the monotonic
clock. After each send a progress line ``# sent N`` is printed so a runner can trigger
faults at request N. Requests are numbered from 1 and sent on an absolute schedule
(start + (N-1)/rate), so pacing does not drift. UDP uses one socket; TCP opens one
connection per request (so new requests can reach a backup after a failover), or with
``--persistent`` sends every request over ONE connection, as a long-lived control loop would
(``# reset 0`` after the header says so): when that connection is reset or closed,
``# reset N`` is printed (N resets so far), the requests
pending on it settle as lost when they time out, and the next request opens a new connection.
A request is ``REQ <seq> <send_ns>\\n``; the echo service answers ``REQ <seq> <send_ns> @<node>``.
A reply's time is when the kernel received it (SO_TIMESTAMPNS), not when this loop read it, and
replies already received settle before any request times out: a prober that a loaded machine
delays neither counts answered UDP requests as lost nor adds its own delay to their RTT (a TCP
request's bytes leave when this loop writes them, so a stall before that is in its RTT).
"""

from __future__ import annotations

import argparse
import errno
import heapq
import selectors
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

HEADER = "seq,send_time,reply_time,rtt_ms,answered_by"
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; the control message has the same number
TIMESPEC = struct.Struct("@qq")


@dataclass
class Pending:
    """A request sent and not yet settled."""

    seq: int
    send_wall: float
    send_mono: float
    deadline: float
    sock: socket.socket | None = None  # TCP only: the request's own connection
    buf: bytearray = field(default_factory=bytearray)
    written: bool = False


def parse_reply(data: bytes) -> tuple[int, str] | None:
    """(seq, answering node) from a reply line, or None if it is not a reply to a prober request."""
    parts = data.strip().split()
    if len(parts) < 4 or parts[0] != b"REQ" or not parts[3].startswith(b"@"):
        return None
    try:
        return int(parts[1]), parts[3][1:].decode(errors="replace")
    except ValueError:
        return None


def stamped(sock: socket.socket) -> socket.socket:
    """`sock` with kernel receive timestamps on (where the kernel gives them)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        pass
    return sock


def recv_stamped(sock: socket.socket, size: int) -> tuple[bytes, float | None]:
    """Data from `sock` and the wall-clock time the kernel received it (None when it did not say)."""
    data, ancdata, _flags, _addr = sock.recvmsg(size, socket.CMSG_SPACE(TIMESPEC.size))
    for level, kind, raw in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= TIMESPEC.size:
            sec, nsec = TIMESPEC.unpack_from(raw)
            return data, sec + nsec / 1e9
    return data, None


def csv_line(p: Pending, reply_wall: float | None, reply_mono: float | None, node: str) -> str:
    """The CSV line of a settled request (empty reply fields when lost)."""
    if reply_wall is None or reply_mono is None:
        return f"{p.seq},{p.send_wall:.6f},,,"
    rtt = (reply_mono - p.send_mono) * 1000.0
    return f"{p.seq},{p.send_wall:.6f},{reply_wall:.6f},{rtt:.3f},{node}"


class Prober:
    """Sends the requests on schedule and settles them; one selector loop, no threads."""

    def __init__(self, host: str, port: int, proto: str, rate: float, count: int, timeout: float, out=sys.stdout,
                 persistent: bool = False) -> None:
        self.addr = (host, port)
        self.persistent = persistent and proto == "tcp"
        self.conn: socket.socket | None = None  # --persistent: the one connection
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.resets = 0
        self.proto = proto
        self.rate = rate
        self.count = count
        self.timeout = timeout
        self.out = out
        self.sel = selectors.DefaultSelector()
        self.pending: dict[int, Pending] = {}
        self.deadlines: list[tuple[float, int]] = []
        self.udp: socket.socket | None = None
        if proto == "udp":
            self.udp = stamped(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            self.udp.setblocking(False)
            self.sel.register(self.udp, selectors.EVENT_READ, None)

    def emit(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def run(self) -> None:
        """Send every request on schedule, then wait for the last ones to settle."""
        self.emit(HEADER)
        if self.persistent:
            self.emit("# reset 0")
        start = time.monotonic() + 0.05
        next_seq = 1
        while next_seq <= self.count or self.pending:
            now = time.monotonic()
            if next_seq <= self.count and now >= start + (next_seq - 1) / self.rate:
                self.send(next_seq)
                self.emit(f"# sent {next_seq}")
                next_seq += 1
                continue
            for key, events in self.sel.select(0):  # replies already received settle before any timeout
                self.on_event(key, events)
            self.expire(time.monotonic())
            wake = [self.deadlines[0][0]] if self.deadlines else []
            if next_seq <= self.count:
                wake.append(start + (next_seq - 1) / self.rate)
            timeout = max(min(wake) - time.monotonic(), 0.0) if wake else 0.1
            for key, events in self.sel.select(timeout):
                self.on_event(key, events)

    def send(self, seq: int) -> None:
        mono, wall = time.monotonic(), time.time()
        p = Pending(seq, wall, mono, mono + self.timeout)
        payload = f"REQ {seq} {time.time_ns()}\n".encode()
        self.pending[seq] = p
        heapq.heappush(self.deadlines, (p.deadline, seq))
        if self.udp is not None:
            try:
                self.udp.sendto(payload, self.addr)
            except OSError:
                pass  # counted as lost when it times out
            return
        if self.persistent:
            self.send_persistent(payload)
            return
        sock = stamped(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        p.sock, p.buf = sock, bytearray(payload)
        err = sock.connect_ex(self.addr)
        if err not in (0, errno.EINPROGRESS):
            self.close(p)
            return
        self.sel.register(sock, selectors.EVENT_WRITE | selectors.EVENT_READ, seq)

    def send_persistent(self, payload: bytes) -> None:
        """Queue `payload` on the one connection (opened first if there is none)."""
        if self.conn is None:
            sock = stamped(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if sock.connect_ex(self.addr) not in (0, errno.EINPROGRESS):
                sock.close()
                self.broken()
                return
            self.conn, self.inbuf, self.outbuf = sock, bytearray(), bytearray()
            self.sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, "conn")
        self.outbuf += payload
        self.sel.modify(self.conn, selectors.EVENT_READ | selectors.EVENT_WRITE, "conn")

    def on_conn(self, events: int) -> None:
        """Write what is queued and settle every reply line read, on the one connection."""
        assert self.conn is not None
        try:
            if events & selectors.EVENT_WRITE and self.outbuf:
                del self.outbuf[:self.conn.send(bytes(self.outbuf))]
                if not self.outbuf:
                    self.sel.modify(self.conn, selectors.EVENT_READ, "conn")
            if events & selectors.EVENT_READ:
                chunk, arrived = recv_stamped(self.conn, 65536)
                if not chunk:
                    raise ConnectionResetError("closed by the server")
                self.inbuf += chunk
                while b"\n" in self.inbuf:
                    line, _, rest = bytes(self.inbuf).partition(b"\n")
                    self.inbuf = bytearray(rest)
                    self.settle_reply(line, arrived)
        except OSError:
            self.broken()

    def broken(self) -> None:
        """The one connection was reset or closed (or could not be opened): counted; the next request reconnects."""
        self.resets += 1
        self.emit(f"# reset {self.resets}")
        if self.conn is not None:
            self.sel.unregister(self.conn)
            self.conn.close()
            self.conn = None

    def on_event(self, key: selectors.SelectorKey, events: int) -> None:
        if key.data is None:  # the UDP socket
            self.read_udp()
            return
        if key.data == "conn":
            self.on_conn(events)
            return
        p = self.pending.get(key.data)
        if p is None or p.sock is None:
            return
        try:
            if events & selectors.EVENT_WRITE and not p.written:
                p.sock.send(bytes(p.buf))
                p.written, p.buf = True, bytearray()
                self.sel.modify(p.sock, selectors.EVENT_READ, p.seq)
            elif events & selectors.EVENT_READ:
                chunk, arrived = recv_stamped(p.sock, 4096)
                if not chunk:
                    self.close(p)  # closed without a reply: settled by the timeout
                    return
                p.buf += chunk
                if b"\n" in p.buf:
                    self.settle_reply(bytes(p.buf), arrived)
        except OSError:
            self.close(p)  # refused/reset: settled by the timeout

    def read_udp(self) -> None:
        assert self.udp is not None
        while True:
            try:
                data, arrived = recv_stamped(self.udp, 65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. ICMP port unreachable reported on the socket
            self.settle_reply(data, arrived)

    def settle_reply(self, data: bytes, arrived: float | None = None) -> None:
        """Settle the request `data` answers; `arrived`: the kernel's receive time (wall clock), if known."""
        mono, wall = time.monotonic(), time.time()
        if arrived is not None and arrived <= wall:
            mono, wall = mono - (wall - arrived), arrived
        parsed = parse_reply(data)
        if parsed is None:
            return
        seq, node = parsed
        p = self.pending.get(seq)
        if p is None:
            return  # late reply to a request already counted as lost
        if mono > p.deadline:
            return  # it came after the timeout: the timeout settles it as lost
        del self.pending[seq]
        self.close(p)
        self.emit(csv_line(p, wall, mono, node))

    def expire(self, now: float) -> None:
        while self.deadlines and self.deadlines[0][0] <= now:
            _, seq = heapq.heappop(self.deadlines)
            p = self.pending.pop(seq, None)
            if p is not None:
                self.close(p)
                self.emit(csv_line(p, None, None, ""))

    def close(self, p: Pending) -> None:
        if p.sock is not None:
            try:
                self.sel.unregister(p.sock)
            except (KeyError, ValueError):
                pass
            p.sock.close()
            p.sock = None


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the prober."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True, help="IP:PORT")
    ap.add_argument("--proto", choices=("udp", "tcp"), default="udp")
    ap.add_argument("--rate", type=float, default=10.0, help="requests per second")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=1.0, help="seconds before a request counts as lost")
    ap.add_argument("--persistent", action="store_true", help="TCP: every request over one connection")
    args = ap.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    if not host or not port.isdigit() or args.rate <= 0 or args.count < 1 or args.timeout <= 0:
        ap.error("need --target IP:PORT, --rate > 0, --count >= 1, --timeout > 0")
    Prober(host, int(port), args.proto, args.rate, args.count, args.timeout, persistent=args.persistent).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
