"""Decides when each fault is applied and undone, from probe progress (`# sent N`) and elapsed time (pure logic)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from testbed.experiment.spec import FaultSpec
from testbed.experiment.values import Trigger


@dataclass(frozen=True)
class Due:
    """Fault number `index` must be applied or undone now."""

    index: int
    action: str  # "apply" | "undo"


@dataclass
class _State:
    applied_at: float | None = None  # elapsed seconds when applied
    undone: bool = False


class FaultSchedule:
    """Tracks which faults are due; time is seconds elapsed since the traffic started, passed in."""

    def __init__(self, faults: Sequence[FaultSpec], default_probe: str | None, undoable: Sequence[bool] | None = None):
        self.faults = list(faults)
        self.default_probe = default_probe
        self.undoable = list(undoable) if undoable is not None else [f.has_undo for f in self.faults]
        self.state = [_State() for _ in self.faults]
        self.sent: dict[str, int] = {}

    def _probe(self, f: FaultSpec) -> str | None:
        return f.probe or self.default_probe

    def _reached(self, trig: Trigger, f: FaultSpec, elapsed: float) -> bool:
        if trig.packet is not None:
            return self.sent.get(self._probe(f) or "", 0) >= trig.packet
        return elapsed >= (trig.time_s or 0.0)

    def on_sent(self, probe: str, n: int, elapsed: float) -> list[Due]:
        """Probe `probe` reports request `n` sent."""
        self.sent[probe] = max(self.sent.get(probe, 0), n)
        return self.poll(elapsed)

    def poll(self, elapsed: float) -> list[Due]:
        """Faults whose apply or undo is due at `elapsed`; each is returned once."""
        due: list[Due] = []
        for i, (f, s) in enumerate(zip(self.faults, self.state)):
            if s.applied_at is None and self._reached(f.at, f, elapsed):
                s.applied_at = elapsed
                due.append(Due(i, "apply"))
            if s.applied_at is not None and not s.undone and self.undoable[i] and self._undo_due(f, s, elapsed):
                s.undone = True
                due.append(Due(i, "undo"))
        return due

    def _undo_due(self, f: FaultSpec, s: _State, elapsed: float) -> bool:
        if f.duration_s is not None:
            return elapsed >= (s.applied_at or 0.0) + f.duration_s
        if f.until is not None:
            return self._reached(f.until, f, elapsed)
        return False

    def next_deadline(self) -> float:
        """The earliest elapsed time a time-based apply or undo falls due (inf if none)."""
        times = [math.inf]
        for i, (f, s) in enumerate(zip(self.faults, self.state)):
            if s.applied_at is None and f.at.time_s is not None:
                times.append(f.at.time_s)
            elif s.applied_at is not None and not s.undone and self.undoable[i]:
                if f.duration_s is not None:
                    times.append(s.applied_at + f.duration_s)
                elif f.until is not None and f.until.time_s is not None:
                    times.append(f.until.time_s)
        return min(times)

    def leftovers(self) -> list[Due]:
        """Undos still owed at the end of the run (applied faults with an undo that did not fall due)."""
        out = []
        for i, s in enumerate(self.state):
            if s.applied_at is not None and not s.undone and self.undoable[i] and self.faults[i].has_undo:
                s.undone = True
                out.append(Due(i, "undo"))
        return out

    def never_applied(self) -> list[int]:
        return [i for i, s in enumerate(self.state) if s.applied_at is None]
