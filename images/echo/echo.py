#!/usr/bin/env python3
"""UDP and TCP echo service with a processing delay that can be changed while it runs.

Replies name the host that answered: a request that starts with ``REQ `` (what the
prober sends) is answered with the request plus `` @<node>``; any other payload (the
NIC's heartbeats, e.g. UDP "ping") is echoed byte for byte, like the paper's loop-back
VM, so a heartbeat's expected reply is its own payload. Every reply, heartbeats
included, waits the processing delay read from ``/run/echo/delay_ms`` (milliseconds;
missing or empty file: no delay) - that is how the NIC notices a slow service.
UDP replies are scheduled independently (a slow reply does not hold back the next
request); each TCP connection is served by its own thread, one request per line.
The PID is written to ``/run/echo/pid`` so a "service failure" fault can kill it.
"""

from __future__ import annotations

import argparse
import heapq
import logging
import os
import select
import socket
import socketserver
import threading
import time
from pathlib import Path

log = logging.getLogger("echo")
REQUEST_PREFIX = b"REQ "


class DelaySource:
    """Reads the processing delay from a file, re-reading it only when its mtime or size changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._delay_s = 0.0
        self._lock = threading.Lock()

    def delay_s(self) -> float:
        """The current processing delay in seconds (a stat per call, a read only on change)."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            self._forget()
            return 0.0
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                self._delay_s = parse_delay_ms(self.path.read_text(errors="replace")) / 1000.0
            return self._delay_s

    def _forget(self) -> None:
        with self._lock:
            self._stamp, self._delay_s = None, 0.0


def parse_delay_ms(text: str) -> float:
    """The delay in ms written in `text`; empty or garbage means 0."""
    try:
        value = float(text.strip() or 0)
    except ValueError:
        return 0.0
    return max(value, 0.0)


def reply_for(request: bytes, node: bytes) -> bytes:
    """The reply to one request: prober requests get the answering node appended, others are echoed."""
    if request.startswith(REQUEST_PREFIX):
        body = request.rstrip(b"\r\n")
        tail = request[len(body):]
        return body + b" @" + node + tail
    return request


def udp_socket(port: int) -> socket.socket:
    """A non-blocking UDP socket bound to `port` on every address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.setblocking(False)
    return sock


def serve_udp(sock: socket.socket, node: bytes, delays: DelaySource, stop: threading.Event) -> None:
    """Answer UDP requests on `sock`, each after the current processing delay, without head-of-line blocking."""
    pending: list[tuple[float, int, bytes, tuple]] = []  # (due, tiebreak, reply, addr)
    counter = 0
    while not stop.is_set():
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, data, addr = heapq.heappop(pending)
            _send(sock, data, addr)
        timeout = min(pending[0][0] - now, 0.5) if pending else 0.5
        readable, _, _ = select.select([sock], [], [], max(timeout, 0.0))
        if not readable:
            continue
        while True:
            try:
                request, addr = sock.recvfrom(65535)
            except BlockingIOError:
                break
            delay = delays.delay_s()
            data = reply_for(request, node)
            if delay <= 0:
                _send(sock, data, addr)
            else:
                counter += 1
                heapq.heappush(pending, (time.monotonic() + delay, counter, data, addr))


def _send(sock: socket.socket, data: bytes, addr: tuple) -> None:
    try:
        sock.sendto(data, addr)
    except OSError as exc:  # e.g. no route while the network is being faulted
        log.debug("udp reply to %s failed: %s", addr, exc)


class _LineHandler(socketserver.StreamRequestHandler):
    """Serves one TCP connection: a reply per request line, each after the processing delay."""

    def handle(self) -> None:
        server: "_TcpServer" = self.server  # type: ignore[assignment]
        for line in self.rfile:
            delay = server.delays.delay_s()
            if delay > 0:
                time.sleep(delay)
            self.wfile.write(reply_for(line, server.node))
            self.wfile.flush()


class _TcpServer(socketserver.ThreadingTCPServer):
    """A threaded TCP echo server carrying the node name and delay source."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, node: bytes, delays: DelaySource) -> None:
        self.node = node
        self.delays = delays
        super().__init__(("0.0.0.0", port), _LineHandler)


def write_pid(path: Path) -> None:
    """Write this process's PID to `path` (the service-failure fault reads it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n")


def main(argv: list[str] | None = None) -> int:
    """Run the UDP and TCP echo servers until killed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--udp-port", type=int, default=int(os.environ.get("ECHO_UDP_PORT", 7000)), help="0 disables UDP")
    ap.add_argument("--tcp-port", type=int, default=int(os.environ.get("ECHO_TCP_PORT", 7001)), help="0 disables TCP")
    ap.add_argument("--node", default=os.environ.get("TB_NODE") or socket.gethostname())
    ap.add_argument("--delay-file", type=Path, default=Path("/run/echo/delay_ms"))
    ap.add_argument("--pid-file", type=Path, default=Path("/run/echo/pid"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s echo %(message)s")
    delays = DelaySource(args.delay_file)
    node = args.node.encode()
    stop = threading.Event()
    udp = udp_socket(args.udp_port) if args.udp_port else None
    if args.tcp_port:
        tcp = _TcpServer(args.tcp_port, node, delays)
        threading.Thread(target=tcp.serve_forever, daemon=True, name="tcp").start()
    write_pid(args.pid_file)  # only once both ports are bound: the PID file means "ready"
    log.info("node %s udp %s tcp %s", args.node, args.udp_port or "off", args.tcp_port or "off")
    if udp is not None:
        serve_udp(udp, node, delays, stop)
    else:
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
