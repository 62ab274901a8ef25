"""The topology plan: frozen dataclasses that YAML and the Python API both produce."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

#: The kernel's limit on interface names (IFNAMSIZ - 1).
IFNAME_MAX = 15


@dataclass(frozen=True)
class Shape:
    """How one direction of a link behaves; `delay_ms` is one way, for this direction only."""

    bw_mbit: float | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    queue_pkts: int | None = None

    @property
    def shaped(self) -> bool:
        """True when this direction needs any emulation at all."""
        return bool(self.bw_mbit or self.delay_ms or self.jitter_ms or self.loss_pct or self.queue_pkts)


@dataclass(frozen=True)
class HeartbeatSpec:
    """A heartbeat message: `icmp` echo, `udp` with payload and expected reply, or `tcp` connect."""

    message: str = "icmp"
    interval_s: float | None = None  # None: the NIC's default
    threshold: float | None = None  # None: the NIC's default
    payload: bytes = b""
    expect: bytes | None = None  # None: any reply counts


@dataclass(frozen=True)
class CriticalService:
    """A mission-critical service behind a NIC: its signature, heartbeat and backups."""

    name: str
    proto: str  # "udp" | "tcp"
    port: int
    heartbeat: HeartbeatSpec
    backups: tuple[str, ...] = ()  # "host" or "host:port"; empty: the NIC's default backups


@dataclass(frozen=True)
class NicSpec:
    """A fail-safe NIC in front of a host, with its own address and its tables' initial content."""

    ip: str  # with prefix length, e.g. "10.0.0.111/24"
    mac: str | None = None
    backups: tuple[str, ...] = ()  # default backups ("*"): host names, or "host:port"
    interval_s: float = 0.1
    threshold: float = 1.5
    hysteresis: int = 3  # consecutive good heartbeats before fail-safe is turned off
    learn: int = 10  # heartbeats that make up RTT_avg before detection starts
    min_rtt_ms: float = 20.0  # floor under RTT_avg: a software NIC on a shared 2-core CPU sees 5-40 ms stalls under load
    platform: HeartbeatSpec = field(default_factory=HeartbeatSpec)
    services: tuple[CriticalService, ...] = ()
    passive: bool = True  # passive failure evidence (RST / ICMP unreachable) turns fail-safe on at once
    datapath: str = "python"  # "python", "bpf" (tc-BPF; an error if it cannot load) or "auto" (BPF if it loads)
    carry_tcp: bool = True  # established TCP connections to critical services continue on a backup at failover


@dataclass(frozen=True)
class HostSpec:
    """An MEC host or end device: a Docker container when `image` is set, else a namespace."""

    name: str
    site: str
    ip: str  # with prefix length, e.g. "10.0.0.11/24"
    mac: str | None = None
    image: str | None = None
    cpu: float | None = None  # cores
    memory: str | None = None  # Docker notation, e.g. "256m"
    env: tuple[tuple[str, str], ...] = ()
    volumes: tuple[str, ...] = ()  # "host_path:container_path[:ro]"
    command: tuple[str, ...] | None = None
    access: Shape = Shape()  # the host's link to its edge switch (both directions)
    nic: NicSpec | None = None
    anycast: bool = False  # may share its IP with other anycast hosts; the controller steers between them
    device: bool = False  # an end device (user equipment): may move between sites (testbed/emulation/mobility.py)

    @property
    def is_docker(self) -> bool:
        return self.image is not None


#: The name of the machine the testbed runs on, as a server (sites are placed there by default).
LOCAL_SERVER = "localhost"


@dataclass(frozen=True)
class ServerSpec:
    """A machine sites can be placed on, reached over ssh (testbed/cluster/server.py)."""

    name: str
    address: str  # IP address or host name
    user: str = "root"
    key: str | None = None  # private key file (absolute path); None: ssh's own defaults
    port: int = 22
    known_hosts: str | None = None  # known_hosts file; None: ssh's own
    cpus: float | None = None  # cores it gives the run's hosts (`placement: cpu`); None: not said


@dataclass(frozen=True)
class SiteSpec:
    """An MEC site (or the cloud): one edge switch and the hosts attached to it, on one server."""

    name: str
    kind: str = "mec"  # "mec" | "cloud"
    hosts: tuple[HostSpec, ...] = ()
    server: str = LOCAL_SERVER


@dataclass(frozen=True)
class WanLinkSpec:
    """A WAN link between two sites' switches; `forward` is a→b, `reverse` is b→a."""

    a: str
    b: str
    forward: Shape = Shape()
    reverse: Shape = Shape()

    @property
    def name(self) -> str:
        return f"{self.a}-{self.b}"


#: The app name that means the shipped L2 learning switch (controllers/l2_switch.py).
LEARNING = "learning"


@dataclass(frozen=True)
class ControllerSpec:
    """The os-ken app that controls the switches: `learning`, or the absolute path of an app file."""

    app: str = LEARNING
    config_json: str = "{}"  # the app's `config`, as canonical JSON (kept frozen)

    @property
    def config(self) -> dict[str, Any]:
        """The app's configuration, a fresh dict each time."""
        return json.loads(self.config_json)

    @property
    def is_learning(self) -> bool:
        """True for the shipped learning switch, which needs a tree and offers the northbound socket."""
        return self.app == LEARNING


@dataclass(frozen=True)
class TopologySpec:
    """A whole topology: sites with their hosts, and the WAN links between sites."""

    name: str
    sites: tuple[SiteSpec, ...]
    wan: tuple[WanLinkSpec, ...] = ()
    subnet: str = "10.0.0.0/24"
    controller: ControllerSpec = ControllerSpec()
    servers: tuple[ServerSpec, ...] = ()  # the machines besides this one (LOCAL_SERVER is implicit)

    def server(self, name: str) -> ServerSpec | None:
        """The server called `name`; None for LOCAL_SERVER (KeyError if none)."""
        if name == LOCAL_SERVER:
            return None
        for s in self.servers:
            if s.name == name:
                return s
        raise KeyError(name)

    def hosts(self) -> tuple[HostSpec, ...]:
        """Every host of every site, in declaration order."""
        return tuple(h for s in self.sites for h in s.hosts)

    def host(self, name: str) -> HostSpec:
        """The host called `name` (KeyError if none)."""
        for h in self.hosts():
            if h.name == name:
                return h
        raise KeyError(name)

    def site(self, name: str) -> SiteSpec:
        """The site called `name` (KeyError if none)."""
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)

    def wan_link(self, a: str, b: str) -> WanLinkSpec:
        """The WAN link between sites `a` and `b`, in either order (KeyError if none)."""
        for link in self.wan:
            if {link.a, link.b} == {a, b}:
                return link
        raise KeyError(f"{a}-{b}")
