"""The NIC process's configuration: a frozen `NicConfig`, its JSON form, and how it is made from a topology.

`NicConfig.from_spec(host, topo, rid, run_dir)` turns a host's `NicSpec` into addresses: backup host
names become their IPs (a backup "host" without a port keeps the service's port, stored as port 0),
and backups that have a NIC of their own give their NIC IPs as discovery peers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from testbed.errors import SpecError
from testbed.failsafe.packet import PROTO_NAMES, ip_bytes, mac_bytes
from testbed.topology.model import HostSpec, NicSpec, TopologySpec
from testbed.ledger import RUN_ROOT



#: The defaults of a NIC that a topology does not configure: the one place they are defined.
_NIC_DEFAULTS = NicSpec(ip="")


@dataclass(frozen=True)
class ServiceConfig:
    """A critical service: its signature on the host, its heartbeat and its backups ((ip, port); 0 = same port)."""

    name: str
    proto: str
    port: int
    message: str = "icmp"
    interval_s: float | None = None
    threshold: float | None = None
    payload: bytes = b""
    expect: bytes | None = None
    backups: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class NicConfig:
    """Everything the NIC process needs to run in front of one host."""

    node: str
    rid: str
    host_ip: str
    nic_ip: str
    nic_mac: str
    prefixlen: int = 24
    host_mac: str | None = None
    host_iface: str = "nic-h"
    net_iface: str = "nic-n"
    services: tuple[ServiceConfig, ...] = ()
    default_backups: tuple[tuple[str, int], ...] = ()
    platform_message: str = "icmp"
    platform_payload: bytes = b""
    platform_expect: bytes | None = None
    platform_interval_s: float | None = None
    platform_threshold: float | None = None
    interval_s: float = _NIC_DEFAULTS.interval_s  # the topology's NIC defaults (NicSpec), defined once
    threshold: float = _NIC_DEFAULTS.threshold
    hysteresis: int = _NIC_DEFAULTS.hysteresis
    learn: int = _NIC_DEFAULTS.learn
    min_rtt_s: float = _NIC_DEFAULTS.min_rtt_ms / 1000.0
    peers: tuple[str, ...] = ()
    neighbours: dict[str, str] = field(default_factory=dict)
    control_socket: str = ""
    events_path: str = ""
    # replay window: a flow at r req/s keeps about r x this many requests; None: twice the longest
    # heartbeat interval + timeout (threshold x RTT_avg, floored by min_rtt), at least 1 s, recomputed
    # as RTTs are learnt
    pending_max_age_s: float | None = None
    pending_per_flow: int = 0  # cap on one flow's replay store (0: none but the window and the total)
    pending_total: int = 4096  # cap on the replay store of all flows together
    conntrack_max: int = 16384  # tracked (redirected) flows; when full, unassured ones are dropped early
    neighbours_max: int = 1024  # learnt ARP entries (static ones and backups never evicted)
    passive_evidence: bool = True  # RST / ICMP unreachable from a critical service port turns fail-safe on
    udp_timeout_s: float = 30.0
    tcp_timeout_s: float = 300.0
    tune_ifaces: bool = True
    vlan_passthrough: bool = True  # re-insert 802.1Q tags the kernel strips (costs ~15% throughput)
    datapath: str = "python"  # "python" (the reference), "bpf" (tc-BPF, an error if it cannot load) or "auto"
    carry_tcp: bool = True  # established critical TCP connections re-opened on a backup at failover (tcp_carry.py)
    carry_max_bytes: int = 65536  # per connection: client bytes kept until the host acknowledges them
    bpf_object: str = ""  # compiled nic.bpf.c ("": .build/bpf/nic.bpf.o, built if missing)
    # nic-h's veth peer is the host's own interface: BPF hands it the host's frames typed PACKET_HOST.
    # False when the access link is emulated: the peer is the link emulator's, whose namespace's IP
    # stack would take every such frame (and drop it, a route lookup each: IpExtInNoRoutes)
    host_is_peer: bool = True

    def __post_init__(self) -> None:
        for name in ("host_ip", "nic_ip"):
            try:
                ip_bytes(getattr(self, name))
            except OSError:
                raise SpecError(name, f"not an IPv4 address: {getattr(self, name)!r}") from None
        mac_bytes(self.nic_mac)
        if self.datapath not in ("auto", "bpf", "python"):
            raise SpecError("datapath", f"expected auto, bpf or python, got {self.datapath!r}")
        if not isinstance(self.carry_tcp, bool):
            raise SpecError("carry_tcp", f"expected true or false, got {self.carry_tcp!r}")
        for i, s in enumerate(self.services):
            if s.proto not in ("udp", "tcp"):
                raise SpecError(f"services[{i}].proto", f"expected udp or tcp, got {s.proto!r}")
            if not 0 < s.port < 65536:
                raise SpecError(f"services[{i}].port", f"expected 1..65535, got {s.port}")

    def proto_of(self, service: ServiceConfig) -> int:
        """IP protocol number of `service`."""
        return PROTO_NAMES[service.proto]

    def heartbeat_entries(self) -> list[Any]:
        """The heartbeat table: the platform, then one entry per service."""
        from testbed.failsafe.heartbeat import HeartbeatEntry

        common = {"learn": self.learn, "hysteresis": self.hysteresis, "min_rtt_s": self.min_rtt_s,
                  "dst_ip": self.host_ip}
        out = [HeartbeatEntry("platform", self.platform_message, self.platform_interval_s or self.interval_s,
                              self.platform_threshold or self.threshold, payload=self.platform_payload,
                              expect=self.platform_expect, **common)]
        for s in self.services:
            out.append(HeartbeatEntry(s.name, s.message, s.interval_s or self.interval_s,
                                      s.threshold or self.threshold, dst_port=s.port, payload=s.payload,
                                      expect=s.expect, **common))
        return out

    # -- JSON ---------------------------------------------------------------------------------
    def to_json(self) -> str:
        """The config as JSON (bytes as hex strings)."""
        return json.dumps(_encode(asdict(self)), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "NicConfig":
        """A config from `to_json` output; unknown keys are an error naming them."""
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise SpecError("", "NIC config must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SpecError(unknown[0], "unknown key in NIC config")
        svc_known = {f.name for f in fields(ServiceConfig)}
        services = []
        for i, s in enumerate(raw.get("services", [])):
            bad = sorted(set(s) - svc_known)
            if bad:
                raise SpecError(f"services[{i}].{bad[0]}", "unknown key in NIC config")
            services.append(ServiceConfig(
                name=s["name"], proto=s["proto"], port=int(s["port"]), message=s.get("message", "icmp"),
                interval_s=s.get("interval_s"), threshold=s.get("threshold"),
                payload=bytes.fromhex(s.get("payload", "")),
                expect=None if s.get("expect") is None else bytes.fromhex(s["expect"]),
                backups=tuple((str(h), int(p)) for h, p in s.get("backups", []))))
        raw["services"] = tuple(services)
        raw["default_backups"] = tuple((str(h), int(p)) for h, p in raw.get("default_backups", []))
        raw["peers"] = tuple(raw.get("peers", []))
        raw["platform_payload"] = bytes.fromhex(raw.get("platform_payload", ""))
        if raw.get("platform_expect") is not None:
            raw["platform_expect"] = bytes.fromhex(raw["platform_expect"])
        return cls(**raw)

    # -- from a topology ----------------------------------------------------------------------
    @classmethod
    def from_spec(cls, host: HostSpec, topo: TopologySpec, rid: str, run_dir: Path) -> "NicConfig":
        """The config of the NIC in front of `host` in `topo`, for run `rid` with artifacts in `run_dir`."""
        nic = host.nic
        if nic is None:
            raise SpecError(f"hosts.{host.name}.nic", "host has no fail-safe NIC")
        where = f"hosts.{host.name}.nic"
        nic_ip, _, plen = nic.ip.partition("/")
        peers: list[str] = []

        def resolve(items: tuple[str, ...], path: str) -> tuple[tuple[str, int], ...]:
            out = []
            for i, item in enumerate(items):
                name, _, port = item.partition(":")
                try:
                    backup = topo.host(name)
                except KeyError:
                    raise SpecError(f"{path}[{i}]", f"unknown backup host {name!r}") from None
                if backup.name == host.name:
                    raise SpecError(f"{path}[{i}]", "a host cannot be its own backup")
                try:
                    out.append((backup.ip.split("/")[0], int(port) if port else 0))
                except ValueError:
                    raise SpecError(f"{path}[{i}]", f"bad port in {item!r}") from None
                if backup.nic is not None:
                    peer = backup.nic.ip.split("/")[0]
                    if peer not in peers:
                        peers.append(peer)
            return tuple(out)

        defaults = resolve(nic.backups, f"{where}.backups")
        services = tuple(
            ServiceConfig(name=s.name, proto=s.proto, port=s.port, message=s.heartbeat.message,
                          interval_s=s.heartbeat.interval_s, threshold=s.heartbeat.threshold,
                          payload=s.heartbeat.payload, expect=s.heartbeat.expect,
                          backups=resolve(s.backups, f"{where}.services[{i}].backups"))
            for i, s in enumerate(nic.services))
        if _is_echo(host.image):
            services = tuple(_echo_tcp_heartbeat(s) for s in services)
        for peer in backed_up_by(host, topo):  # NICs that may send this host traffic learn its state too
            if peer not in peers:
                peers.append(peer)
        run = RUN_ROOT / rid
        return cls(
            node=host.name, rid=rid, host_ip=host.ip.split("/")[0], host_mac=host.mac,
            nic_ip=nic_ip, nic_mac=nic.mac or default_mac(rid, host.name),
            prefixlen=int(plen) if plen else int(topo.subnet.partition("/")[2] or 24),
            services=services, default_backups=defaults,
            platform_message=nic.platform.message, platform_payload=nic.platform.payload,
            platform_expect=nic.platform.expect, platform_interval_s=nic.platform.interval_s,
            platform_threshold=nic.platform.threshold,
            interval_s=nic.interval_s, threshold=nic.threshold, hysteresis=nic.hysteresis, learn=nic.learn,
            min_rtt_s=nic.min_rtt_ms / 1000.0, peers=tuple(peers),
            passive_evidence=bool(getattr(nic, "passive", True)), datapath=nic.datapath,
            carry_tcp=nic.carry_tcp,
            control_socket=str(run / f"nic-{host.name}.sock"),
            events_path=str(Path(run_dir) / f"events-{host.name}.jsonl"))


#: the TCP heartbeat of the echo image's critical TCP services: a line it echoes (a frozen host's
#: kernel still completes a handshake, but no reply line comes back)
ECHO_TCP_PAYLOAD = b"fatriot-hb\n"
ECHO_IMAGE = "testbed/echo"


def _is_echo(image: str | None) -> bool:
    return bool(image) and image.rsplit(":", 1)[0] == ECHO_IMAGE  # type: ignore[union-attr]


def _echo_tcp_heartbeat(service: ServiceConfig) -> ServiceConfig:
    """`service` with a payload/expect TCP heartbeat if it has a plain connect one."""
    if service.proto != "tcp" or service.message != "tcp" or service.payload:
        return service
    return replace(service, payload=ECHO_TCP_PAYLOAD, expect=ECHO_TCP_PAYLOAD.rstrip(b"\n"))


def backed_up_by(host: HostSpec, topo: TopologySpec) -> list[str]:
    """NIC IPs of the other hosts that list `host` as a backup (default or per service)."""
    out: list[str] = []
    for other in topo.hosts():
        if other.nic is None or other.name == host.name:
            continue
        names = list(other.nic.backups) + [b for s in other.nic.services for b in s.backups]
        if any(n.partition(":")[0] == host.name for n in names):
            ip = other.nic.ip.split("/")[0]
            if ip and ip not in out:
                out.append(ip)
    return out


def default_mac(rid: str, node: str) -> str:
    """A stable locally administered MAC for the NIC of `node` in run `rid`."""
    digest = hashlib.sha256(f"{rid}/{node}/nic".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])


def _encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value
