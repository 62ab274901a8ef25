"""The fail-safe NIC process: `python -m testbed.failsafe.nic --config FILE`, run inside the NIC's netns.

`Nic` ties the pure parts together (pipeline, heartbeat manager, prober, discovery, control
handlers) and is driven by `NicLoop`: the frames come through a `datapath.Datapath` (the Python
pipeline on AF_PACKET raw sockets on `nic-h` and `nic-n`, or the tc-BPF program that hands the frames
it leaves to the pipeline through punt veths), one epoll set, and
a timerfd armed at absolute CLOCK_MONOTONIC deadlines for heartbeats and timeouts (epoll's own
timeout only has millisecond granularity). The kernel in the namespace has no IP address: the
process answers ARP for its own IP and does all its I/O on the raw sockets.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import logging
import logging.handlers
import os
import select
import signal
import socket
import struct
import sys
import time
from collections import deque
from pathlib import Path
from typing import Callable

from testbed import proc
from testbed.failsafe.classifier import Classifier
from testbed.failsafe.config import NicConfig
from testbed.failsafe.conntrack import ConnTrack, Timeouts
from testbed.failsafe.failsafe_handler import FailsafeHandler, first_backup
from testbed.failsafe.packet import (PROTO_UDP, ip_bytes, ip_str, ipv4_frame, mac_bytes, parse, udp)
from testbed.failsafe.pipeline import CPU, HOST, NET, Pipeline
from testbed.failsafe.probes import Prober
from testbed.failsafe.service_table import ServiceTable
from testbed.failsafe.tcp_carry import TcpCarry
from testbed.timerfd import Timer

log = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
SIOCGIFMTU = 0x8921
SO_ATTACH_FILTER = 26
HOUSEKEEPING_S = 0.5
REPLAY_WINDOW_MIN_S = 1.0  # detection under load takes longer than interval + timeout: never shorter than this
MAX_EVENTS = 1000


class Nic:
    """The NIC's state and logic, without sockets: frames in, frames out, control commands served."""

    def __init__(self, config: NicConfig, now: float) -> None:
        from testbed.failsafe.heartbeat import HeartbeatManager

        self.config = config
        self.nic_ip = ip_bytes(config.nic_ip)
        self.nic_mac = mac_bytes(config.nic_mac)
        self.host_ip = ip_bytes(config.host_ip)
        self.classifier = Classifier()
        self.services = ServiceTable(config.default_backups)
        for s in config.services:
            self.classifier.add(s.name, config.host_ip, config.proto_of(s), s.port)
            if s.backups:
                self.services.add(config.host_ip, s.port, s.backups)
        self.discovery = self._discovery(now)
        chooser = self.discovery.choose if self.discovery is not None else first_backup
        release = self.discovery.release if self.discovery is not None else None
        timeouts = Timeouts(udp=config.udp_timeout_s, tcp=config.tcp_timeout_s)
        self.handler = FailsafeHandler(self.nic_ip, self.nic_mac, self.services,
                                       ConnTrack(timeouts, max_conns=config.conntrack_max), chooser, release,
                                       pending_per_flow=config.pending_per_flow, pending_total=config.pending_total,
                                       pending_max_age_s=config.pending_max_age_s or 1.0)
        self.handler.relay_sources = {ip_bytes(p) for p in config.peers}
        neighbours = {ip_bytes(k): mac_bytes(v) for k, v in config.neighbours.items()}
        self.pipeline = Pipeline(self.nic_ip, self.nic_mac, self.host_ip,
                                 mac_bytes(config.host_mac) if config.host_mac else None,
                                 self.classifier, self.handler, neighbours, neighbours_max=config.neighbours_max)
        self.pipeline.passive = config.passive_evidence
        self.pipeline.on_evidence = self.evidence
        self.pipeline.net_cpu_ports = frozenset({DISCOVERY_PORT})
        self.pipeline.pinned = self.services.backup_ips() | {ip_bytes(p) for p in config.peers}
        if config.carry_tcp:  # established critical TCP connections continue on a backup at failover
            self.pipeline.carry = TcpCarry(self.handler.stats, max_bytes=config.carry_max_bytes,
                                           idle_s=config.tcp_timeout_s)
        self.passive_signals = 0
        self.prober = Prober(self.nic_ip, self.nic_mac, self.host_ip)
        self.heartbeats = HeartbeatManager(config.heartbeat_entries(), now)
        self.events: deque[dict] = deque(maxlen=MAX_EVENTS)
        self.unwritten: list[dict] = []  # events not yet logged nor in the events file (`write_events`)
        self.forced: dict[str, bool] = {}  # services without a heartbeat entry, forced by `mode`
        self.pending_out: list[tuple[str, bytes]] = []  # frames control commands want sent
        self.datapath = None  # the running Datapath (set by NicLoop)
        self.datapath_fallback = ""  # why "auto" did not get BPF
        self.started = time.time()
        self.update_replay_window()

    def _discovery(self, now: float):  # noqa: ANN202 - Discovery or None
        try:
            from testbed.failsafe.discovery import Discovery
        except ImportError:
            log.warning("testbed.failsafe.discovery not available: backups chosen by hash, no announcements")
            return None
        return Discovery(self.config.nic_ip, self.config.peers, now)

    # -- time-driven work -----------------------------------------------------------------------
    def next_deadline(self) -> float:
        """The earliest monotonic time at which `tick` has work."""
        d = self.heartbeats.next_deadline()
        if self.discovery is not None:
            d = min(d, self.discovery.next_deadline())
        return d

    def heartbeats_due(self, now: float) -> list[tuple[str, bytes]]:
        """Heartbeat frames to send now (out "host"); ARP for the host while its MAC is unknown."""
        due = self.heartbeats.due(now)
        host_mac = self.pipeline.host_mac
        if host_mac is None:
            return self.pipeline.resolve(set(), now) if due else []
        return [(HOST, self.prober.build(entry, seq, host_mac)) for entry, seq in due]

    def tick(self, now: float) -> list[tuple[str, bytes]]:
        """Timeouts and discovery announcements due at `now`."""
        out = self.apply(self.heartbeats.poll(now), now)
        if self.discovery is not None:
            out += self._announce(now)
        return out

    def update_replay_window(self) -> float:
        """The replay store's age bound: the config's, or twice the longest heartbeat interval + timeout (>= 1 s)."""
        window = self.config.pending_max_age_s
        if window is None:
            targets = self.heartbeats._targets.values()  # noqa: SLF001 - the manager's own entries
            window = 2 * max((t.entry.interval_s + t.limit for t in targets), default=0.5)
            window = max(window, REPLAY_WINDOW_MIN_S)
        self.handler.pending_max_age_s = window
        return window

    def housekeeping(self, now: float) -> list[tuple[str, bytes]]:
        """Expire connections and pending requests; keep backups' and host's MACs resolved."""
        self.update_replay_window()
        self.handler.prune(now)
        ips = self.services.backup_ips() | {ip_bytes(p) for p in self.config.peers}
        self.pipeline.pinned = ips
        return self.pipeline.resolve(ips, now) + self.pipeline.carry_timeouts(now)

    def evidence(self, service: str, reason: str, now: float) -> list[tuple[str, bytes]] | None:
        """Passive failure evidence for `service` (the pipeline's `on_evidence`): fail-safe on at once.

        None when `service` has no heartbeat entry (nothing would ever turn it off again).
        """
        if service not in self.heartbeats.targets():
            return None
        self.passive_signals += 1
        return self.apply(self.heartbeats.fail(service, now, reason), now)

    def apply(self, transitions: list, now: float) -> list[tuple[str, bytes]]:
        """Record each Transition and bring every service's mode in line; frames to re-send on activation.

        The log line and the events file wait for `write_events`, which the loop calls once the frames are
        sent: at failover, the replay goes first (writing them cost ~0.7 ms of the switch-over here).
        """
        for t in transitions:
            event = {"time": time.time(), "node": self.config.node, "target": t.target, "active": t.active,
                     "reason": t.reason, "monotonic": t.time}
            self.events.append(event)
            self.unwritten.append(event)
        if not transitions:
            return []
        return self.sync_modes(now)

    def write_events(self) -> None:
        """Log the transitions recorded since the last call and append them to the events file."""
        events, self.unwritten = self.unwritten, []
        for e in events:
            log.warning("%s fail-safe %s: %s", e["target"], "ON" if e["active"] else "off", e["reason"])
        if events and self.config.events_path:
            try:
                with open(self.config.events_path, "a", encoding="utf-8") as out:
                    out.write("".join(json.dumps(e) + "\n" for e in events))
            except OSError as exc:
                log.error("cannot write event to %s: %s", self.config.events_path, exc)

    def sync_modes(self, now: float) -> list[tuple[str, bytes]]:
        """Set the pipeline's per-service fail-safe flags from the heartbeat manager and forced modes."""
        self.pipeline.platform_failsafe = self.heartbeats.in_failsafe("platform")
        out: list[tuple[str, bytes]] = []
        for sid in self.service_ids():
            active = self.forced[sid] if sid in self.forced else self.heartbeats.in_failsafe(sid)
            out += self.pipeline.set_failsafe(sid, active, now)
        return out

    def service_ids(self) -> list[str]:
        """Every service id known from the config, the heartbeat table or the target table."""
        ids = [s.name for s in self.config.services]
        ids += [t for t in self.heartbeats.targets() if t != "platform" and t not in ids]
        ids += [t for t in self.classifier.services() if t not in ids]
        return ids

    # -- frames for the NIC itself ----------------------------------------------------------------
    def to_cpu(self, frame: bytes, now: float) -> list[tuple[str, bytes]]:
        """Handle a frame addressed to the NIC: heartbeat replies and discovery messages."""
        p = parse(frame)
        if p.error:
            return []
        reply = self.prober.match(frame, p)
        if reply is not None:
            out = [(HOST, f) for f in reply.send]
            if not reply.fed:
                return out
            return out + self.apply(self.heartbeats.on_reply(reply.target, reply.seq, now, reply.payload), now)
        if self.discovery is not None and p.proto == PROTO_UDP and p.dport == DISCOVERY_PORT:
            self.discovery.on_message(ip_str(p.src_ip), frame[p.payload:p.end], now)
            if len(self.handler.relay_sources) != len(self.discovery.nics()):
                self.handler.relay_sources = {ip_bytes(x) for x in self.discovery.nics()}
        return []

    def _announce(self, now: float) -> list[tuple[str, bytes]]:
        assert self.discovery is not None
        services = self.announcement()
        out: list[tuple[str, bytes]] = []
        for peer, payload in self.discovery.announce(now, services):
            pip = ip_bytes(peer)
            mac = self.pipeline.neighbours.get(pip)
            if mac is None:
                continue  # resolved by housekeeping; this announcement is skipped
            body = udp(self.nic_ip, pip, DISCOVERY_PORT, DISCOVERY_PORT, payload)
            out.append((NET, ipv4_frame(mac, self.nic_mac, self.nic_ip, pip, PROTO_UDP, body)))
        return out

    def announcement(self) -> dict[str, dict]:
        """What this NIC tells its peers: each critical service's state, and "host_ip:*" for the platform.

        The host-level key lets other NICs skip every backup on this host while it is down, also
        services this NIC does not protect itself.
        """
        host = self.config.host_ip
        services = {f"{host}:{s.port}": {
            "state": "failsafe" if self.pipeline.in_failsafe(s.name) else "normal", "capacity": 1}
            for s in self.config.services}
        services[f"{host}:*"] = {"state": "failsafe" if self.pipeline.platform_failsafe else "normal",
                                 "capacity": 1}
        return services

    def failover_counters(self) -> dict[str, object]:
        """What this NIC did for failover: packets per backup, relayed, dropped, no backup, and the bounds hit."""
        st = self.handler.stats
        ct = self.handler.conntrack
        reasons = self.pipeline.counters.reasons
        return {"per_backup": dict(sorted(st.per_backup.items())), "relayed": st.relayed,
                "dropped": sum(c.dropped for c in self.pipeline.counters.services.values()),
                "no_backup": st.no_backup, "resent": st.resent,
                "passive": self.passive_signals, "refused": st.pending_refused,
                "conntrack_early_drop": ct.early_drops, "conntrack_full": ct.full,
                "replay_overflow": st.pending_overflow + st.pending_evicted,
                "neighbour_evicted": reasons.get("neighbour_evicted", 0)}

    # -- control API ----------------------------------------------------------------------------
    def handlers(self, clock: Callable[[], float] = time.monotonic) -> dict[str, Callable[[dict], object]]:
        """The control commands, for `ControlServer`; each returns JSON-ready data."""
        from testbed.failsafe.control_handlers import make_handlers

        return make_handlers(self, clock)


try:
    from testbed.failsafe.discovery import DISCOVERY_PORT
except ImportError:  # pragma: no cover - discovery.py not there yet
    DISCOVERY_PORT = 7946


# --- the I/O loop ------------------------------------------------------------------------------

def iface_mtu(iface: str) -> int:
    """The MTU of `iface` (SIOCGIFMTU); 1500 if it cannot be read."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            raw = fcntl.ioctl(s.fileno(), SIOCGIFMTU, struct.pack("16si12x", iface.encode(), 0))
        except OSError:
            return 1500
    return struct.unpack("16si12x", raw)[1]


def mac_filter(mac: bytes, accept: bool) -> bytes:
    """Classic BPF: keep frames whose destination MAC is `mac` (or, with accept=False, all others)."""
    yes, no = (0xFFFF, 0) if accept else (0, 0xFFFF)
    insns = [(0x20, 0, 0, 0),  # ld [0]
             (0x15, 0, 3, int.from_bytes(mac[:4], "big")),  # jeq #mac[0:4], next, no
             (0x28, 0, 0, 4),  # ldh [4]
             (0x15, 0, 1, int.from_bytes(mac[4:], "big")),  # jeq #mac[4:6], next, no
             (0x06, 0, 0, yes), (0x06, 0, 0, no)]
    return b"".join(struct.pack("HBBI", *i) for i in insns)


def attach_filter(sock: socket.socket, program: bytes) -> None:
    """Attach classic BPF `program` to `sock` (SO_ATTACH_FILTER)."""
    buf = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def open_port(iface: str, program: bytes | None = None) -> socket.socket:
    """A non-blocking AF_PACKET socket on `iface` that does not see its own transmissions."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    if program is not None:
        attach_filter(sock, program)  # before bind: no unfiltered frame gets queued
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    sock.setsockopt(SOL_PACKET, 8, 1)  # PACKET_AUXDATA
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind((iface, 0))
    sock.setblocking(False)
    return sock


def tune_iface(iface: str) -> None:
    """Up, promiscuous, no IPv6, and no offloads (so every frame is a real, checksummed, <= MTU frame)."""
    proc.run(["ip", "link", "set", iface, "up", "promisc", "on"])
    try:
        Path(f"/proc/sys/net/ipv6/conf/{iface}/disable_ipv6").write_text("1")
    except OSError:
        pass
    for feature in ("tx", "rx", "tso", "gso", "gro", "lro", "rxvlan", "txvlan", "sg"):
        res = proc.run(["ethtool", "-K", iface, feature, "off"], check=False)
        if not res.ok:
            log.debug("ethtool -K %s %s off: %s", iface, feature, res.stderr.strip())


class NicLoop:
    """Runs a `Nic` on its two interfaces, through its `Datapath`, until SIGTERM/SIGINT."""

    def __init__(self, nic: Nic, flush_log: Callable[[], None] = lambda: None) -> None:
        from testbed.control import ControlServer
        from testbed.failsafe.datapath import open_datapath

        self.nic = nic
        self.flush_log = flush_log  # writes the log records held while a round's frames were sent
        cfg = nic.config
        if cfg.tune_ifaces:
            for iface in (cfg.host_iface, cfg.net_iface):
                tune_iface(iface)
        self.dp = open_datapath(cfg.datapath, nic, nic.to_cpu)
        nic.datapath = self.dp
        self.timer = Timer()
        self._deadline = 0.0  # when timed() must run next
        self.control = (ControlServer(Path(cfg.control_socket), nic.handlers(), commit=self._commit)
                        if cfg.control_socket else None)
        self.epoll = select.epoll()
        self.receivers = self.dp.receivers()
        for fd in self.receivers:
            self.epoll.register(fd, select.EPOLLIN)
        self.epoll.register(self.timer.fd, select.EPOLLIN)
        if self.control is not None:
            self.epoll.register(self.control.fileno(), select.EPOLLIN)
        self._housekeeping = 0.0
        self._nic_deadline = 0.0

    @property
    def send_errors(self) -> int:
        return self.dp.send_errors

    def send(self, frames: list[tuple[str, bytes]]) -> None:
        """Send (port, frame) pairs through the data path; "cpu" frames are handed to the NIC's own logic."""
        self.dp.send(frames)

    def timed(self, now: float) -> None:
        """The data path's own work; heartbeats due, timeouts, announcements, housekeeping; re-arm the timer."""
        nic = self.nic
        if now < self._nic_deadline:
            self.dp.tick(now)
            self._nic_deadline = min(nic.next_deadline(), self._housekeeping)
            self._arm(self._nic_deadline)
            return
        self.dp.tick(float("inf"))  # everything the data path holds for the replay store, before timeouts act
        self.send(nic.heartbeats_due(time.monotonic()))
        self.send(nic.tick(time.monotonic()))
        if now >= self._housekeeping:
            self._housekeeping = now + HOUSEKEEPING_S
            self.dp.refresh()
            self.send(nic.housekeeping(now))
        self.dp.install()
        self._nic_deadline = min(nic.next_deadline(), self._housekeeping)
        self._arm(self._nic_deadline)

    def _commit(self) -> None:
        """A control request's effect, in place before its reply is written: its frames sent, the tables installed."""
        out, self.nic.pending_out = self.nic.pending_out, []
        self.send(out)
        self.dp.install()
        self.nic.write_events()

    def _arm(self, nic_deadline: float) -> None:
        deadline = min(nic_deadline, self.dp.next_deadline())
        self._deadline = deadline
        self.timer.arm(deadline)

    def run(self) -> None:
        """The event loop."""
        tfd = self.timer.fd
        cfd = self.control.fileno() if self.control is not None else -1
        order = {fd: i for i, fd in enumerate(self.receivers)}  # heartbeat replies first
        receivers = self.receivers
        self.send(self.nic.sync_modes(time.monotonic()))
        self.dp.install()
        self.timed(time.monotonic())
        poll = self.epoll.poll
        self.flush_log()
        while True:
            events = poll()
            if len(events) > 1:
                events.sort(key=lambda e: order.get(e[0], len(order)))
            for fd, _ in events:
                drain = receivers.get(fd)
                if drain is not None:
                    drain()
                elif fd == tfd:
                    self.timer.consume()
                elif fd == cfd and self.control is not None:
                    self.dp.refresh()
                    self.control.on_readable(fd)
            now = time.monotonic()
            if now >= self._deadline:
                self.timed(now)
            elif self.dp.next_deadline() < self._deadline:  # the data path took on work (e.g. a batch of copies)
                self._arm(self._nic_deadline)
            if self.nic.unwritten:
                self.nic.write_events()
            self.flush_log()

    def close(self) -> None:
        """Release the data path, timer and the control socket."""
        self.nic.write_events()
        if self.control is not None:
            self.control.close()
        self.dp.close()
        self.timer.close()
        self.epoll.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the NIC process."""
    parser = argparse.ArgumentParser(prog="python -m testbed.failsafe.nic", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path, help="NicConfig JSON file")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    out = logging.StreamHandler(sys.stderr)
    out.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # records wait until the loop has sent what it was working on (~0.15 ms each, several at a failover)
    held = logging.handlers.MemoryHandler(10_000, flushLevel=logging.CRITICAL + 1, target=out)
    logging.basicConfig(level=args.log_level.upper(), handlers=[held])
    config = NicConfig.from_json(args.config.read_text(encoding="utf-8"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    nic = Nic(config, time.monotonic())
    loop = NicLoop(nic, held.flush)
    log.info("NIC %s up: %s (%s) in front of %s, %d services, control at %s, datapath %s", config.node,
             config.nic_ip, config.nic_mac, config.host_ip, len(config.services), config.control_socket, loop.dp.name)
    try:
        loop.run()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        loop.close()
        log.info("NIC %s stopped", config.node)
    return 0


__all__ = ["Nic", "NicLoop", "TimerFd", "main"]

if __name__ == "__main__":
    sys.exit(main())
