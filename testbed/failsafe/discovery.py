"""Neighbour discovery (paper 3.5): NICs announce their services' state; flows are spread over healthy backups.

Pure logic with the time passed in; the NIC does the UDP I/O on DISCOVERY_PORT.

Datagram (compact JSON, at most MAX_DATAGRAM bytes; more services are split over several):
`{"v": 1, "nic_ip": "10.0.0.111", "boot": 1234, "seq": 7,
  "services": {"10.0.0.11:5000": {"state": "normal", "capacity": 100}, "10.0.0.11:*": {...}}}`
A key "ip:*" (additive) stands for the whole host behind the NIC (its platform state).

Who hears whom: a NIC announces to its peers (the NICs of its backups, and of the hosts that list
its host as a backup), and to every NIC that announced to it (a *listener*, up to MAX_LISTENERS,
dropped after dead_after_s of silence). So a NIC learns the state of each backup it may send traffic
to whether or not that backup lists it in turn. A listener's announcements count as a peer's.

Health of a backup (ip, port):
* announced "failsafe" (for "ip:port" or "ip:*") by a NIC that is alive -> failed;
* announced by a NIC (a peer) that has been silent for dead_after_s -> failed, until it speaks again;
* an entry a live NIC has not repeated for dead_after_s is ignored (no longer announced);
* announced with capacity 0 -> not chosen;
* never announced by anyone (a backup with no NIC) -> healthy.
Each service entry expires dead_after_s after the last announcement that carried it.

Choice: `choose` keeps a flow on its backup until `release` (sticky), unless that backup becomes
unhealthy, in which case the flow moves. New flows go to the healthy backup with the fewest
active flows from this NIC; ties are broken by a hash of (this NIC, backup), so the order is
deterministic but differs between NICs, and several NICs do not all pile onto the same backup.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from dataclasses import dataclass
from typing import Hashable, Iterable, Sequence

log = logging.getLogger(__name__)

DISCOVERY_PORT = 7946
VERSION = 1
MAX_DATAGRAM = 1200  # bytes of JSON: fits in one unfragmented UDP datagram
MAX_SERVICES_PER_PEER = 1024
MAX_LISTENERS = 256
STATES = ("normal", "failsafe")
_MAX_SEQ = (1 << 32) - 1

Backup = tuple[str, int]


@dataclass
class _Announced:
    """What a peer said about one service, and when."""

    state: str
    capacity: int | None
    heard: float


@dataclass
class _Peer:
    """A neighbour NIC: when it last spoke and what it announced."""

    ip: str
    heard: float | None = None
    boot: int | None = None
    seq: int = -1
    services: dict[str, _Announced] | None = None
    listener: bool = False  # not configured: it announced to us first


class Discovery:
    """One NIC's view of its neighbours, and the spreading of fail-safe flows over backups."""

    def __init__(self, nic_ip: str, peers: Iterable[str], now: float, interval_s: float = 0.2,
                 dead_after_s: float = 1.0) -> None:
        self.nic_ip = nic_ip
        self.interval_s = interval_s
        self.dead_after_s = dead_after_s
        self._peers = {ip: _Peer(ip) for ip in peers if ip != nic_ip}
        self._boot = int.from_bytes(os.urandom(4), "big")
        self._seq = 0
        self._next = now
        self._last_sent: dict[str, dict] | None = None
        self._flows: dict[Hashable, Backup] = {}
        self._load: dict[Backup, int] = {}
        self.garbage = 0  # messages ignored as malformed (or from strangers beyond MAX_LISTENERS)

    # -- sending ----------------------------------------------------------------------
    def announce(self, now: float, services: dict[str, dict]) -> list[tuple[str, bytes]]:
        """(peer NIC ip, payload) datagrams to send now: when due, or at once when `services` changed."""
        if now < self._next and services == self._last_sent:
            return []
        self._last_sent = {k: dict(v) for k, v in services.items()}
        self._next = now + self.interval_s
        self._forget_listeners(now)
        out: list[tuple[str, bytes]] = []
        for payload in self._encode(services):
            out += [(ip, payload) for ip in self._peers]
        return out

    def nics(self) -> list[str]:
        """IPs of every NIC this one talks to (configured peers and listeners)."""
        return list(self._peers)

    def _forget_listeners(self, now: float) -> None:
        for ip in [ip for ip, p in self._peers.items() if p.listener and not self._alive(p, now)]:
            del self._peers[ip]

    def _encode(self, services: dict[str, dict]) -> list[bytes]:
        """The announcement as one or more datagrams of at most MAX_DATAGRAM bytes (at least one)."""
        chunks: list[dict[str, dict]] = [{}]
        for name, info in sorted(services.items()):
            value = {"state": info.get("state", "normal"), "capacity": info.get("capacity")}
            if len(self._datagram({name: value}, _MAX_SEQ)) > MAX_DATAGRAM:
                log.warning("discovery: service %s does not fit in a datagram; not announced", name)
                continue
            trial = {**chunks[-1], name: value}
            if len(self._datagram(trial, _MAX_SEQ)) > MAX_DATAGRAM:
                chunks.append({name: value})
            else:
                chunks[-1] = trial
        out = []
        for chunk in chunks:
            out.append(self._datagram(chunk, self._seq))
            self._seq = (self._seq + 1) % (_MAX_SEQ + 1)
        return out

    def _datagram(self, services: dict[str, dict], seq: int) -> bytes:
        """One announcement datagram (size checks pass _MAX_SEQ, the longest seq)."""
        body = {"v": VERSION, "nic_ip": self.nic_ip, "boot": self._boot, "seq": seq, "services": services}
        return json.dumps(body, separators=(",", ":")).encode()

    # -- receiving --------------------------------------------------------------------
    def on_message(self, src_ip: str, payload: bytes, now: float) -> None:
        """Take in a peer's announcement; garbage, strangers and stale messages are ignored."""
        try:
            self._take(src_ip, payload, now)
        except Exception:  # never raise on what the network sends
            self.garbage += 1
            log.debug("discovery: ignored message from %s", src_ip, exc_info=True)

    def _take(self, src_ip: str, payload: bytes, now: float) -> None:
        peer = self._peers.get(src_ip)
        if len(payload) > MAX_DATAGRAM * 2 or src_ip == self.nic_ip:
            self.garbage += 1
            return
        msg = json.loads(payload)
        if not (isinstance(msg, dict) and msg.get("v") == VERSION and msg.get("nic_ip") == src_ip):
            self.garbage += 1
            return
        if peer is None:
            if sum(p.listener for p in self._peers.values()) >= MAX_LISTENERS:
                self.garbage += 1
                return
            peer = self._peers[src_ip] = _Peer(src_ip, listener=True)
            self._next = now  # tell the newcomer our state at once
        seq, boot, services = msg.get("seq"), msg.get("boot"), msg.get("services")
        if not (isinstance(seq, int) and isinstance(boot, int) and isinstance(services, dict)):
            self.garbage += 1
            return
        parsed: dict[str, _Announced] = {}
        for key, info in services.items():
            if not (isinstance(info, dict) and _valid_key(key) and info.get("state") in STATES):
                continue
            cap = info.get("capacity")
            parsed[key] = _Announced(info["state"], cap if isinstance(cap, int) and cap >= 0 else None, now)
        fresh_boot = peer.boot != boot
        alive = self._alive(peer, now)
        newer = 0 < (seq - peer.seq) % (1 << 32) < (1 << 31)
        if not (fresh_boot or not alive or newer):
            return  # a reordered or duplicate datagram
        if fresh_boot:
            peer.services = {}
        peer.boot, peer.seq, peer.heard = boot, seq, now
        table = peer.services if peer.services is not None else {}
        table.update(parsed)
        for key in [k for k, a in table.items() if now - a.heard > self.dead_after_s]:
            del table[key]
        while len(table) > MAX_SERVICES_PER_PEER:
            del table[next(iter(table))]
        peer.services = table

    def next_deadline(self) -> float:
        """When announce() next has something to send."""
        return self._next

    # -- choosing backups -------------------------------------------------------------
    def healthy(self, backup: Backup, now: float) -> bool:
        """False if a live NIC announces `backup` (or its host) failed or full, or its NIC went silent."""
        ip, port = backup
        keys = (f"{ip}:{port}", f"{ip}:*")
        for peer in self._peers.values():
            if not peer.services:
                continue
            for key in keys:
                info = peer.services.get(key)
                if info is None:
                    continue
                if not self._alive(peer, now):
                    return False  # its NIC went silent
                if now - info.heard > self.dead_after_s:
                    continue  # no longer announced by a live NIC
                if info.state != "normal" or info.capacity == 0:
                    return False
        return True

    def choose(self, backups: Sequence[Backup], flow: Hashable, now: float) -> Backup | None:
        """The backup for `flow`: its current one while healthy, else the least loaded healthy one."""
        current = self._flows.get(flow)
        if current is not None:
            if current in backups and self.healthy(current, now):
                return current
            self.release(current, flow)
        candidates = [tuple(b) for b in backups if self.healthy(tuple(b), now)]  # type: ignore[arg-type]
        if not candidates:
            return None
        best = min(candidates, key=lambda b: (self._load.get(b, 0), self._tiebreak(b), b))
        self._flows[flow] = best  # type: ignore[assignment]
        self._load[best] = self._load.get(best, 0) + 1  # type: ignore[index]
        return best  # type: ignore[return-value]

    def release(self, backup: Backup, flow: Hashable) -> None:
        """Forget that `flow` uses `backup` (flow ended or moved)."""
        backup = tuple(backup)  # type: ignore[assignment]
        if self._flows.get(flow) != backup:
            return
        del self._flows[flow]
        left = self._load.get(backup, 0) - 1
        if left > 0:
            self._load[backup] = left
        else:
            self._load.pop(backup, None)

    def status(self, now: float) -> dict[str, dict]:
        """Per peer: alive, seconds since last heard, and the services it announced."""
        return {
            p.ip: {
                "alive": self._alive(p, now),
                "listener": p.listener,
                "heard_s_ago": None if p.heard is None else round(now - p.heard, 3),
                "services": {k: {"state": a.state, "capacity": a.capacity} for k, a in (p.services or {}).items()},
            }
            for p in self._peers.values()
        } | {"_flows": {f"{ip}:{port}": n for (ip, port), n in sorted(self._load.items())}}

    # -- internals --------------------------------------------------------------------
    def _alive(self, peer: _Peer, now: float) -> bool:
        return peer.heard is not None and now - peer.heard <= self.dead_after_s

    def _tiebreak(self, backup: Backup) -> int:
        return zlib.crc32(f"{self.nic_ip}|{backup[0]}:{backup[1]}".encode())


def _valid_key(key: object) -> bool:
    """True for "ip:port" (port 0-65535) or "ip:*"."""
    if not isinstance(key, str) or len(key) > 64 or ":" not in key:
        return False
    ip, port = key.rsplit(":", 1)
    if not ip:
        return False
    return port == "*" or (port.isdigit() and int(port) < 65536)


def key(backup: Backup) -> str:
    """The "ip:port" key of a backup in announcements."""
    return f"{backup[0]}:{backup[1]}"

