#!/usr/bin/env python3
"""A virtual function of a chain: receive numbered frames on UDP, burn CPU per frame, forward to the next hop.

Roles (``--role``, comma-separated): ``vf`` (the default: each frame costs ``--cost`` seconds of CPU,
then goes to the next hop), ``source`` (sends frames ``F <seq> <ns>`` at ``--rate`` per second to
the next hop, numbered from 1) and ``sink`` (appends ``<seq> <recv time> <send ns>`` per frame to
``frames.log`` in the state directory). The next hop is the file ``next`` in the state directory
("IP PORT"), re-read when it changes: that is how the orchestrator re-points a chain's neighbours.
``ping`` is answered ``pong`` (the readiness check). The count of processed frames is kept in
``processed`` (state a state-transfer migration carries on). Frames that arrive with no next hop
known, and with ``--deadline`` frames that waited longer than that many seconds in this VF's
socket (the kernel's receive timestamp; a real-time stage skips stale frames rather than work
through a backlog), are dropped and counted in ``dropped``.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys
import time

STATE = os.environ.get("STATE_DIR", "/srv/vf")
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux: the kernel stamps each datagram on arrival


def replace(name: str, data: bytes) -> None:
    tmp = os.path.join(STATE, f".{name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, os.path.join(STATE, name))


def read_int(name: str) -> int:
    try:
        with open(os.path.join(STATE, name)) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


class NextHop:
    """The next hop from the state directory's `next` file, re-read when its mtime changes."""

    def __init__(self) -> None:
        self.path = os.path.join(STATE, "next")
        self.addr: tuple[str, int] | None = None
        self.mtime = 0.0
        self.checked = 0.0

    def get(self, now: float) -> tuple[str, int] | None:
        if now - self.checked >= 0.02:
            self.checked = now
            try:
                mtime = os.stat(self.path).st_mtime_ns
                if mtime != self.mtime:
                    with open(self.path) as f:
                        ip, port = f.read().split()
                    self.addr, self.mtime = (ip, int(port)), mtime
            except (OSError, ValueError):
                pass
        return self.addr


def burn(cost_s: float) -> None:
    """Use `cost_s` seconds of this thread's CPU (stretched in wall time when the cgroup is throttled)."""
    end = time.thread_time() + cost_s
    while time.thread_time() < end:
        pass


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", default="vf")
    ap.add_argument("--cost", type=float, default=0.0)
    ap.add_argument("--rate", type=float, default=0.0)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--port", type=int, default=7200)
    ap.add_argument("--deadline", type=float, default=0.0)
    args = ap.parse_args()
    roles = set(args.role.split(","))
    os.makedirs(STATE, exist_ok=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind(("0.0.0.0", args.port))
    hop = NextHop()
    processed, dropped = read_int("processed"), read_int("dropped")
    sink = open(os.path.join(STATE, "frames.log"), "a", buffering=1) if "sink" in roles else None
    seq, period = 0, (1.0 / args.rate if args.rate > 0 else 0.0)
    next_send = time.monotonic() + 0.2 if "source" in roles and period else float("inf")
    saved = time.monotonic()
    print(f"vf {args.role} on udp {args.port}, cost {args.cost} s, rate {args.rate}/s", flush=True)
    while True:
        now = time.monotonic()
        while now >= next_send:
            seq += 1
            frame = b"F %d %d " % (seq, time.time_ns())
            addr = hop.get(now)
            if addr is not None:
                sock.sendto(frame.ljust(args.size, b"."), addr)
            next_send += period
            if next_send < now - 1.0:  # fell far behind (throttled): skip, do not burst
                next_send = now + period
            replace("sent", b"%d\n" % seq)
        sock.settimeout(max(min(next_send - now, 0.2), 0.0))
        try:
            data, anc, _, peer = sock.recvmsg(65535, 64)
        except socket.timeout:
            data, anc = b"", []
        arrived = next((struct.unpack("qq", d[:16]) for lvl, typ, d in anc
                        if lvl == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS), None)
        if data.startswith(b"ping"):
            sock.sendto(b"pong\n", peer)
        elif data.startswith(b"F "):
            if sink is not None:
                parts = data.split(b" ", 3)
                sink.write(f"{int(parts[1])} {time.time():.6f} {int(parts[2])}\n")
            elif args.deadline and arrived and time.time() - (arrived[0] + arrived[1] / 1e9) > args.deadline:
                dropped += 1  # stale: not worth the CPU
            else:
                burn(args.cost)
                addr = hop.get(time.monotonic())
                if addr is None:
                    dropped += 1
                else:
                    sock.sendto(data, addr)
                processed += 1
        if time.monotonic() - saved >= 1.0:
            saved = time.monotonic()
            replace("processed", b"%d\n" % processed)
            replace("dropped", b"%d\n" % dropped)


if __name__ == "__main__":
    sys.exit(main())
