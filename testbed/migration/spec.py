"""The experiment's `migrations:` entries as frozen data, validated before anything starts.

    migrations:
      - {kind: place, service: counter, host: mec1, at: 0s}     # the service's address steered to mec1
      - {kind: migrate, mode: state-transfer, service: counter, from: mec1, to: mec2,
         at: packet 50, wan_rate: 10}                          # rate (Mbit/s) of the WAN link between them first

`mode` is `cold` (the destination starts from its image, state lost), `state-transfer` (the
service's `state_dir` is copied over the emulated network; application-level, labelled so) or
`live` (CRIU), which is refused, with the reason `testbed doctor` gives, where a real container
checkpoint/restore fails. `from` and `to` must be anycast twins (hosts sharing the service's
address, `anycast: true`): the controller moves the address. `at` is a time or `packet N`, as
for faults. Each entry runs in the fault schedule.

      - {kind: standby, service: counter, from: mec1, to: sb1, interval: 100ms, detect: 3,
         takeover: true, at: 0s}   # checkpointed standby (testbed/migration/standby.py), in state-transfer mode

A standby's state is copied every `interval`; after `detect` intervals without a checkpoint the
primary counts as lost and a standby with `takeover: true` restores the latest copy and takes the
address (a `host_down` fault on the primary is the loss). It is stopped at the end of the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from testbed.experiment.values import Trigger

KINDS = ("place", "migrate", "standby")
_KEYS = {"place": {"kind", "service", "host", "at", "probe"},
         "migrate": {"kind", "mode", "service", "from", "to", "at", "probe", "wan_rate"},
         "standby": {"kind", "service", "from", "to", "at", "probe", "interval", "detect", "takeover"}}
_REQUIRED = {"place": ("host",), "migrate": ("mode", "from", "to"), "standby": ("from", "to", "interval")}


@dataclass(frozen=True)
class MigrationSpec:
    """A `place` (address steered to `dst`) or a `migrate` of `service` from `src` to `dst` in `mode`."""

    kind: str
    mode: str
    at: Trigger
    service: str
    dst: str
    src: str = ""
    wan_rate_mbit: float | None = None
    probe: str | None = None
    interval_s: float | None = None  # standby: checkpoint interval
    detect: float = 3.0  # standby: intervals without a checkpoint before the primary counts as lost
    takeover: bool = False  # standby: restore and take the address when the primary is lost
    until: None = None
    duration_s: None = None

    @property
    def has_undo(self) -> bool:
        """Only a standby is undone (its agents stopped and its record written at the end of the run)."""
        return self.kind == "standby"

    @property
    def target(self) -> str:
        return f"{self.src}->{self.dst}" if self.src else self.dst


def parse_migrations(checker: Any, items: list, probes: dict) -> tuple[MigrationSpec, ...]:
    """Validate the `migrations:` list with the experiment's checker; SpecError names the path."""
    from testbed.migration.primitives import MODES, live_refusal

    v, out = checker.v, []
    for i, item in enumerate(items):
        path = f"migrations[{i}]"
        kind = v.choice(v.mapping(item, path, set().union(*_KEYS.values()), {"kind"})["kind"], f"{path}.kind", KINDS)
        d = v.mapping(item, path, _KEYS[kind], {"kind", "service", "at", *_REQUIRED[kind]})
        probe = checker._fault_probe(d, path, probes)
        at = checker._trigger(d["at"], f"{path}.at", probe)
        checker._within_traffic(at, f"{path}.at")
        service = v.text(d["service"], f"{path}.service")
        if kind == "place":
            host = _twin(checker, d["host"], f"{path}.host", service)
            out.append(MigrationSpec("place", "steer", at, service, host, probe=d.get("probe")))
            continue
        if kind == "standby":
            out.append(_standby(checker, d, path, at, service))
            continue
        mode = v.choice(d["mode"], f"{path}.mode", MODES)
        if mode == "live":
            raise v.error(f"{path}.mode", live_refusal() or "live migration unavailable")
        src = _twin(checker, d["from"], f"{path}.from", service)
        dst = _twin(checker, d["to"], f"{path}.to", service)
        if src == dst:
            raise v.error(f"{path}.to", "is the same host as from")
        if checker.hosts[src].ip.split("/")[0] != checker.hosts[dst].ip.split("/")[0]:
            raise v.error(f"{path}.to", f"{dst} does not share {src}'s address (re-pointing neighbours is not "
                                        "supported yet: make them anycast twins)")
        rate = v.number(d["wan_rate"], f"{path}.wan_rate", low=0, low_open=True) if "wan_rate" in d else None
        if rate is not None:
            sites = (checker.hosts[src].site, checker.hosts[dst].site)
            try:
                checker.topo.wan_link(*sites)
            except KeyError:
                raise v.error(f"{path}.wan_rate", f"no WAN link between {sites[0]} and {sites[1]}") from None
        if mode == "state-transfer":
            _needs_state(checker, src, service, f"{path}.service")
        out.append(MigrationSpec("migrate", mode, at, service, dst, src, rate, d.get("probe")))
    return tuple(out)


def _standby(checker: Any, d: dict, path: str, at: Trigger, service: str) -> MigrationSpec:
    v = checker.v
    src = _twin(checker, d["from"], f"{path}.from", service)
    dst = _twin(checker, d["to"], f"{path}.to", service)
    if src == dst:
        raise v.error(f"{path}.to", "is the same host as from")
    if checker.hosts[src].ip.split("/")[0] != checker.hosts[dst].ip.split("/")[0]:
        raise v.error(f"{path}.to", f"{dst} does not share {src}'s address (a standby takes the primary's)")
    _needs_state(checker, src, service, f"{path}.service")
    return MigrationSpec("standby", "state-transfer", at, service, dst, src, probe=d.get("probe"),
                         interval_s=v.positive_seconds(d["interval"], f"{path}.interval"),
                         detect=v.number(d.get("detect", 3), f"{path}.detect", low=1),
                         takeover=v.flag(d.get("takeover", False), f"{path}.takeover"))


def _twin(checker: Any, value: object, path: str, service: str) -> str:
    """A Docker host that can run the service (named in `services:` on it, or of the service's image)."""
    host = checker.host(value, path)
    spec = checker.hosts[host]
    if not spec.is_docker:
        raise checker.v.error(path, f"{host} is not a Docker host: services migrate between containers")
    if not getattr(spec, "anycast", False):
        raise checker.v.error(path, f"{host} is not marked anycast: true (the controller moves a shared address)")
    return host


def _needs_state(checker: Any, host: str, service: str, path: str) -> None:
    from testbed.experiment.service_defaults import resolve
    from testbed.experiment.spec import ServiceRun

    declared = [s for s in checker.services if s.host == host and s.name == service]
    svc = resolve(declared[0] if declared else ServiceRun(host, service), checker.hosts[host].image)
    if not svc.state_dir:
        raise checker.v.error(path, f"service {service!r} on {host} declares no state_dir to transfer")
