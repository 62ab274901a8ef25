"""Injects the experiment's faults into a running Testbed and takes them back (one class per fault kind).

Each fault's `apply(tb, now)` / `undo(tb, now)` returns a one-line detail for events.csv; the
runner writes the event. What each mode does:
  host_down kill     the host crashes: its interfaces go down at once (it answers nothing: no ICMP,
                     no RST, no ARP) and its containers are killed; the namespace holder (made
                     before the traffic starts) keeps the interfaces. Undo (`for`/`until`) boots it
                     again: fresh containers from their images, interfaces up, the experiment's
                     services started and ready-checked.
  host_down freeze   `docker pause` / `docker unpause` of the host's containers (cgroup freezer: the
                     kernel still answers ICMP and completes TCP handshakes, nothing in userspace runs).
  host_down isolate  every interface of the host down / up (link down, from outside the host).
  host_down site     every host of the site frozen (Docker) or isolated (namespace) and every WAN
                     link of the site down; undo reverses all of it.
  service_down       the service fails while the host stays up: kill -9 of its main command (PID in
                     /run/testbed/main.pid), or its own container killed; undo starts it again and
                     waits until it is ready (testbed/experiment/services.py).
  delay app          write the delay to the file the service declares as `delay_control`; undo
                     writes 0. Both act from the host through /proc/<container pid>/ (root file
                     system, PID namespace): well under a millisecond, where a `docker exec` took
                     0.1-0.6 s on a loaded machine and the fault's effect then lagged by as much.
  delay cpu          `docker update` CPU quota to `cpu` cores; undo restores the topology's limit.
  delay link         the host's access link gets `delay` added in both directions (the runner asks
                     the Testbed to emulate that link through `shaped_access`); undo restores it.
  network            a WAN link's shape changed (delay, loss, rate) or taken down; undo restores
                     the topology's shape / brings it up.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Any, Callable, Sequence

from testbed.errors import TestbedError
from testbed.experiment import services as services_mod
from testbed.experiment.spec import FaultSpec, ServiceRun
from testbed.topology.model import Shape

log = logging.getLogger(__name__)


def pick_service(tb: Any, spec: FaultSpec, services: Sequence[ServiceRun]) -> ServiceRun:
    """The service a service_down or delay app fault acts on: named by `service`, else the host's first."""
    on_host = [s for s in services if s.host == spec.host]
    if spec.service is not None:
        on_host = [s for s in on_host if s.name == spec.service] or [ServiceRun(spec.host or "", spec.service)]
    if on_host:
        return on_host[0]
    image = tb.topo.host(spec.host).image or ""
    return ServiceRun(spec.host or "", image.rsplit("/", 1)[-1].split(":")[0] or "main")


class Fault(ABC):
    """One fault of the experiment: knows its spec and how to apply and undo itself."""

    def __init__(self, spec: FaultSpec) -> None:
        self.spec = spec
        self.applied = False

    @property
    def target(self) -> str:
        return self.spec.target

    @property
    def can_undo(self) -> bool:
        return True

    @abstractmethod
    def apply(self, tb: Any, now: float) -> str:
        """Inject the fault; returns what was done."""

    @abstractmethod
    def undo(self, tb: Any, now: float) -> str:
        """Take the fault back; returns what was done."""


class HostKill(Fault):
    """The host crashes (silent at once, containers killed); undo boots it again and restarts its services."""

    def __init__(self, spec: FaultSpec, restart: Callable[[str], None]) -> None:
        super().__init__(spec)
        self.restart = restart

    def apply(self, tb: Any, now: float) -> str:
        tb.node(self.spec.host).crash()
        return "interfaces down, containers killed"

    def undo(self, tb: Any, now: float) -> str:
        tb.node(self.spec.host).recover()
        self.restart(self.spec.host)
        return "host restarted from its image, services ready"


class HostFreeze(Fault):
    """The host hangs: every process of its containers is frozen."""

    def apply(self, tb: Any, now: float) -> str:
        tb.node(self.spec.host).freeze()
        return "docker pause"

    def undo(self, tb: Any, now: float) -> str:
        tb.node(self.spec.host).thaw()
        return "docker unpause"


class HostIsolate(Fault):
    """The host drops off the network: all its interfaces go down."""

    def apply(self, tb: Any, now: float) -> str:
        tb.set_interfaces(self.spec.host, False)
        return "interfaces down"

    def undo(self, tb: Any, now: float) -> str:
        tb.set_interfaces(self.spec.host, True)
        return "interfaces up"


class SiteDown(Fault):
    """A whole site fails: its hosts frozen or isolated and its WAN links down."""

    def _parts(self, tb: Any) -> tuple[list[Any], list[str]]:
        site = tb.topo.site(self.spec.site)
        links = [tb.wan_link_id(w.a, w.b) for w in tb.topo.wan if self.spec.site in (w.a, w.b)]
        return list(site.hosts), links

    @staticmethod
    def _each(steps: list[tuple[str, Callable[[], Any]]]) -> None:
        """Run every step even when one fails (a killed host must not keep the rest of the site up)."""
        failed = []
        for what, step in steps:
            try:
                step()
            except Exception as exc:
                failed.append(f"{what}: {exc}")
        if failed:
            raise TestbedError("; ".join(failed))

    @staticmethod
    def _host_step(tb: Any, h: Any, down: bool) -> tuple[str, Callable[[], Any]]:
        if h.is_docker:
            node = tb.node(h.name)
            return h.name, (node.freeze if down else node.thaw)
        return h.name, lambda: tb.set_interfaces(h.name, not down)

    def apply(self, tb: Any, now: float) -> str:
        hosts, links = self._parts(tb)
        self._each([self._host_step(tb, h, True) for h in hosts] +
                   [(link, lambda link=link: tb.links.set_up(link, False)) for link in links])
        return f"hosts {','.join(h.name for h in hosts)} down; links {','.join(links) or '-'} down"

    def undo(self, tb: Any, now: float) -> str:
        hosts, links = self._parts(tb)
        self._each([(link, lambda link=link: tb.links.set_up(link, True)) for link in links] +
                   [self._host_step(tb, h, False) for h in hosts])
        return "site back up"


class ServiceDown(Fault):
    """The service process dies while its host stays up; undo starts it again and waits until it is ready."""

    def __init__(self, spec: FaultSpec, services: Sequence[ServiceRun] = ()) -> None:
        super().__init__(spec)
        self.services = tuple(services)

    def apply(self, tb: Any, now: float) -> str:
        return services_mod.kill(tb, pick_service(tb, self.spec, self.services))

    def undo(self, tb: Any, now: float) -> str:
        svc = pick_service(tb, self.spec, self.services)
        services_mod.restart(tb, svc)
        return f"{svc.name} restarted, ready"


class AppDelay(Fault):
    """The service answers late: the processing delay in its `delay_control` file is set."""

    def __init__(self, spec: FaultSpec, services: Sequence[ServiceRun] = ()) -> None:
        super().__init__(spec)
        self.services = tuple(services)

    def apply(self, tb: Any, now: float) -> str:
        services_mod.set_delay(tb, pick_service(tb, self.spec, self.services), self.spec.delay_ms or 0.0)
        return f"processing delay {self.spec.delay_ms:g} ms"

    def undo(self, tb: Any, now: float) -> str:
        services_mod.set_delay(tb, pick_service(tb, self.spec, self.services), 0.0)
        return "processing delay 0 ms"


class CpuDelay(Fault):
    """The host is starved of CPU: its container's CPU quota is cut."""

    def apply(self, tb: Any, now: float) -> str:
        tb.node(self.spec.host).update_resources(cpu=self.spec.cpu)
        return f"cpu quota {self.spec.cpu:g} cores"

    def undo(self, tb: Any, now: float) -> str:
        cpu = tb.topo.host(self.spec.host).cpu
        tb.node(self.spec.host).update_resources(cpu=cpu or 0)
        return f"cpu quota {cpu:g} cores" if cpu else "cpu quota unlimited"


class LinkDelay(Fault):
    """The host's access link gets slower in both directions."""

    def apply(self, tb: Any, now: float) -> str:
        orig = tb.topo.host(self.spec.host).access
        shape = replace(orig, delay_ms=orig.delay_ms + (self.spec.delay_ms or 0.0))
        tb.links.shape(tb.access_link_id(self.spec.host), forward=shape, reverse=shape)
        return f"access link +{self.spec.delay_ms:g} ms each way"

    def undo(self, tb: Any, now: float) -> str:
        orig = tb.topo.host(self.spec.host).access
        tb.links.shape(tb.access_link_id(self.spec.host), forward=orig, reverse=orig)
        return "access link restored"


def degrade(shape: Shape, spec: FaultSpec) -> Shape:
    """`shape` with the fault's delay, loss and rate put in place of the topology's."""
    changes: dict[str, float] = {}
    if spec.delay_ms is not None:
        changes["delay_ms"] = spec.delay_ms
    if spec.loss_pct is not None:
        changes["loss_pct"] = spec.loss_pct
    if spec.rate_mbit is not None:
        changes["bw_mbit"] = spec.rate_mbit
    return replace(shape, **changes)


class NetworkFault(Fault):
    """A WAN link degrades (delay, loss, rate) or goes down."""

    def _link(self, tb: Any) -> tuple[str, Any]:
        a, b = self.spec.link or ("", "")
        return tb.wan_link_id(a, b), tb.topo.wan_link(a, b)

    def apply(self, tb: Any, now: float) -> str:
        link_id, wan = self._link(tb)
        if self.spec.down:
            tb.links.set_up(link_id, False)
            return f"{link_id} down"
        tb.links.shape(link_id, forward=degrade(wan.forward, self.spec), reverse=degrade(wan.reverse, self.spec))
        return f"{link_id} " + ", ".join(f"{k}={v:g}" for k, v in (("delay_ms", self.spec.delay_ms),
                                         ("loss_pct", self.spec.loss_pct), ("rate_mbit", self.spec.rate_mbit))
                                         if v is not None)

    def undo(self, tb: Any, now: float) -> str:
        link_id, wan = self._link(tb)
        if self.spec.down:
            tb.links.set_up(link_id, True)
            return f"{link_id} up"
        tb.links.shape(link_id, forward=wan.forward, reverse=wan.reverse)
        return f"{link_id} restored"


def make_fault(spec: FaultSpec, restart: Callable[[str], None], services: Sequence[ServiceRun] = ()) -> Fault:
    """The Fault object for a validated FaultSpec; `restart(host)` starts a recovered host's services again."""
    if spec.kind in ("place", "migrate", "standby"):  # `migrations:` entries: testbed/migration/actions.py
        from testbed.migration.actions import make_migration_action
        return make_migration_action(spec, services)
    if spec.kind in ("move", "switch"):  # schedule entries, not faults: testbed/experiment/mobility_actions.py
        from testbed.experiment.mobility_actions import make_action
        return make_action(spec, services)
    if spec.kind == "host_down":
        if spec.mode == "kill":
            return HostKill(spec, restart)
        return {"freeze": HostFreeze, "isolate": HostIsolate, "site": SiteDown}[spec.mode](spec)
    if spec.kind == "service_down":
        return ServiceDown(spec, services)
    if spec.kind == "delay":
        if spec.mode == "app":
            return AppDelay(spec, services)
        return {"cpu": CpuDelay, "link": LinkDelay}[spec.mode](spec)
    if spec.kind == "network":
        return NetworkFault(spec)
    raise ValueError(f"unknown fault kind {spec.kind!r}")
