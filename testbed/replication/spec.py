"""`replicas:` on an experiment's service entry: one service on hosts in several sites, each with a role.

    services:
      - name: echo
        replicas:                        # instead of `host`: every replica's host and role
          - {host: r1, role: primary}    # exactly one primary
          - {host: r2, role: secondary}
          - {host: r3, role: backup}     # the one that takes over when the primary is lost
        sync: {period: 1s}               # copy the primary's state_dir to every replica this often
        follow: ue1                      # the replica at the site ue1 moves to becomes primary
        migration: proactive             # proactive (replicas run, kept in sync) | reactive (only the primary
                                         # runs; a move starts the destination, freezes the old one, copies,
                                         # switches, stops it)
        state_dir: /srv/state            # (or the image's service.yaml's)

The replicas' hosts must be `anycast` hosts sharing one address (the service's): the controller
steers it to the primary. Every other key is the ordinary service entry's, applied to each
replica. A variant's `replication:` key (`proactive`, `reactive` or `off`: nothing follows the
user) overrides `migration` for every replicated service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from testbed.replication.manager import PRIMARY, ROLES

MIGRATIONS = ("proactive", "reactive")
VARIANT_MODES = (*MIGRATIONS, "off")
_OWN_KEYS = ("replicas", "sync", "follow", "migration")


@dataclass(frozen=True)
class ReplicaSetSpec:
    """A replicated service: its address, its replicas (host, role), sync period, who it follows, how."""

    name: str
    ip: str
    replicas: tuple[tuple[str, str], ...]
    period_s: float | None = None
    follow: str | None = None
    migration: str = "proactive"
    state_dir: str | None = None

    @property
    def primary(self) -> str:
        return next(h for h, r in self.replicas if r == PRIMARY)


def expand_services(checker: Any, items: list, variants: tuple) -> tuple[tuple, tuple[ReplicaSetSpec, ...]]:
    """Every service entry as ServiceRuns (a replicated one gives one per replica), and the replica sets."""
    services: list = []
    sets: list[ReplicaSetSpec] = []
    for i, item in enumerate(items):
        path = f"services[{i}]"
        if not (isinstance(item, dict) and "replicas" in item):
            services.append(checker.service(item, path, variants))
            continue
        rset, runs = _replicated(checker, item, path, variants)
        services += runs
        sets.append(rset)
    return tuple(services), tuple(sets)


def _replicated(checker: Any, item: dict, path: str, variants: tuple) -> tuple[ReplicaSetSpec, list]:
    v = checker.v
    if "host" in item:
        raise v.error(f"{path}.host", "a replicated service names its hosts under `replicas`, not `host`")
    entries = v.sequence(item["replicas"], f"{path}.replicas")
    if not entries:
        raise v.error(f"{path}.replicas", "needs at least one replica")
    replicas: list[tuple[str, str]] = []
    for j, entry in enumerate(entries):
        where = f"{path}.replicas[{j}]"
        d = v.mapping(entry, where, {"host", "role"}, {"host", "role"})
        host = checker.host(d["host"], f"{where}.host")
        if host in [h for h, _ in replicas]:
            raise v.error(f"{where}.host", f"{host!r} has a replica already")
        replicas.append((host, v.choice(d["role"], f"{where}.role", ROLES)))
    primaries = [h for h, r in replicas if r == PRIMARY]
    if len(primaries) != 1:
        raise v.error(f"{path}.replicas", f"expected exactly one primary, got {len(primaries)}"
                                          + (f" ({', '.join(primaries)})" if primaries else ""))
    ips = {h: checker.hosts[h].ip.split("/")[0] for h, _ in replicas}
    ip = ips[primaries[0]]
    for j, (host, _) in enumerate(replicas):
        if len(replicas) > 1 and (not checker.hosts[host].anycast or ips[host] != ip):
            raise v.error(f"{path}.replicas[{j}].host", f"{host!r} must be an anycast host with the primary's "
                                                        f"address {ip}, so the controller can steer it")
    period = None
    if "sync" in item:
        d = v.mapping(item["sync"], f"{path}.sync", {"period"}, {"period"})
        period = v.positive_seconds(d["period"], f"{path}.sync.period")
    follow = None
    if "follow" in item:
        follow = checker.host(item["follow"], f"{path}.follow")
        if not checker.hosts[follow].device:
            raise v.error(f"{path}.follow", f"{follow!r} is not an end device (`device: true` in the topology)")
    migration = v.choice(item.get("migration", MIGRATIONS[0]), f"{path}.migration", MIGRATIONS)
    plain = {k: x for k, x in item.items() if k not in _OWN_KEYS}
    runs = [checker.service({**plain, "host": host}, path, variants) for host, _ in replicas]
    state_dir = runs[0].state_dir
    if (period is not None or migration == "reactive") and state_dir is None:
        raise v.error(f"{path}.sync" if period is not None else f"{path}.migration",
                      f"copying state needs a state_dir (none for {runs[0].name!r} here or in its image's service.yaml)")
    rset = ReplicaSetSpec(runs[0].name, ip, tuple(replicas), period, follow, migration, state_dir)
    return rset, runs
