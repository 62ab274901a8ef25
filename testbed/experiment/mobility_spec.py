"""The experiment's `schedule:` entries that are not faults: a user's `move` and a service's traffic `switch`.

    schedule:
      - {kind: move, host: ue1, to: edge2, at: 10s, gap: 50ms}   # re-attach end device ue1 to edge2's switch,
                                                                  # attached nowhere for `gap` (default 0)
      - {kind: switch, service_ip: 10.0.0.50, from: meca, to: mecb, mode: make-before-break, at: 5s}

A `move` takes a host marked `device: true` in the topology to another site (each move of a
host from where the previous one left it: a route through several sites is several entries).
A `switch` moves the traffic for an address shared by `anycast` hosts from one of them to
another through the controller's northbound `steer` (so the topology's controller must be the
learning app); `from` is needed on an address's first switch (the runner steers the address to
it before the traffic starts), later ones start where the previous one ended. `mode`:
`make-before-break` (default; the destination instance is ready-checked, the new path made, the
old one removed, then the old instance stopped) or `break-before-make` (the old instance stopped
and its path removed first, then the destination instance started and ready-checked, then its
path made: the order of a migration whose rules change only once it is complete). A variant's
`switch:` key overrides every switch's mode. `at` is a time or `packet N`, as for faults.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from testbed.experiment.values import Trigger

SWITCH_MODES = ("make-before-break", "break-before-make")
_MOVE_KEYS = {"kind", "host", "to", "at", "gap", "probe"}
_SWITCH_KEYS = {"kind", "service_ip", "from", "to", "mode", "at", "probe"}


@dataclass(frozen=True)
class ScheduledSpec:
    """What the fault schedule needs of any entry: when, and that it is never undone."""

    kind: str
    mode: str
    at: Trigger
    probe: str | None = None
    until: None = None
    duration_s: None = None

    @property
    def has_undo(self) -> bool:
        return False


@dataclass(frozen=True)
class MoveSpec(ScheduledSpec):
    """End device `host` re-attaches from `src` to site `to`, attached nowhere for `gap_s`."""

    host: str = ""
    src: str = ""
    to: str = ""
    gap_s: float = 0.0

    @property
    def target(self) -> str:
        return self.host


@dataclass(frozen=True)
class SwitchSpec(ScheduledSpec):
    """The traffic for `service_ip` moves from anycast host `src` to `to` (mode: make/break order)."""

    service_ip: str = ""
    src: str = ""
    to: str = ""
    first: bool = False  # the address's first switch: the runner steers it to `src` before traffic

    @property
    def target(self) -> str:
        return self.service_ip


def parse_schedule(checker: Any, items: list, probes: dict) -> tuple[ScheduledSpec, ...]:
    """The `schedule` list, each entry checked against the topology (SpecError naming the path)."""
    v = checker.v
    at_site = {h.name: h.site for h in checker.topo.hosts()}  # where each device is, entry after entry
    serving: dict[str, str] = {}  # service ip -> the host its traffic goes to, entry after entry
    out: list[ScheduledSpec] = []
    for i, item in enumerate(items):
        path = f"schedule[{i}]"
        kind = v.choice(item.get("kind") if isinstance(item, dict) else None, f"{path}.kind", ("move", "switch"))
        if kind == "move":
            out.append(_move(checker, item, path, probes, at_site))
        else:
            out.append(_switch(checker, item, path, probes, serving))
    return tuple(out)


def _when(checker: Any, d: dict, path: str, probes: dict) -> tuple[Trigger, str | None]:
    probe = checker._fault_probe(d, path, probes)  # noqa: SLF001 (the faults' own trigger rules)
    at = checker._trigger(d["at"], f"{path}.at", probe)  # noqa: SLF001
    checker._within_traffic(at, f"{path}.at")  # noqa: SLF001
    return at, probe.name if probe else None


def _move(checker: Any, item: object, path: str, probes: dict, at_site: dict[str, str]) -> MoveSpec:
    v = checker.v
    d = v.mapping(item, path, _MOVE_KEYS, {"kind", "host", "to", "at"})
    host = checker.host(d["host"], f"{path}.host")
    spec = checker.hosts[host]
    if not spec.device:
        raise v.error(f"{path}.host", f"{host!r} is not an end device: only hosts marked `device: true` in "
                                      f"topology {checker.topo.name!r} move")
    to = v.text(d["to"], f"{path}.to")
    if to not in checker.sites:
        raise v.error(f"{path}.to", f"no site {to!r} in topology {checker.topo.name!r} "
                                    f"(sites: {', '.join(sorted(checker.sites))})")
    if to == at_site[host]:
        raise v.error(f"{path}.to", f"{host} is at {to} already at this point of the schedule")
    gap = v.seconds(d.get("gap", 0), f"{path}.gap")
    at, probe = _when(checker, d, path, probes)
    src, at_site[host] = at_site[host], to
    return MoveSpec("move", "handover", at, probe, host=host, src=src, to=to, gap_s=gap)


def _switch(checker: Any, item: object, path: str, probes: dict, serving: dict[str, str]) -> SwitchSpec:
    v = checker.v
    d = v.mapping(item, path, _SWITCH_KEYS, {"kind", "service_ip", "to", "at"})
    if not checker.topo.controller.is_learning:
        raise v.error(f"{path}.kind", f"a switch needs the learning controller's steer; topology "
                                      f"{checker.topo.name!r} runs {checker.topo.controller.app}")
    try:
        ip = str(ipaddress.IPv4Address(d["service_ip"]))
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise v.error(f"{path}.service_ip", f"expected an IPv4 address, got {d['service_ip']!r}") from None
    sharing = sorted(h.name for h in checker.topo.hosts() if h.anycast and h.ip.split("/")[0] == ip)
    if len(sharing) < 2:
        raise v.error(f"{path}.service_ip", f"{ip} is not shared by two anycast hosts in topology "
                                            f"{checker.topo.name!r}")
    ends = {}
    for key in ("from", "to"):
        if key in d:
            name = checker.host(d[key], f"{path}.{key}")
            if name not in sharing:
                raise v.error(f"{path}.{key}", f"{name!r} does not serve {ip} (hosts that do: {', '.join(sharing)})")
            ends[key] = name
    first = ip not in serving
    if "from" not in ends:
        if first:
            raise v.error(f"{path}.from", f"is required on the first switch of {ip} (where its traffic starts)")
        ends["from"] = serving[ip]
    elif not first and ends["from"] != serving[ip]:
        raise v.error(f"{path}.from", f"the traffic for {ip} goes to {serving[ip]} at this point, not {ends['from']}")
    if ends["from"] == ends["to"]:
        raise v.error(f"{path}.to", f"the traffic for {ip} goes to {ends['to']} already")
    mode = v.choice(d.get("mode", SWITCH_MODES[0]), f"{path}.mode", SWITCH_MODES)
    at, probe = _when(checker, d, path, probes)
    serving[ip] = ends["to"]
    return SwitchSpec("switch", mode, at, probe, service_ip=ip, src=ends["from"], to=ends["to"], first=first)
