"""Containernet's Docker host on the testbed's DockerHost: Docker-style options mapped to cpu and memory, or refused."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

from testbed.emulation.dockerhost import DockerHost, docker_client, image_command, image_ports
from testbed.errors import SpecError, TestbedError
from testbed.ledger import Ledger
from testbed.topology import units

log = logging.getLogger(__name__)

#: Mininet host options a Docker host passes on to Mininet.
HOST_KEYS = ("ip", "mac", "defaultRoute", "lo", "inNamespace", "prefixLen")
#: Containernet options refused here, with why (each one would otherwise be ignored, or bypass the topology).
REFUSED = {
    "cpu_shares": "a relative CPU weight is not supported; give a hard limit (cpu_quota and cpu_period, or cpus)",
    "cpuset_cpus": "pinning to CPUs is not supported; give a CPU limit (cpu_quota and cpu_period, or cpus)",
    "memswap_limit": "the swap limit is set by the testbed (twice mem_limit)",
    "port_bindings": "published ports are a path around the emulated network; reach the service from a host in the topology",
    "network_mode": "a testbed container has no network but the topology's (network_mode none)",
    "privileged": "testbed containers get NET_ADMIN, not privileged",
    "dns": "no Docker networking: set resolv.conf in the image",
    "ipc_mode": "not supported", "devices": "not supported", "device_requests": "not supported",
    "sysctls": "not supported", "storage_opt": "not supported", "tmpfs": "not supported",
    "shm_size": "not supported", "build_params": "build the image first (testbed images build)",
}


@dataclass(frozen=True)
class DockerOptions:
    """What a Containernet `addDocker(...)` asks for, in the testbed's terms."""

    cpu: float | None = None
    memory: str | None = None
    cpu_period: int = 100_000
    environment: dict[str, str] = field(default_factory=dict)
    volumes: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    dcmd: tuple[str, ...] | None = None
    host: dict[str, Any] = field(default_factory=dict)


def port_spec(port: Any, where: str) -> str:
    """A Containernet `ports` entry (9999, "9999/udp", (9999, "udp")) in Docker's "9999/tcp" notation."""
    if isinstance(port, tuple) and len(port) == 2:
        port = f"{port[0]}/{port[1]}"
    text = str(port)
    num, _, proto = text.partition("/")
    if not num.isdigit() or proto not in ("", "tcp", "udp"):
        raise SpecError(where, f"expected a port like 9999 or '9999/udp', got {port!r}")
    return f"{int(num)}/{proto or 'tcp'}"


def command_of(dcmd: Any, where: str) -> tuple[str, ...] | None:
    """Containernet's `dcmd` (a shell string, or a list) as the host's main command; bash means none."""
    if dcmd is None or dcmd in ("/bin/bash", "bash", ["/bin/bash"], ["bash"]):
        return None
    if isinstance(dcmd, str):
        return ("/bin/sh", "-c", dcmd)
    if isinstance(dcmd, (list, tuple)) and all(isinstance(a, str) for a in dcmd):
        return tuple(dcmd)
    raise SpecError(where, f"expected a command string or list, got {dcmd!r}")


def cpu_of(quota: Any, period: Any, cpus: Any, where: str) -> tuple[float | None, int]:
    """Cores from Docker's CFS quota/period (or `cpus`), and the period to keep."""
    if cpus is not None:
        if quota is not None:
            raise SpecError(f"{where}.cpus", "give cpus or cpu_quota, not both")
        return units.cpu_cores(cpus, f"{where}.cpus"), 100_000
    per = 100_000 if period in (None, -1) else units.positive_int(period, f"{where}.cpu_period",
                                                                   "a period in microseconds", 1000)
    if quota in (None, -1):
        if period not in (None, -1):
            raise SpecError(f"{where}.cpu_period", "a period without cpu_quota limits nothing")
        return None, per
    q = units.positive_int(quota, f"{where}.cpu_quota", "a quota in microseconds", 1000)
    return q / per, per


def docker_options(name: str, params: dict[str, Any]) -> DockerOptions:
    """Read Containernet's keyword arguments strictly: mapped, passed to Mininet, or refused by name."""
    where = f"addDocker {name}"
    params = dict(params)
    for key in params:
        if key in REFUSED and params[key] not in (None, {}, [], (), False) and not (
                key == "network_mode" and params[key] == "none"):
            raise SpecError(f"{where}.{key}", REFUSED[key])
    cpu, period = cpu_of(params.pop("cpu_quota", None), params.pop("cpu_period", None),
                         params.pop("cpus", None), where)
    if params.get("cpu") is not None:
        if cpu is not None:
            raise SpecError(f"{where}.cpu", "give cpu or cpu_quota/cpus, not both")
        cpu = units.cpu_cores(params["cpu"], f"{where}.cpu")
    params.pop("cpu", None)
    mem = params.pop("mem_limit", None)
    if params.get("memory") is not None:
        mem = params["memory"]
    params.pop("memory", None)
    memory = units.memory_docker(mem, f"{where}.mem_limit") if mem is not None else None
    ports = tuple(port_spec(p, f"{where}.ports") for p in params.pop("ports", None) or ())
    cap_add = [c.lower() for c in params.pop("cap_add", None) or []]
    if set(cap_add) - {"net_admin"}:
        raise SpecError(f"{where}.cap_add", "testbed containers get NET_ADMIN only")
    if params.pop("publish_all_ports", False):
        raise SpecError(f"{where}.publish_all_ports", REFUSED["port_bindings"])
    params.pop("rm", None)  # container names are per run: there is never an old one to remove
    env = params.pop("environment", None) or {}
    volumes = tuple(params.pop("volumes", None) or ())
    dcmd = command_of(params.pop("dcmd", None), f"{where}.dcmd")
    for key in REFUSED:
        params.pop(key, None)
    unknown = sorted(k for k in params if k not in HOST_KEYS)
    if unknown:
        raise SpecError(f"{where}.{unknown[0]}", "unknown option (Containernet would pass it to "
                                                 "Docker or ignore it)")
    return DockerOptions(cpu, memory, period, {str(k): str(v) for k, v in env.items()}, volumes, ports,
                         dcmd, params)


class Docker(DockerHost):
    """Containernet's Docker host: `addDocker('d1', dimage=..., cpu_quota=..., mem_limit=...)`.

    The container's main command (the image's CMD, or `dcmd`) starts once its interfaces are up;
    `addDocker` returns when it listens on the image's exposed ports (and on `ports`).
    """

    def __init__(self, name: str, dimage: str | None = None, ledger: Ledger | None = None,
                 **params: Any) -> None:
        if not dimage:
            raise SpecError(f"addDocker {name}.dimage", "a Docker host needs an image")
        if ledger is None:
            raise TestbedError(f"Docker host {name}: add it through the network (net.addDocker)")
        opts = docker_options(name, params)
        client = docker_client()
        try:
            client.images.get(dimage)
        except Exception:
            raise SpecError(f"addDocker {name}.dimage", f"no image {dimage} here, and no registry is "
                            f"reached: build it (testbed images build) or docker load it") from None
        ready = opts.ports
        if opts.dcmd is None and image_command(client, dimage):
            ready = tuple(sorted(set(ready) | set(image_ports(client, dimage))))
        self.resources: dict[str, Any] = {"cpu_quota": int(opts.cpu * opts.cpu_period) if opts.cpu else None,
                                          "cpu_period": opts.cpu_period if opts.cpu else None,
                                          "mem_limit": opts.memory}
        self.service_started = False
        super().__init__(name, dimage=dimage, ledger=ledger, cpu=opts.cpu, memory=opts.memory,
                         environment=opts.environment, volumes=opts.volumes,
                         dcmd=list(opts.dcmd) if opts.dcmd is not None else None, client=client,
                         ready_ports=ready, **opts.host)

    def ready(self) -> None:
        """Let the main command start (its interfaces exist now) and wait for its ports; once."""
        if not self.service_started:
            super().ready()
            self.service_started = True

    def start(self) -> None:
        """Containernet's start(): the main command runs already once the network is up; else start it."""
        if not self.service_started:
            self.ready()

    def updateCpuLimit(self, cpu_quota: int = -1, cpu_period: int = -1, cpu_shares: int = -1,  # noqa: N802
                       cores: Sequence[int] | str | None = None) -> None:
        """Change the CFS quota (and period) at run time; shares and cores are refused."""
        where = f"{self.name}.updateCpuLimit"
        if cpu_shares not in (-1, None):
            raise SpecError(f"{where}.cpu_shares", REFUSED["cpu_shares"])
        if cores:
            raise SpecError(f"{where}.cores", REFUSED["cpuset_cpus"])
        period = cpu_period if cpu_period not in (-1, None) else (self.resources["cpu_period"] or 100_000)
        if cpu_quota in (-1, None) and cpu_period in (-1, None):
            return
        quota = cpu_quota if cpu_quota not in (-1, None) else self.resources["cpu_quota"]
        cpu, period = cpu_of(quota, period, None, where)
        self.update_resources(cpu=cpu if cpu is not None else 0)
        self.resources.update(cpu_quota=quota, cpu_period=period)

    def updateMemoryLimit(self, mem_limit: int = -1, memswap_limit: int = -1) -> None:  # noqa: N802
        """Change the memory limit (bytes) at run time; the swap limit follows it."""
        if memswap_limit not in (-1, None):
            raise SpecError(f"{self.name}.updateMemoryLimit.memswap_limit", REFUSED["memswap_limit"])
        if mem_limit in (-1, None):
            return
        memory = units.memory_docker(mem_limit, f"{self.name}.updateMemoryLimit.mem_limit")
        self.update_resources(memory=memory)
        self.resources["mem_limit"] = memory
