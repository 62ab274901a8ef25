"""The replica manager's logic (Farris et al.'s Migration and Replica Controller): roles, switches, syncs.

Plain Python with time passed in (`now`), so it is tested with a fake clock. A replicated service
has replicas on hosts in several sites, each `primary` (exactly one: it serves, and the
controller steers the service's address to it), `secondary` (running, kept in sync) or `backup`
(a secondary labelled for fault tolerance: it takes over when the primary is lost). Each method
returns the `Action`s the runtime (testbed/replication/runtime.py) carries out, in order:
`sync` (copy the primary's state to a replica), `steer` (the address to the new primary) and
`role` (a role changed: written to events). The manager never runs anything itself.

- `switch_to(host)`: make-before-break in the manager's terms: the new primary is synced from the
  old one first, then the traffic is steered, then the roles swap (the old primary takes the new
  one's former role, so a backup stays labelled).
- `on_move(device, site)`: a user moved: the replica at that site (if there is one and it is not
  the primary already) becomes primary.
- `on_primary_lost()`: the backup becomes primary (no sync: the old primary is gone); the lost
  host is `lost`; a secondary, if any, becomes the new backup.
- `due(now)`: the periodic syncs that fell due (primary to every live replica, each `period_s`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

PRIMARY, SECONDARY, BACKUP, LOST = "primary", "secondary", "backup", "lost"
ROLES = (PRIMARY, SECONDARY, BACKUP)


@dataclass(frozen=True)
class Action:
    """One thing for the runtime to do: `sync` src -> dst, `steer` to dst, or `role` of dst set to `role`."""

    kind: str  # "sync" | "steer" | "role"
    dst: str
    src: str | None = None
    role: str | None = None
    reason: str = ""


@dataclass
class ReplicaManager:
    """Roles of one replicated service's replicas (host -> role) and where each host is (host -> site)."""

    service: str
    roles: dict[str, str]
    sites: dict[str, str]
    period_s: float | None = None  # periodic sync; None: only at switches
    now: float = 0.0
    next_sync: float | None = field(default=None, init=False)
    history: list[tuple[float, Action]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        primaries = [h for h, r in self.roles.items() if r == PRIMARY]
        if len(primaries) != 1:
            raise ValueError(f"{self.service}: expected exactly one primary, got {len(primaries)}")
        bad = [f"{h}={r}" for h, r in self.roles.items() if r not in ROLES]
        if bad:
            raise ValueError(f"{self.service}: unknown role(s) {', '.join(bad)}")
        if self.period_s is not None:
            self.next_sync = self.now + self.period_s

    @property
    def primary(self) -> str:
        """The host that serves now."""
        return next(h for h, r in self.roles.items() if r == PRIMARY)

    def live(self) -> list[str]:
        """Replicas that are not lost, primary first."""
        return [self.primary] + sorted(h for h, r in self.roles.items() if r not in (PRIMARY, LOST))

    def _record(self, now: float, actions: list[Action]) -> list[Action]:
        self.history += [(now, a) for a in actions]
        return actions

    def switch_to(self, host: str, now: float, reason: str = "command") -> list[Action]:
        """Make `host` the primary: sync it from the old primary, steer, then swap roles."""
        if host not in self.roles:
            raise ValueError(f"{self.service}: no replica on {host} (replicas: {', '.join(sorted(self.roles))})")
        if self.roles[host] == LOST:
            raise ValueError(f"{self.service}: replica on {host} is lost")
        old = self.primary
        if host == old:
            return []
        former = self.roles[host]
        self.roles[host], self.roles[old] = PRIMARY, former
        return self._record(now, [Action("sync", host, src=old, reason=reason), Action("steer", host, reason=reason),
                                  Action("role", host, role=PRIMARY, reason=reason),
                                  Action("role", old, role=former, reason=reason)])

    def on_move(self, device: str, site: str, now: float) -> list[Action]:
        """User `device` is now at `site`: the replica there (if any) becomes primary."""
        here = sorted(h for h, s in self.sites.items() if s == site and self.roles.get(h) not in (None, LOST))
        if not here or self.primary in here:
            return []
        return self.switch_to(here[0], now, reason=f"{device} moved to {site}")

    def on_primary_lost(self, now: float) -> list[Action]:
        """The primary failed: the backup takes over (a secondary, if no backup); a secondary becomes the backup."""
        old = self.primary
        backups = sorted(h for h, r in self.roles.items() if r == BACKUP)
        secondaries = sorted(h for h, r in self.roles.items() if r == SECONDARY)
        if not backups and not secondaries:
            raise ValueError(f"{self.service}: primary {old} lost and no replica left to take over")
        new = (backups or secondaries)[0]
        self.roles[old], self.roles[new] = LOST, PRIMARY
        actions = [Action("steer", new, reason=f"primary {old} lost"),
                   Action("role", new, role=PRIMARY, reason=f"primary {old} lost"),
                   Action("role", old, role=LOST, reason="lost")]
        rest = [h for h in secondaries if h != new]
        if new in backups and rest:
            self.roles[rest[0]] = BACKUP
            actions.append(Action("role", rest[0], role=BACKUP, reason=f"{new} became primary"))
        return self._record(now, actions)

    def due(self, now: float) -> list[Action]:
        """The periodic syncs due at `now` (primary to every other live replica), at most one round per call."""
        if self.next_sync is None or self.period_s is None or now < self.next_sync:
            return []
        while self.next_sync <= now:
            self.next_sync += self.period_s
        src = self.primary
        return self._record(now, [Action("sync", h, src=src, reason="period") for h in self.live()[1:]])
