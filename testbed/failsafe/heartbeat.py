"""Heartbeat manager (Fatriot Fig. 5): schedules heartbeats, measures RTT, turns fail-safe on and off.

Pure logic with the time passed in as `now`; the NIC process builds and sends the packets.

Semantics, following section 3.4 of the paper:

* Learning: the first `learn` replies of a target are averaged into RTT_avg. No activation
  happens while learning (a target that never answers is never learned, so never declared
  failed: the NIC reports it as "learning" in `status()`).
* Detection: every later reply gives RTT_last and ratio = RTT_last / max(RTT_avg, min_rtt_s);
  ratio > threshold turns fail-safe on. A heartbeat with no reply within
  max(RTT_avg, min_rtt_s) * threshold of its send time is a timeout, and turns fail-safe on
  (the paper: "the timeout duration ... is the product of the average RTT and the threshold").
  A timeout is due at `sent + limit` exactly, and `poll(now)` declares it when `now >= due`.
* RTT_avg after learning: a slow EWMA (weight EWMA_WEIGHT = 1/32) fed only by healthy replies
  (in time, ratio <= threshold) received while the target is not failed. A gradual
  degradation therefore moves RTT_avg only slowly, and a failing period never becomes "normal".
* Late replies: a reply to a heartbeat that already timed out (or that was superseded by a
  newer one that already got its verdict) is late. It updates RTT_last (shown by `status()`)
  but neither activates nor counts towards recovery, and never feeds RTT_avg.
  Replies to unknown, duplicate or never-sent sequence numbers are ignored.
* Recovery: `hysteresis` consecutive good replies turn fail-safe off; any bad reply or
  timeout resets the count, so alternating good/bad never flaps.
* Platform: the target "platform" failing puts every service into fail-safe, each with its own
  Transition (reason "platform failed"); its recovery releases the services that have not
  failed themselves. Transitions are only emitted when a target's effective mode changes.
* Heartbeats keep going at the interval while a target is in fail-safe: that is how recovery
  is seen. Sequence numbers are per entry and wrap at 16 bits.
* Evidence: `fail(target, now, reason)` is a failed heartbeat seen without waiting for one (the
  NIC's passive signal: a RST or ICMP unreachable from the service's port); recovery is the same.
* `force(target, "on"|"off"|"auto")` (additive to the agreed interface) pins a target's mode
  for experiments; transitions caused by add/remove/force are returned by the next `poll()`.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Iterable

log = logging.getLogger(__name__)

PLATFORM = "platform"
MESSAGES = ("icmp", "udp", "tcp")
SEQ_MOD = 1 << 16
#: weight of a new healthy RTT sample in RTT_avg once learning is over
EWMA_WEIGHT = 1.0 / 32
#: heartbeats remembered per target for matching replies (older ones are forgotten)
MAX_OUTSTANDING = 256
#: transitions kept for `events()`
MAX_EVENTS = 1000


@dataclass(frozen=True)
class HeartbeatEntry:
    """One row of the heartbeat table: <target, message, interval, threshold> and packet details."""

    target: str  # "platform" or a service name
    message: str  # "icmp" | "udp" | "tcp"
    interval_s: float
    threshold: float
    learn: int = 10
    hysteresis: int = 3
    min_rtt_s: float = 0.0005
    dst_ip: str = ""
    dst_port: int = 0
    payload: bytes = b""
    expect: bytes | None = None

    def __post_init__(self) -> None:
        if not self.target:
            raise ValueError("heartbeat target must not be empty")
        if self.message not in MESSAGES:
            raise ValueError(f"heartbeat message must be one of {', '.join(MESSAGES)}, got {self.message!r}")
        if not (self.interval_s > 0 and math.isfinite(self.interval_s)):
            raise ValueError(f"heartbeat interval must be > 0, got {self.interval_s!r}")
        if not (self.threshold > 0 and math.isfinite(self.threshold)):
            raise ValueError(f"heartbeat threshold must be > 0, got {self.threshold!r}")
        if self.learn < 1 or self.hysteresis < 1:
            raise ValueError("heartbeat learn and hysteresis must be >= 1")
        if self.min_rtt_s < 0:
            raise ValueError("heartbeat min_rtt_s must be >= 0")


@dataclass(frozen=True)
class Transition:
    """A change of a target's fail-safe mode, with when and why."""

    time: float
    target: str
    active: bool
    reason: str


@dataclass
class _Sent:
    """One heartbeat in flight: when it left and when it times out (inf while learning)."""

    sent: float
    due: float
    verdict: bool = False  # True once it timed out or was superseded by a later verdict


@dataclass
class _Target:
    """Mutable state of one heartbeat entry."""

    entry: HeartbeatEntry
    next_send: float
    seq: int = 0
    outstanding: OrderedDict[int, _Sent] = field(default_factory=OrderedDict)
    waiting: dict[int, _Sent] = field(default_factory=dict)  # the outstanding ones without a verdict yet
    learned: list[float] = field(default_factory=list)
    rtt_avg: float | None = None
    rtt_last: float | None = None
    failed: bool = False  # failed by its own heartbeats
    forced: bool | None = None
    good_streak: int = 0
    sent: int = 0
    received: int = 0
    timeouts: int = 0
    late: int = 0
    transitions: int = 0
    last_reason: str = ""

    @property
    def limit(self) -> float:
        """RTT above which a reply is a failure, and after which a missing reply is a timeout."""
        base = max(self.rtt_avg or 0.0, self.entry.min_rtt_s)
        return base * self.entry.threshold


class HeartbeatManager:
    """The heartbeat table of one NIC and the fail-safe state it drives."""

    def __init__(self, entries: Iterable[HeartbeatEntry], now: float) -> None:
        self._targets: dict[str, _Target] = {}
        self._effective: dict[str, bool] = {}
        self._pending: list[Transition] = []
        self._events: deque[Transition] = deque(maxlen=MAX_EVENTS)
        self._now = now
        for entry in entries:
            self.add(entry, now)

    # -- table management -------------------------------------------------------------
    def add(self, entry: HeartbeatEntry, now: float) -> None:
        """Add (or replace) the entry for `entry.target`; its first heartbeat is due at `now`."""
        self._now = max(self._now, now)
        old = self._targets.get(entry.target)
        state = _Target(entry=entry, next_send=now)
        if old is not None:
            state.forced = old.forced
            state.seq = old.seq  # keep numbering going, so stray replies to old seqs stay unknown
        self._targets[entry.target] = state
        self._pending.extend(self._settle(now, "heartbeat entry added", entry.target))

    def remove(self, target: str) -> None:
        """Stop monitoring `target` (KeyError if unknown); a removed service leaves fail-safe."""
        del self._targets[target]
        reason = f"heartbeat for {target} removed"
        self._pending.extend(self._settle(self._now, reason, target, reason if target == PLATFORM else None))

    def targets(self) -> list[str]:
        """Names of the monitored targets."""
        return list(self._targets)

    def entry(self, target: str) -> HeartbeatEntry:
        """The configured entry of `target` (KeyError if unknown)."""
        return self._targets[target].entry

    def force(self, target: str, mode: str, now: float) -> list[Transition]:
        """Pin `target` to fail-safe ("on"), to normal ("off"), or back to detection ("auto")."""
        forced = {"on": True, "off": False, "auto": None}
        if mode not in forced:
            raise ValueError(f"mode must be on, off or auto, got {mode!r}")
        state = self._targets[target]
        state.forced = forced[mode]
        self._now = max(self._now, now)
        return self._drain() + self._settle(now, f"forced {mode}" if mode != "auto" else "back to auto", target)

    def fail(self, target: str, now: float, reason: str) -> list[Transition]:
        """Failure evidence for `target` seen at `now` (KeyError if unknown); returns the mode changes."""
        state = self._targets[target]
        self._now = max(self._now, now)
        return self._bad(state, now, reason)

    # -- the NIC loop's calls ---------------------------------------------------------
    def due(self, now: float) -> list[tuple[HeartbeatEntry, int]]:
        """Heartbeats to send now, as (entry, seq); marks them sent at `now`."""
        self._now = max(self._now, now)
        out: list[tuple[HeartbeatEntry, int]] = []
        for state in self._targets.values():
            if now < state.next_send:
                continue
            seq = state.seq
            state.seq = (seq + 1) % SEQ_MOD
            learning = state.rtt_avg is None
            due = math.inf if learning else now + state.limit
            state.outstanding[seq] = state.waiting[seq] = _Sent(sent=now, due=due)
            while len(state.outstanding) > MAX_OUTSTANDING:
                state.waiting.pop(state.outstanding.popitem(last=False)[0], None)
            state.sent += 1
            state.next_send += state.entry.interval_s
            if state.next_send <= now:  # the loop ran late: no burst of catch-up heartbeats
                state.next_send = now + state.entry.interval_s
            out.append((state.entry, seq))
        return out

    def on_reply(self, target: str, seq: int, now: float, payload: bytes | None = None) -> list[Transition]:
        """Feed a heartbeat reply received at `now`; returns the mode changes it causes."""
        self._now = max(self._now, now)
        state = self._targets.get(target)
        if state is None:
            return self._drain()
        sent = state.outstanding.pop(seq % SEQ_MOD, None)
        state.waiting.pop(seq % SEQ_MOD, None)
        if sent is None or now < sent.sent:
            return self._drain()  # unknown, duplicate, or from the future: ignore
        rtt = now - sent.sent
        state.received += 1
        state.rtt_last = rtt
        entry = state.entry
        if sent.verdict:
            state.late += 1
            return self._drain()
        self._supersede(state, sent.sent)
        wrong = entry.expect is not None and payload is not None and entry.expect not in payload
        if state.rtt_avg is None:  # learning
            if not wrong:
                state.learned.append(rtt)
                if len(state.learned) >= entry.learn:
                    state.rtt_avg = sum(state.learned) / len(state.learned)
                    state.learned.clear()
                    log.info("heartbeat %s learned RTT_avg %.3f ms", target, state.rtt_avg * 1e3)
            return self._drain()
        base = max(state.rtt_avg, entry.min_rtt_s)
        ratio = rtt / base
        if wrong:
            return self._bad(state, now, f"unexpected reply {payload[:32]!r}")
        if ratio > entry.threshold:
            return self._bad(state, now, f"rtt {rtt * 1e3:.2f} ms / avg {base * 1e3:.2f} ms = {ratio:.1f} > {entry.threshold:g}")
        return self._good(state, now, rtt)

    def poll(self, now: float) -> list[Transition]:
        """Declare timeouts of heartbeats unanswered by `now`; returns the mode changes."""
        self._now = max(self._now, now)
        out = self._drain()
        for state in list(self._targets.values()):
            for seq, sent in list(state.waiting.items()):
                if now < sent.due:
                    continue
                sent.verdict = True
                del state.waiting[seq]
                state.timeouts += 1
                out += self._bad(state, now, f"timeout after {state.limit * 1e3:.2f} ms")
        return out

    def next_deadline(self) -> float:
        """Earliest time at which due() or poll() has work (inf if none)."""
        if self._pending:
            return self._now
        times = [s.next_send for s in self._targets.values()]
        times += [o.due for s in self._targets.values() for o in s.waiting.values()]
        return min(times, default=math.inf)

    # -- queries ----------------------------------------------------------------------
    def in_failsafe(self, target: str) -> bool:
        """True if `target` failed itself, or "platform" failed, or it is forced on.

        A service with no heartbeat entry of its own follows the platform (no Transition is
        emitted for it: only monitored targets get transitions).
        """
        return self._effective_of(target)

    def status(self) -> dict[str, dict]:
        """Per target: mode, rtt_last_ms, rtt_avg_ms, sent, received, transitions and more."""
        out: dict[str, dict] = {}
        for name, s in self._targets.items():
            e = s.entry
            if self._effective_of(name):
                mode = "failsafe"
            elif s.rtt_avg is None:
                mode = "learning"
            else:
                mode = "normal"
            out[name] = {
                "mode": mode,
                "self_failed": s.failed,
                "forced": {True: "on", False: "off", None: "auto"}[s.forced],
                "message": e.message,
                "interval_s": e.interval_s,
                "threshold": e.threshold,
                "rtt_last_ms": None if s.rtt_last is None else round(s.rtt_last * 1e3, 4),
                "rtt_avg_ms": None if s.rtt_avg is None else round(s.rtt_avg * 1e3, 4),
                "sent": s.sent,
                "received": s.received,
                "timeouts": s.timeouts,
                "late": s.late,
                "transitions": s.transitions,
                "reason": s.last_reason,
            }
        return out

    def events(self, since: float = -math.inf) -> list[Transition]:
        """Transitions (the last MAX_EVENTS) with time >= `since`, oldest first."""
        return [t for t in self._events if t.time >= since]

    # -- internals --------------------------------------------------------------------
    def _supersede(self, state: _Target, sent_at: float) -> None:
        """A reply gives its verdict: older heartbeats still waiting become late, not timeouts."""
        for seq in [q for q, other in state.waiting.items() if other.sent <= sent_at]:
            state.waiting.pop(seq).verdict = True

    def _bad(self, state: _Target, now: float, reason: str) -> list[Transition]:
        """A failed heartbeat: fail-safe on (if not already), recovery count reset."""
        state.good_streak = 0
        if not state.failed:
            state.failed = True
            state.last_reason = reason
            log.warning("heartbeat %s failed: %s", state.entry.target, reason)
        return self._drain() + self._settle(now, reason, state.entry.target)

    def _good(self, state: _Target, now: float, rtt: float) -> list[Transition]:
        """A healthy reply: feeds RTT_avg when normal, counts towards recovery when failed."""
        if not state.failed:
            assert state.rtt_avg is not None
            state.rtt_avg += EWMA_WEIGHT * (rtt - state.rtt_avg)
            return self._drain()
        state.good_streak += 1
        if state.good_streak < state.entry.hysteresis:
            return self._drain()
        state.failed = False
        state.good_streak = 0
        reason = f"rtt back under threshold for {state.entry.hysteresis} heartbeats"
        state.last_reason = reason
        log.warning("heartbeat %s recovered", state.entry.target)
        return self._drain() + self._settle(now, reason, state.entry.target)

    def _effective_of(self, target: str) -> bool:
        state = self._targets.get(target)
        if state is not None and state.forced is not None:
            return state.forced
        own = state is not None and state.failed
        if target == PLATFORM:
            return own
        platform = self._targets.get(PLATFORM)
        return own or (platform is not None and platform.failed)

    def _settle(self, now: float, reason: str, cause: str, others: str | None = None) -> list[Transition]:
        """Compare every target's effective mode with the last one reported; emit the changes.

        `cause` is the target whose state just changed and gets `reason`; every other target
        that changes with it does so because of the platform, and gets `others` (default:
        "platform failed" / "platform recovered").
        """
        out: list[Transition] = []
        order = sorted(self._targets, key=lambda n: n != PLATFORM)  # platform first
        for name in order:
            active = self._effective_of(name)
            if self._effective.get(name, False) == active:
                self._effective[name] = active
                continue
            self._effective[name] = active
            state = self._targets[name]
            own = name == cause and (state.forced is not None or state.failed == active or name == PLATFORM)
            why = reason if own else others or ("platform failed" if active else "platform recovered")
            out.append(self._record(Transition(now, name, active, why)))
        for name in [n for n in self._effective if n not in self._targets]:
            if self._effective.pop(name) and not self._effective_of(name):
                out.append(self._record(Transition(now, name, False, reason)))
        return out

    def _record(self, t: Transition) -> Transition:
        state = self._targets.get(t.target)
        if state is not None:
            state.transitions += 1
        self._events.append(t)
        return t

    def _drain(self) -> list[Transition]:
        out, self._pending = self._pending, []
        return out
