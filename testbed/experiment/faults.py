"""Injects the experiment's faults into a running Testbed and takes them back (one class per fault kind).

Each fault's `apply(tb, now)` / `undo(tb, now)` returns a one-line detail for events.csv; the
runner writes the event. What each mode does:
  host_down kill     `docker kill` the host's container. No undo: a killed container loses its
                     network namespace and with it the interfaces the testbed gave it (the spec
                     rejects `for`/`until` on kill; use freeze or isolate for a host that comes back).
  host_down freeze   `docker pause` / `docker unpause` (cgroup freezer: the kernel still holds the
                     interfaces, but nothing in the container runs).
  host_down isolate  every interface of the host down / up.
  host_down site     every host of the site frozen (Docker) or isolated (namespace) and every WAN
                     link of the site down; undo reverses all of it.
  service_down       kill -9 the echo PID from /run/echo/pid inside the container (the host stays
                     up); undo starts the service again.
  delay app          write the delay to /run/echo/delay_ms; undo writes 0.
                     Both act from the host through /proc/<container pid>/ (root file system, PID
                     namespace): well under a millisecond, where a `docker exec` took 0.1-0.6 s on a
                     loaded machine and the fault's effect then lagged its event time by as much.
  delay cpu          `docker update` CPU quota to `cpu` cores; undo restores the topology's limit.
  delay link         the host's access link gets `delay` added in both directions (the runner asks
                     the Testbed to emulate that link through `shaped_access`); undo restores it.
  network            a WAN link's shape changed (delay, loss, rate) or taken down; undo restores
                     the topology's shape / brings it up.
"""

from __future__ import annotations

import logging
import os
import signal
from abc import ABC, abstractmethod
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from testbed.errors import TestbedError
from testbed.experiment.spec import FaultSpec
from testbed.topology.model import Shape

log = logging.getLogger(__name__)
DELAY_FILE = "/run/echo/delay_ms"
PID_FILE = "/run/echo/pid"


def _exec(tb: Any, host: str, argv: list[str]) -> str:
    """Run `argv` inside host's container; TestbedError with its output if it fails."""
    code, output = tb.container(host).exec_run(argv)
    text = output.decode(errors="replace").strip() if isinstance(output, bytes) else str(output)
    if code != 0:
        raise TestbedError(f"{host}: {' '.join(argv)} exited {code}: {text}")
    return text


def _container_pid(tb: Any, host: str) -> int | None:
    """The host PID of host's container init (a DockerHost's `cpid`); None for nodes without one."""
    pid = getattr(tb.node(host), "cpid", None)
    return pid if isinstance(pid, int) and pid > 0 else None


def _in_container(pid: int, path: str) -> Path:
    """`path` inside the file system of the container whose init is host PID `pid`."""
    root = Path(f"/proc/{pid}/root")
    if not root.exists():
        raise TestbedError(f"container init {pid} is gone (was the host killed?)")
    return root / path.lstrip("/")


def host_pid(container_pid: int, inner_pid: int) -> int:
    """The host PID of the process numbered `inner_pid` in the PID namespace of `container_pid`."""
    try:
        ns = os.readlink(f"/proc/{container_pid}/ns/pid")
    except OSError:
        raise TestbedError(f"container init {container_pid} is gone (was the host killed?)") from None
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry.name}/ns/pid") != ns:
                continue
            status = Path(f"/proc/{entry.name}/status").read_text()
        except OSError:
            continue
        nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if nspid and nspid[-1] == str(inner_pid):
            return int(entry.name)
    raise TestbedError(f"no process {inner_pid} in the container of PID {container_pid}")


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
    """The host crashes: its container is killed (no undo)."""

    can_undo = False

    def apply(self, tb: Any, now: float) -> str:
        tb.container(self.spec.host).kill()
        return "docker kill"

    def undo(self, tb: Any, now: float) -> str:
        raise TestbedError("a killed host cannot be brought back (its interfaces are gone)")


class HostFreeze(Fault):
    """The host hangs: every process of its container is frozen."""

    def apply(self, tb: Any, now: float) -> str:
        tb.container(self.spec.host).pause()
        return "docker pause"

    def undo(self, tb: Any, now: float) -> str:
        tb.container(self.spec.host).unpause()
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
            box = tb.container(h.name)
            return h.name, (box.pause if down else box.unpause)
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
    """The service process dies while its host stays up; undo starts it again through `restart`."""

    def __init__(self, spec: FaultSpec, restart: Callable[[str], None]) -> None:
        super().__init__(spec)
        self.restart = restart

    def apply(self, tb: Any, now: float) -> str:
        cpid = _container_pid(tb, self.spec.host)
        if cpid is None:  # not a live DockerHost: through `docker exec`
            pid = _exec(tb, self.spec.host, ["cat", PID_FILE])
            _exec(tb, self.spec.host, ["kill", "-9", pid])
            return f"kill -9 {pid}"
        try:
            pid = _in_container(cpid, PID_FILE).read_text().strip()
        except OSError as exc:
            raise TestbedError(f"{self.spec.host}: cannot read {PID_FILE}: {exc.strerror}") from None
        if not pid.isdigit():
            raise TestbedError(f"{self.spec.host}: {PID_FILE} holds {pid!r}, not a PID")
        try:
            os.kill(host_pid(cpid, int(pid)), signal.SIGKILL)
        except ProcessLookupError:
            raise TestbedError(f"{self.spec.host}: the service (PID {pid}) is not running") from None
        return f"kill -9 {pid}"

    def undo(self, tb: Any, now: float) -> str:
        self.restart(self.spec.host)
        return "service restarted"


def write_delay(tb: Any, host: str, delay_ms: float) -> None:
    """Set the echo service's processing delay on `host`."""
    cpid = _container_pid(tb, host)
    if cpid is None:  # not a live DockerHost: through `docker exec`
        _exec(tb, host, ["sh", "-c", f"mkdir -p /run/echo && echo {delay_ms:g} > {DELAY_FILE}"])
        return
    path = _in_container(cpid, DELAY_FILE)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{delay_ms:g}\n")
    except OSError as exc:
        raise TestbedError(f"{host}: cannot write {DELAY_FILE}: {exc.strerror}") from None


class AppDelay(Fault):
    """The service answers late: its processing delay file is set."""

    def apply(self, tb: Any, now: float) -> str:
        write_delay(tb, self.spec.host, self.spec.delay_ms or 0.0)
        return f"processing delay {self.spec.delay_ms:g} ms"

    def undo(self, tb: Any, now: float) -> str:
        write_delay(tb, self.spec.host, 0.0)
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


def make_fault(spec: FaultSpec, restart: Callable[[str], None]) -> Fault:
    """The Fault object for a validated FaultSpec; `restart(host)` starts a host's service again."""
    if spec.kind == "host_down":
        return {"kill": HostKill, "freeze": HostFreeze, "isolate": HostIsolate, "site": SiteDown}[spec.mode](spec)
    if spec.kind == "service_down":
        return ServiceDown(spec, restart)
    if spec.kind == "delay":
        return {"app": AppDelay, "cpu": CpuDelay, "link": LinkDelay}[spec.mode](spec)
    if spec.kind == "network":
        return NetworkFault(spec)
    raise ValueError(f"unknown fault kind {spec.kind!r}")
