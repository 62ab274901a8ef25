"""The emulator's packet engine: AF_PACKET sockets on inner veth ends, epoll, a timerfd, and the links' directions."""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import os
import select
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable

from testbed import proc
from testbed.linkemu.schedule import Direction, ShapeParams, direction_rng
from testbed.timerfd import Timer

log = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
SOCKET_BUFFER = 4 * 1024 * 1024
FRAME_BUFFER = 65536
BATCH = 256  # frames read from one socket per wake-up, so one busy port cannot starve timers
OFFLOADS = ("tx", "off", "tso", "off", "gso", "off", "gro", "off")


def offload_args(ifname: str) -> list[str]:
    """The ethtool command that turns off the offloads a userspace forwarder cannot cope with."""
    return ["ethtool", "-K", ifname, *OFFLOADS]


@dataclass(eq=False, slots=True)
class Port:
    """One inner veth end: its socket, and the direction its received frames take, out of `peer`."""

    ifname: str
    sock: socket.socket
    direction: Direction
    link: "Link"
    peer: "Port | None" = None
    ignores_outgoing: bool = True


@dataclass(eq=False, slots=True)
class Link:
    """An emulated link between inner ends `a` and `b`: forward is a→b, reverse is b→a."""

    link_id: str
    a: Port
    b: Port
    up: bool = True
    removed: bool = False

    @property
    def forward(self) -> Direction:
        return self.a.direction

    @property
    def reverse(self) -> Direction:
        return self.b.direction


def open_port_socket(ifname: str) -> tuple[socket.socket, bool]:
    """A non-blocking AF_PACKET socket bound to `ifname`; second item: outgoing frames are filtered by the kernel."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.bind((ifname, ETH_P_ALL))
        for opt, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            ignores = True
        except OSError:
            ignores = False
        sock.setblocking(False)
    except Exception:
        sock.close()
        raise
    return sock, ignores


def set_link_state(ifname: str, up: bool) -> None:
    """Bring inner end `ifname` up or down (down takes carrier away from its outer peer)."""
    proc.run(["ip", "link", "set", "dev", ifname, "up" if up else "down"], timeout=10)


class Engine:
    """Forwards frames between the inner ends of every link, shaped per direction, in one epoll loop."""

    def __init__(self, seed: int | str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.seed = seed
        self.clock = clock
        self.links: dict[str, Link] = {}
        self.ports: dict[int, Port] = {}  # by socket fd
        self.epoll = select.epoll()
        self.timer = Timer()
        self.epoll.register(self.timer.fd, select.EPOLLIN)
        self._wakes: list[tuple[float, int, Port]] = []  # (when a direction's first frame is due, seq, port)
        self._seq = itertools.count()
        self._buf = bytearray(FRAME_BUFFER)
        self._view = memoryview(self._buf)
        self.extra_fds: dict[int, Callable[[int], None]] = {}  # control socket handlers
        self.running = True

    # ---- links -----------------------------------------------------------------------------
    def add_link(self, link_id: str, a: str, b: str, forward: ShapeParams, reverse: ShapeParams,
                 seed: int | str | None = None) -> Link:
        """Start forwarding between inner ends `a` and `b` (brought up, offloads off)."""
        if link_id in self.links:
            raise ValueError(f"link {link_id!r} exists")
        if a == b:
            raise ValueError("a and b must be different interfaces")
        used = {p.ifname for p in self.ports.values()}
        for name in (a, b):
            if name in used:
                raise ValueError(f"interface {name!r} already belongs to a link")
            if not os.path.exists(f"/sys/class/net/{name}"):
                raise ValueError(f"no interface {name!r} in the emulator's namespace")
        seed = self.seed if seed is None else seed
        for name in (a, b):
            proc.run(offload_args(name), timeout=10, check=False)
            set_link_state(name, True)
        sock_a, ign_a = open_port_socket(a)
        try:
            sock_b, ign_b = open_port_socket(b)
        except Exception:
            sock_a.close()
            raise
        fwd = Direction(forward, direction_rng(seed, link_id, "forward"))
        rev = Direction(reverse, direction_rng(seed, link_id, "reverse"))
        link = Link.__new__(Link)
        pa = Port(a, sock_a, fwd, link, ignores_outgoing=ign_a)
        pb = Port(b, sock_b, rev, link, ignores_outgoing=ign_b)
        pa.peer, pb.peer = pb, pa
        Link.__init__(link, link_id, pa, pb)
        self.links[link_id] = link
        for port in (pa, pb):
            self.ports[port.sock.fileno()] = port
            self.epoll.register(port.sock.fileno(), select.EPOLLIN)
        log.info("link %s added: %s <-> %s forward=%s reverse=%s (kernel filters outgoing: %s)",
                 link_id, a, b, forward, reverse, ign_a and ign_b)
        return link

    def link(self, link_id: str) -> Link:
        """The link called `link_id`, or ValueError."""
        try:
            return self.links[link_id]
        except KeyError:
            raise ValueError(f"no link {link_id!r}") from None

    def set_shape(self, link_id: str, forward: ShapeParams | None, reverse: ShapeParams | None) -> None:
        """Change one or both directions; frames already held keep their release times."""
        link = self.link(link_id)
        if forward is not None:
            link.forward.params = forward
        if reverse is not None:
            link.reverse.params = reverse
        log.info("link %s shaped: forward=%s reverse=%s", link_id, link.forward.params, link.reverse.params)

    def set_up(self, link_id: str, up: bool) -> None:
        """Take a link down (held frames dropped, inner ends down) or bring it back up."""
        link = self.link(link_id)
        if up:
            for port in (link.a, link.b):
                set_link_state(port.ifname, True)
            link.up = True
        else:
            link.up = False
            link.forward.flush()
            link.reverse.flush()
            for port in (link.a, link.b):
                set_link_state(port.ifname, False)
        log.info("link %s %s", link_id, "up" if up else "down")

    def remove_link(self, link_id: str) -> None:
        """Stop forwarding on a link and close its sockets (the interfaces are left to the caller)."""
        link = self.link(link_id)
        link.removed = True
        for port in (link.a, link.b):
            fd = port.sock.fileno()
            self.ports.pop(fd, None)
            try:
                self.epoll.unregister(fd)
            except OSError:
                pass
            port.sock.close()
            port.direction.queue.clear()
        del self.links[link_id]
        log.info("link %s removed", link_id)

    def stats(self, link_id: str | None = None) -> dict[str, Any]:
        """Counters, held frames and shape of each direction of one link or of all links."""
        links = [self.link(link_id)] if link_id is not None else list(self.links.values())
        out: dict[str, Any] = {}
        for link in links:
            out[link.link_id] = {
                "a": link.a.ifname, "b": link.b.ifname, "up": link.up,
                **{name: {**d.counters.as_dict(), "queued": len(d.queue), "shape": d.params.to_wire()}
                   for name, d in (("forward", link.forward), ("reverse", link.reverse))},
            }
        return out

    # ---- hot path --------------------------------------------------------------------------
    def _receive(self, port: Port) -> None:
        """Read up to BATCH frames from `port` and forward, hold or drop each."""
        sock = port.sock
        out = port.peer.sock
        d = port.direction
        up = port.link.up
        buf, view = self._buf, self._view
        clock = self.clock
        for _ in range(BATCH):
            try:
                if port.ignores_outgoing:
                    n = sock.recv_into(buf)
                else:
                    n, addr = sock.recvfrom_into(buf)
                    if addr[2] == PACKET_OUTGOING:
                        continue
            except BlockingIOError:
                return
            except OSError as exc:  # ENETDOWN after the interface went down: the error is now cleared
                if exc.errno not in (errno.ENETDOWN, errno.ENXIO, errno.EINTR):
                    log.warning("receive on %s: %s", port.ifname, exc)
                return
            if not up:
                d.counters.rx += 1
                d.counters.dropped_down += 1
                continue
            now = clock()
            release = d.admit(n, now)
            if release < 0.0:
                continue
            if release <= now and not d.queue:
                self._send(out, view[:n], n, d)
            else:
                d.hold(release, bytes(view[:n]))
                if not d.scheduled:
                    d.scheduled = True
                    heapq.heappush(self._wakes, (release, next(self._seq), port))

    @staticmethod
    def _send(out: socket.socket, frame: Any, n: int, d: Direction) -> None:
        """Transmit one frame, counting it as sent or refused."""
        try:
            out.send(frame)
            d.sent(n)
        except OSError:
            d.counters.dropped_send += 1

    def _release(self, now: float) -> None:
        """Send every held frame that is due at `now`."""
        wakes = self._wakes
        while wakes and wakes[0][0] <= now:
            port = heapq.heappop(wakes)[2]
            d = port.direction
            if port.link.removed:
                continue
            out = port.peer.sock
            q = d.queue
            while q and q[0][0] <= now:
                frame = q.popleft()[1]
                self._send(out, frame, len(frame), d)
            if q:
                heapq.heappush(wakes, (q[0][0], next(self._seq), port))
            else:
                d.scheduled = False

    def _arm(self) -> None:
        """Point the timer at the earliest pending release."""
        if self._wakes:
            self.timer.arm(self._wakes[0][0])
        else:
            self.timer.disarm()

    def run(self) -> None:
        """Serve frames, timers and control requests until `running` is cleared."""
        ports = self.ports
        timer_fd = self.timer.fd
        extra = self.extra_fds
        while self.running:
            try:
                events = self.epoll.poll(-1 if not self._wakes else 1.0)
            except InterruptedError:
                continue
            for fd, _ev in events:
                port = ports.get(fd)
                if port is not None:
                    self._receive(port)
                elif fd == timer_fd:
                    self.timer.consume()
                elif fd in extra:
                    extra[fd](fd)
            if self._wakes:
                self._release(self.clock())
            self._arm()

    def close(self) -> None:
        """Close every socket and the timer."""
        for link_id in list(self.links):
            self.remove_link(link_id)
        self.timer.close()
        self.epoll.close()
