"""One direction of an emulated link as pure logic: loss, queue limit, rate, delay and jitter on a clock passed in.

Semantics (chosen to match what Mininet users know from netem):

* Loss is Bernoulli per frame, drawn from the direction's own seeded RNG, checked first.
* The queue limit counts every frame the direction holds (waiting for serialisation or in the
  delay line), like netem's ``limit``; a frame arriving when ``limit`` frames are held is dropped.
  With no limit configured the direction holds at most ``DEFAULT_LIMIT`` (netem's default, 1000).
* Rate is serialisation, like netem ``rate``: departure = max(now, last departure) + len * 8 / rate,
  where len is the whole Ethernet frame as received (no preamble, no FCS), as netem counts it.
* Delay and jitter are added after serialisation; jitter is uniform in [delay - j, delay + j]
  (netem's default) or normal(delay, j), never below zero.
* Order is always FIFO: a frame is never released before the one ahead of it in the same
  direction (release = max(candidate, previous release)). When jitter is smaller than the gap
  between frames this changes nothing; when it is larger, frames bunch up instead of being
  reordered (netem reorders then unless a FIFO child qdisc is used). TCP stays unconfused.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

#: Frames a direction holds at most when no queue limit is configured (netem's default limit).
DEFAULT_LIMIT = 1000
#: A full TCP segment's payload and its frame as the rate counts it (MTU 1500, TCP timestamps, Ethernet header).
TCP_MSS, TCP_FRAME = 1448, 1514
JITTER_DISTS = ("uniform", "normal")
_DROP = -1.0


@dataclass(frozen=True)
class ShapeParams:
    """One direction's behaviour in the emulator's units: bits/s, seconds, a probability, frames."""

    rate_bps: float | None = None
    delay_s: float = 0.0
    jitter_s: float = 0.0
    jitter_dist: str = "uniform"
    loss: float = 0.0
    limit: int = DEFAULT_LIMIT

    def to_wire(self) -> dict[str, Any]:
        """This shape in the control protocol's units (Mbit/s, ms, %, packets)."""
        return {
            "bw_mbit": None if self.rate_bps is None else self.rate_bps / 1e6,
            "delay_ms": self.delay_s * 1e3,
            "jitter_ms": self.jitter_s * 1e3,
            "jitter_dist": self.jitter_dist,
            "loss_pct": self.loss * 100.0,
            "queue_pkts": self.limit,
        }


_WIRE_KEYS = ("bw_mbit", "delay_ms", "jitter_ms", "jitter_dist", "loss_pct", "queue_pkts")


def _number(key: str, value: Any, *, low: float = 0.0, high: float = math.inf) -> float:
    """`value` as a finite float in [low, high], or ValueError naming `key`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key}: expected a number, got {value!r}")
    num = float(value)
    if not math.isfinite(num) or num < low or num > high:
        raise ValueError(f"{key}: {value!r} is outside [{low:g}, {high:g}]")
    return num


def parse_shape(wire: Mapping[str, Any], base: ShapeParams | None = None) -> ShapeParams:
    """A ShapeParams from protocol fields; keys missing from `wire` keep `base`'s values (partial update)."""
    if not isinstance(wire, Mapping):
        raise ValueError(f"shape: expected an object, got {wire!r}")
    unknown = sorted(set(wire) - set(_WIRE_KEYS))
    if unknown:
        raise ValueError(f"shape: unknown key(s) {', '.join(map(str, unknown))}")
    out = base or ShapeParams()
    changes: dict[str, Any] = {}
    if "bw_mbit" in wire:
        bw = wire["bw_mbit"]
        changes["rate_bps"] = None if bw in (None, 0) else _number("bw_mbit", bw, low=1e-3, high=1e5) * 1e6
    if "delay_ms" in wire:
        changes["delay_s"] = _number("delay_ms", wire["delay_ms"], high=600_000) / 1e3
    if "jitter_ms" in wire:
        changes["jitter_s"] = _number("jitter_ms", wire["jitter_ms"], high=600_000) / 1e3
    if "jitter_dist" in wire:
        if wire["jitter_dist"] not in JITTER_DISTS:
            raise ValueError(f"jitter_dist: expected one of {', '.join(JITTER_DISTS)}, got {wire['jitter_dist']!r}")
        changes["jitter_dist"] = wire["jitter_dist"]
    if "loss_pct" in wire:
        changes["loss"] = _number("loss_pct", wire["loss_pct"], high=100.0) / 100.0
    if "queue_pkts" in wire:
        q = wire["queue_pkts"]
        if q is None:
            changes["limit"] = DEFAULT_LIMIT
        elif isinstance(q, bool) or not isinstance(q, int) or q < 1 or q > 1_000_000:
            raise ValueError(f"queue_pkts: expected a whole number in [1, 1000000], got {q!r}")
        else:
            changes["limit"] = q
    return replace(out, **changes)


@dataclass(slots=True)
class Counters:
    """What one direction did with the frames it received."""

    rx: int = 0
    tx: int = 0
    bytes: int = 0  # bytes transmitted
    dropped_loss: int = 0
    dropped_queue: int = 0
    dropped_down: int = 0
    dropped_send: int = 0  # the kernel refused the frame on the way out

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(eq=False, slots=True)
class Direction:
    """One direction of one link: decides each frame's fate and holds accepted frames in release order."""

    params: ShapeParams
    rng: random.Random
    counters: Counters = field(default_factory=Counters)
    queue: deque = field(default_factory=deque)  # (release time, frame), release times non-decreasing
    last_departure: float = -math.inf
    last_release: float = -math.inf
    scheduled: bool = False  # the engine has a wake-up pending for this direction

    def admit(self, length: int, now: float) -> float:
        """Release time of a `length`-byte frame arriving at `now`, or a negative number when it is dropped."""
        p = self.params
        c = self.counters
        c.rx += 1
        if p.loss and (p.loss >= 1.0 or self.rng.random() < p.loss):
            c.dropped_loss += 1
            return _DROP
        if len(self.queue) >= p.limit:
            c.dropped_queue += 1
            return _DROP
        t = now
        if p.rate_bps:
            t = (now if now > self.last_departure else self.last_departure) + length * 8.0 / p.rate_bps
            self.last_departure = t
        if p.delay_s or p.jitter_s:
            t += self._delay()
        if t < self.last_release:
            t = self.last_release
        self.last_release = t
        return t

    def _delay(self) -> float:
        """One draw of delay plus jitter, never negative."""
        p = self.params
        if not p.jitter_s:
            return p.delay_s
        if p.jitter_dist == "normal":
            d = self.rng.gauss(p.delay_s, p.jitter_s)
        else:
            d = p.delay_s + p.jitter_s * (2.0 * self.rng.random() - 1.0)
        return d if d > 0.0 else 0.0

    def hold(self, release: float, frame: bytes) -> None:
        """Keep `frame` until `release` (which must not be earlier than the last held frame's)."""
        self.queue.append((release, frame))

    def due(self, now: float) -> list[bytes]:
        """Take every held frame whose release time is at or before `now`, in order."""
        q = self.queue
        out = []
        while q and q[0][0] <= now:
            out.append(q.popleft()[1])
        return out

    def next_release(self) -> float | None:
        """When the first held frame is due, or None when nothing is held."""
        return self.queue[0][0] if self.queue else None

    def flush(self) -> int:
        """Drop every held frame (the link went down); returns how many."""
        n = len(self.queue)
        self.queue.clear()
        self.counters.dropped_down += n
        return n

    def sent(self, length: int) -> None:
        """Count a frame of `length` bytes that went out."""
        self.counters.tx += 1
        self.counters.bytes += length


def link_seed(seed: int | str, link_id: str, which: str) -> int:
    """A 32-bit seed for one direction of one link, from the run's seed (for generators seeded by a number, netem)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{link_id}/{which}".encode()).digest()[:4], "big")


def direction_rng(seed: int | str | None, link_id: str, which: str) -> random.Random:
    """The RNG of one direction: reproducible from (seed, link, direction), independent of other links."""
    if seed is None:
        return random.Random()
    return random.Random(f"{seed}/{link_id}/{which}")
