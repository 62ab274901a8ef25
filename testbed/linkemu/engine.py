"""The emulator's packet engine: AF_PACKET sockets on inner veth ends, epoll, a timerfd, and the links' directions.

Timing (measured on a 2-core VM, where waking an idle process costs 0.1-0.2 ms; see bench/README.md):

* A frame's delay counts from the kernel's receive timestamp (SO_TIMESTAMPNS), not from when the
  engine got round to reading it, so the engine's own wake-up on arrival is not added to the delay.
* The timer is armed `lead` early, `lead` being the running median of how late its wake-ups have
  been, so the median frame leaves on time (a frame may leave up to `lead` before its release).
* A delayed frame going out to an Open vSwitch port is brought forward by what the next switch hop
  costs a frame from idle, measured at start on a bridge of the run's own (testbed.linkemu.hopcost):
  a cost only the link causes. Not when the direction is busy (frames within HOT_GAP of each other),
  since a busy switch is awake.
* A delayed frame that came in from an Open vSwitch port and that this engine did not itself send
  into a switch lately (`RecentFrames`) is fresh from a host: it is brought forward by the switch
  hop it has just crossed too. So each switch hop of a path is compensated once, by the link
  before it or, for the first, by the link after it; a frame in transit between two links is not
  compensated twice.
* A frame in transit measures a real switch hop: its arrival here minus the release it was given
  on the link before (so the engine's own early or late sending is folded in). The median of the
  recent ones (`TransitHops`) is the hop used while it is fresh; the throwaway bridge's figure
  otherwise. Under load that bridge measured ~160 us where the real hops took ~80 (bench/README.md).
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import math
import os
import select
import socket
import statistics
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from testbed import proc
from testbed.linkemu import hopcost
from testbed.linkemu.schedule import Direction, ShapeParams, direction_rng
from testbed.timerfd import Timer

log = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
SO_TIMESTAMPNS = 35  # also the control message type that carries the timestamp (SCM_TIMESTAMPNS)
ANCILLARY = socket.CMSG_SPACE(16)  # one struct timespec
_TIMESPEC = struct.Struct("qq")
SOCKET_BUFFER = 4 * 1024 * 1024
FRAME_BUFFER = 65536
BATCH = 256  # frames read from one socket per wake-up, so one busy port cannot starve timers
HOP_PERIOD = 1.0  # seconds between measurements of a switch hop (15 frames each)
HOP_WINDOW = 30  # the hop cost is the median of this many recent probes (two rounds)
HOT_GAP = 0.0005  # frames this close together find the next switch awake: no hop compensation
TRANSIT_WINDOW = 0.05  # a frame sent into a switch is looked for on the next link this long after its release
TRANSIT_LIMIT = 4096  # frames remembered at most (only compensated ones are: never bulk traffic)
TRANSIT_SAMPLES = 31  # real switch hops (frames in transit) the hop's median is taken over
TRANSIT_LEAST = 9  # ... at least this many
TRANSIT_MAX_AGE = 5.0  # seconds: an older newest sample means the meter's figure is used again
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
    netnsid: int | None = None  # where this end's outer peer lives (netns id as seen from here)
    out_ovs: bool = False  # `peer`'s outer end is an OVS port: frames received here cross a switch hop next
    in_ovs: bool = False  # this end's outer end is one: frames received here have just crossed a switch hop


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
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            pass  # no timestamps: delays count from when the frame is read
        sock.setblocking(False)
    except Exception:
        sock.close()
        raise
    return sock, ignores


def set_link_state(ifname: str, up: bool) -> None:
    """Bring inner end `ifname` up or down (down takes carrier away from its outer peer)."""
    proc.run(["ip", "link", "set", "dev", ifname, "up" if up else "down"], timeout=10)


@dataclass(slots=True)
class RunningMedian:
    """A running estimate of the median of a stream (moves `step` towards each sample), within [0, high]."""

    value: float
    step: float = 2e-6
    high: float = 1e-3

    def observe(self, sample: float) -> None:
        v = self.value + (self.step if sample > self.value else -self.step)
        self.value = 0.0 if v < 0.0 else self.high if v > self.high else v


class RecentFrames:
    """Frames this engine released into a switch lately (by content), each remembered until `window` after its release."""

    def __init__(self, window: float = TRANSIT_WINDOW, limit: int = TRANSIT_LIMIT) -> None:
        self.window = window
        self.limit = limit
        self._until: dict[bytes, float] = {}
        self._order: deque[tuple[float, bytes]] = deque()

    def __len__(self) -> int:
        return len(self._until)

    def add(self, frame: bytes, release: float) -> None:
        """Remember `frame`, released at `release` (the oldest is forgotten beyond `limit`)."""
        until = release + self.window
        self._until[frame] = until
        self._order.append((until, frame))
        while len(self._order) > self.limit:
            self._forget(*self._order.popleft())

    def released(self, frame: bytes, now: float) -> float | None:
        """When `frame` was released into a switch by this engine, if that was within `window` of `now`."""
        order = self._order
        while order and order[0][0] < now:
            self._forget(*order.popleft())
        until = self._until.get(frame)
        return None if until is None else until - self.window

    def _forget(self, until: float, frame: bytes) -> None:
        if self._until.get(frame) == until:  # not when the same frame was added again later
            del self._until[frame]


class TransitHops:
    """Real switch hops (seconds) seen by frames in transit: the median of the last `size`, while fresh."""

    def __init__(self, size: int = TRANSIT_SAMPLES, least: int = TRANSIT_LEAST,
                 max_age: float = TRANSIT_MAX_AGE, high: float = HOT_GAP) -> None:
        self.least = least
        self.max_age = max_age
        self.high = high
        self._samples: deque[float] = deque(maxlen=size)
        self._newest = -math.inf
        self._median: float | None = None

    def __len__(self) -> int:
        return len(self._samples)

    def observe(self, now: float, seconds: float) -> None:
        """Add one hop time (clamped to [0, high]) seen at `now`."""
        self._samples.append(min(max(seconds, 0.0), self.high))
        self._newest = now
        if len(self._samples) >= self.least:
            self._median = statistics.median(self._samples)

    def current(self, now: float) -> float | None:
        """The median, or None with too few samples or when the newest is older than `max_age`."""
        return self._median if now - self._newest <= self.max_age else None


def timer_lateness(timer: Timer, samples: int = 15, gap: float = 0.001) -> float:
    """Median of how late `timer` wakes an idle process (s), measured with `samples` sleeps of `gap`."""
    ep = select.epoll()
    ep.register(timer.fd, select.EPOLLIN)
    late = []
    try:
        for _ in range(samples):
            due = time.monotonic() + gap
            timer.arm(due)
            ep.poll(1.0)
            late.append(time.monotonic() - due)
            timer.consume()
    finally:
        ep.close()
    late.sort()
    return late[len(late) // 2]


def hop_compensation(hop: float, out_ovs: bool, in_ovs: bool, in_transit: bool) -> float:
    """How much earlier a delayed frame leaves: `hop` for the switch hop after the link, and for the
    one before it unless the frame is in transit between two links (the link before compensated it)."""
    return hop * (out_ovs + (in_ovs and not in_transit))


class Engine:
    """Forwards frames between the inner ends of every link, shaped per direction, in one epoll loop."""

    def __init__(self, seed: int | str | None = None, clock: Callable[[], float] = time.monotonic,
                 compensate: bool = True) -> None:
        self.seed = seed
        self.clock = clock
        self.links: dict[str, Link] = {}
        self.ports: dict[int, Port] = {}  # by socket fd
        self.epoll = select.epoll()
        self.timer = Timer()
        # wake-up compensation (module docstring); kernel timestamps only mean something on the real clock
        self.timestamps = compensate and clock is time.monotonic
        start = timer_lateness(self.timer) if compensate else 0.0
        self.lead = RunningMedian(start)  # how late timer wake-ups are
        log.info("timing: timer lateness %.0f us at start; compensation %s", start * 1e6,
                 "on" if compensate else "off")
        self.epoll.register(self.timer.fd, select.EPOLLIN)
        self.hop_cost: hopcost.HopCost | None = None
        self._calibration: threading.Thread | None = None
        self.recent = RecentFrames()
        self.transit = TransitHops()
        self._stopping = threading.Event()
        netns = hopcost.own_netns_name() if compensate else None
        if netns is not None and netns.endswith("-le"):  # the testbed's emulator: measure a switch hop
            self._hop_r, self._hop_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self.epoll.register(self._hop_r, select.EPOLLIN)
            self._calibration = threading.Thread(target=self._calibrate, args=(netns[:-3],), daemon=True)
            self._calibration.start()
        self._wakes: list[tuple[float, int, Port]] = []  # (when a direction's first frame is due, seq, port)
        self._seq = itertools.count()
        self._buf = bytearray(FRAME_BUFFER)
        self._view = memoryview(self._buf)
        self._bufs = [self._buf]
        self.extra_fds: dict[int, Callable[[int], None]] = {}  # control socket handlers
        self.running = True

    def _calibrate(self, prefix: str) -> None:
        """Measure a switch hop now and every HOP_PERIOD s (in a thread, never holding up frames); tell the loop."""
        meter = hopcost.HopMeter(prefix)
        recent: list[float] = []
        try:
            meter.open()
            while not self._stopping.is_set():
                recent = (recent + meter.probe())[-HOP_WINDOW:]
                if len(recent) >= hopcost.SAMPLES // 2:
                    cost = hopcost.HopCost(statistics.median(recent), meter.netnsid, len(recent))
                    if self.hop_cost is None:
                        log.info("switch hop from idle: %.0f us (median of %d), outer ends in netns id %s",
                                 cost.seconds * 1e6, cost.samples, cost.netnsid)
                    self.hop_cost = cost
                    os.write(self._hop_w, b"x")
                self._stopping.wait(HOP_PERIOD)
        except Exception as exc:
            log.warning("switch hop cost not measured: %s", exc)
        finally:
            meter.close()

    def _apply_hop_cost(self) -> None:
        """Mark the ports whose own or whose peer's outer end is an OVS port (where ovs-vswitchd's netns is)."""
        cost = self.hop_cost
        for port in self.ports.values():
            out = port.peer
            port.out_ovs = cost is not None and out is not None and out.netnsid == cost.netnsid
            port.in_ovs = cost is not None and port.netnsid == cost.netnsid

    def hop(self, now: float) -> float:
        """The switch hop to compensate now: the real hops' median while fresh, else the meter's (at most HOT_GAP)."""
        real = self.transit.current(now)
        if real is not None:
            return real
        return 0.0 if self.hop_cost is None else min(self.hop_cost.seconds, HOT_GAP)

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
            if self._calibration is not None:
                port.netnsid = hopcost.link_netnsid(port.ifname)
            self.ports[port.sock.fileno()] = port
            self.epoll.register(port.sock.fileno(), select.EPOLLIN)
        if self.hop_cost is not None:
            self._apply_hop_cost()
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
        buf = self._buf
        bufs = self._bufs
        view = self._view
        clock = self.clock
        # kernel timestamps are CLOCK_REALTIME: the offset to our clock, taken once per wake-up
        offset = time.time() - time.monotonic() if self.timestamps else None
        compensating = port.out_ovs or port.in_ovs
        hop = self.hop(clock()) if compensating else 0.0
        for _ in range(BATCH):
            try:
                n, anc, _flags, addr = sock.recvmsg_into(bufs, ANCILLARY)
            except BlockingIOError:
                return
            except OSError as exc:  # ENETDOWN after the interface went down: the error is now cleared
                if exc.errno not in (errno.ENETDOWN, errno.ENXIO, errno.EINTR):
                    log.warning("receive on %s: %s", port.ifname, exc)
                return
            if not port.ignores_outgoing and addr[2] == PACKET_OUTGOING:
                continue
            if not up:
                d.counters.rx += 1
                d.counters.dropped_down += 1
                continue
            now = clock()
            arrival = now
            if anc and offset is not None:
                sec, nsec = _TIMESPEC.unpack_from(anc[0][2])
                arrival = sec - offset + nsec * 1e-9
                if arrival > now:
                    arrival = now
            previous = d.last_release
            release = d.admit(n, arrival)
            if release < 0.0:
                continue
            frame = None
            if compensating and release - previous > HOT_GAP and (d.params.delay_s or d.params.jitter_s):
                frame = bytes(view[:n])
                before = self.recent.released(frame, now) if port.in_ovs else None
                if before is not None:  # in transit: it has just measured a real switch hop
                    self.transit.observe(now, arrival - before)
                release -= hop_compensation(hop, port.out_ovs, port.in_ovs, before is not None)
                if port.out_ovs:
                    self.recent.add(frame, max(release, now))
            if release <= now and not d.queue:
                self._send(out, view[:n], n, d)
            else:
                d.hold(release, bytes(view[:n]) if frame is None else frame)
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
            self.timer.arm(self._wakes[0][0] - self.lead.value)
        else:
            self.timer.disarm()

    def run(self) -> None:
        """Serve frames, timers and control requests until `running` is cleared."""
        ports = self.ports
        timer_fd = self.timer.fd
        extra = self.extra_fds
        while self.running:
            fired: float | None = None  # when the timer that just expired was due
            try:
                events = self.epoll.poll(-1 if not self._wakes else 1.0)
            except InterruptedError:
                continue
            for fd, _ev in events:
                port = ports.get(fd)
                if port is not None:
                    self._receive(port)
                elif fd == timer_fd:
                    fired = self.timer.armed
                    self.timer.consume()
                elif fd in extra:
                    extra[fd](fd)
                elif self._calibration is not None and fd == self._hop_r:
                    os.read(fd, 64)
                    self._apply_hop_cost()
            if self._wakes:
                # early by `lead` only on the timer's own wake-up (it is what was armed early); woken
                # by a frame or a request, only what is due goes: no frame leaves early for that
                self._release(self.clock() + (self.lead.value if fired is not None else 0.0))
                if fired is not None:  # lateness until the frames are out: what `lead` must cover
                    self.lead.observe(self.clock() - fired)
            self._arm()

    def close(self) -> None:
        """Close every socket and the timer."""
        real = self.transit.current(self.clock())
        log.info("timing at close: timer lead %.0f us, switch hop %s, real hops of frames in transit %s",
                 self.lead.value * 1e6,
                 "not measured" if self.hop_cost is None else f"{self.hop_cost.seconds * 1e6:.0f} us",
                 "none lately" if real is None else f"{real * 1e6:.0f} us (median of {len(self.transit)})")
        if self._calibration is not None:
            self._stopping.set()
            self._calibration.join(timeout=10)
            self.epoll.unregister(self._hop_r)
            os.close(self._hop_r)
            os.close(self._hop_w)
        for link_id in list(self.links):
            self.remove_link(link_id)
        self.timer.close()
        self.epoll.close()
