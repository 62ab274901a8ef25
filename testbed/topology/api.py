"""A Mininet-Topo-like Python builder for topologies; build() checks it with the same validator as YAML.

    t = MecTopo("fatriot", subnet="10.0.0.0/24")
    t.addSite("edge1")
    t.addHost("gen", site="edge1", ip="10.0.0.1")
    t.addDocker("mec1", site="edge1", dimage="testbed/echo", ip="10.0.0.11", cpu=1.0,
                nic=t.nic(ip="10.0.0.111", backups=["mec2"]))
    t.addWan("edge1", "cloud", bw=100, delay="10ms", jitter="1ms", loss=0.1, max_queue_size=100)
    t.addController("controllers/simple_switch_13.py", config={"key": "value"})  # default: learning
    spec = t.build()

Option values are written as in YAML (`"10ms"`, `100`, `"256m"`); build() turns them into a plain
dict in the YAML shape and passes it to `parse_topology`, so both paths share one set of checks.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from testbed.errors import SpecError
from testbed.topology.loader import parse_topology
from testbed.topology.model import TopologySpec


def _options(**values: Any) -> dict[str, Any]:
    """The options that were given (not None), with tuples turned into lists as YAML would give them."""
    return {key: _plain(value) for key, value in values.items() if value is not None}


def _plain(value: Any) -> Any:
    """`value` with tuples as lists and mappings as dicts, recursively (the shape YAML data has)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


class MecTopo:
    """A topology as data, added to step by step like a Mininet Topo: sites, hosts, Docker hosts, WAN links."""

    def __init__(self, name: str, subnet: str | None = None) -> None:
        self.name = name
        self.subnet = subnet
        self._sites: dict[str, dict[str, Any]] = {}
        self._wan: list[dict[str, Any]] = []
        self._controller: dict[str, Any] | None = None

    def addSite(self, name: str, kind: str = "mec") -> str:
        """Add a site (`mec` or `cloud`): one edge switch that its hosts attach to; returns its name."""
        if name in self._sites:
            raise SpecError(f"sites.{name}", "duplicate key", self._source)
        self._sites[name] = {"kind": kind, "hosts": {}}
        return name

    def addHost(self, name: str, site: str, ip: str | None = None, mac: str | None = None,
                access: Mapping[str, Any] | None = None, anycast: bool | None = None,
                device: bool | None = None) -> str:
        """Add a plain Mininet host (a network namespace) to `site` (`device=True`: an end device that may move)."""
        self._hosts(site, name)[name] = _options(ip=ip, mac=mac, access=access, anycast=anycast, device=device)
        return name

    def addController(self, app: str = "learning", config: Mapping[str, Any] | None = None) -> str:
        """Choose the controller: `learning` or the path of an os-ken app file, with its config; returns `app`."""
        if self._controller is not None:
            raise SpecError("controller", "already chosen; a topology has one controller", self._source)
        self._controller = _options(app=app, config=config)
        return app

    def addDocker(self, name: str, site: str, dimage: str, ip: str | None = None, mac: str | None = None,
                  cpu: float | None = None, memory: str | int | None = None,
                  env: Mapping[str, str] | None = None, volumes: Sequence[str] | None = None,
                  command: Sequence[str] | str | None = None, access: Mapping[str, Any] | None = None,
                  nic: Mapping[str, Any] | bool | None = None, anycast: bool | None = None,
                  device: bool | None = None) -> str:
        """Add a Docker host running image `dimage` to `site`, optionally behind a fail-safe NIC; returns its name."""
        self._hosts(site, name)[name] = _options(
            image=dimage, ip=ip, mac=mac, cpu=cpu, memory=memory, env=env, volumes=volumes,
            command=command, access=access, nic=nic, anycast=anycast, device=device)
        return name

    def addWan(self, a: str, b: str, bw: float | str | None = None, delay: float | str | None = None,
               jitter: float | str | None = None, loss: float | None = None, max_queue_size: int | None = None,
               forward: Mapping[str, Any] | None = None, reverse: Mapping[str, Any] | None = None) -> str:
        """Add a WAN link between sites `a` and `b` (shape for both directions, one-way delay); returns `a-b`."""
        self._wan.append({"between": [a, b], **_options(
            bw=bw, delay=delay, jitter=jitter, loss=loss, max_queue_size=max_queue_size,
            forward=forward, reverse=reverse)})
        return f"{a}-{b}"

    @staticmethod
    def nic(ip: str | None = None, mac: str | None = None, backups: Sequence[str] | None = None,
            interval: float | str | None = None, threshold: float | None = None, hysteresis: int | None = None,
            learn: int | None = None, min_rtt: float | str | None = None,
            platform: Mapping[str, Any] | None = None,
            services: Sequence[Mapping[str, Any]] | None = None, passive: bool | None = None,
            datapath: str | None = None, carry_tcp: bool | None = None) -> dict[str, Any]:
        """A fail-safe NIC's options, for addDocker(nic=...); omitted options take the defaults."""
        return _options(ip=ip, mac=mac, backups=backups, interval=interval, threshold=threshold,
                        hysteresis=hysteresis, learn=learn, min_rtt=min_rtt, platform=platform, services=services,
                        passive=passive, datapath=datapath, carry_tcp=carry_tcp)

    @staticmethod
    def service(name: str, proto: str, port: int, heartbeat: Mapping[str, Any] | None = None,
                backups: Sequence[str] | None = None) -> dict[str, Any]:
        """A mission-critical service's options, for nic(services=[...])."""
        return _options(name=name, proto=proto, port=port, heartbeat=heartbeat, backups=backups)

    @staticmethod
    def heartbeat(message: str | None = None, payload: str | None = None, expect: str | None = None,
                  interval: float | str | None = None, threshold: float | None = None) -> dict[str, Any]:
        """A heartbeat's options, for service(heartbeat=...) or nic(platform=...)."""
        return _options(message=message, payload=payload, expect=expect, interval=interval, threshold=threshold)

    def to_dict(self) -> dict[str, Any]:
        """The topology as plain data in the YAML shape (what build() validates)."""
        data: dict[str, Any] = {"name": self.name}
        if self.subnet is not None:
            data["subnet"] = self.subnet
        data["sites"] = _plain(self._sites)
        if self._wan:
            data["wan"] = _plain(self._wan)
        if self._controller is not None:
            data["controller"] = _plain(self._controller)
        return data

    def build(self) -> TopologySpec:
        """The validated TopologySpec; a SpecError names the YAML path of any mistake."""
        return parse_topology(self.to_dict(), self._source)

    @property
    def _source(self) -> str:
        """How errors name this builder."""
        return f"MecTopo({self.name!r})"

    def _hosts(self, site: str, name: str) -> dict[str, Any]:
        """The host table of `site`, checking that the site exists and `name` is new in it."""
        if site not in self._sites:
            raise SpecError(f"sites.{site}", f"no such site for host {name!r}; call addSite({site!r}) first",
                            self._source)
        hosts: dict[str, Any] = self._sites[site]["hosts"]
        if name in hosts:
            raise SpecError(f"sites.{site}.hosts.{name}", "duplicate key", self._source)
        return hosts
