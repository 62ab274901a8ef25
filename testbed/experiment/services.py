"""Runs any service on a Docker host: start, ready-check, stop, kill and slow it, whatever its image.

A service whose image is the host's runs as the host container's main command (PID in
/run/testbed/main.pid); one with another image runs in a container of its own (a sidecar) in the
host's network namespace. Readiness is checked from inside the host's network namespace (a thread
that joins it with setns(2); on another server a probe started there in it) or by a command in the
service's container; never by sleeping. Everything that reads the host's /proc by PID (ports, the
main command's PID, signals, the delay control file) goes through the host's server's
`Namespaces` (testbed/cluster/engine.py): this machine's netns, or that server through its door.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from testbed.cluster.engine import namespaces_of
from testbed.emulation.netns import container_path, find_pid, in_netns
from testbed.errors import TestbedError
from testbed.experiment.service_defaults import resolve
from testbed.experiment.spec import Readiness, ServiceRun

MAIN_PID = "/run/testbed/main.pid"
__all__ = ["container_path", "in_netns"]  # re-exported for the services' other users
_POLL_S = 0.05


def resolved(tb: Any, svc: ServiceRun) -> ServiceRun:
    """`svc` with the defaults of its image (the host's unless it names one)."""
    return resolve(svc, tb.topo.host(svc.host).image)


def is_sidecar(tb: Any, svc: ServiceRun) -> bool:
    """True when `svc` runs in a container of its own (its image is not the host's)."""
    return bool(svc.image) and svc.image != tb.topo.host(svc.host).image


def _docker_host(tb: Any, host: str) -> Any:
    if not tb.topo.host(host).is_docker:
        raise TestbedError(f"services run in Docker hosts; {host} is a namespace host")
    return tb.node(host)


def host_pid(container_pid: int, inner_pid: int) -> int:
    """The host PID of the process numbered `inner_pid` in the PID namespace of `container_pid`."""
    if not Path(f"/proc/{container_pid}").exists():
        raise TestbedError(f"container init {container_pid} is gone (was the host killed?)")
    pid = find_pid(container_pid, inner_pid)
    if pid is None:
        raise TestbedError(f"no process {inner_pid} in the container of PID {container_pid}")
    return pid


def main_pid(node: Any) -> int | None:
    """PID of the host container's main command on the host's server, None when it is not running."""
    ns = namespaces_of(node)
    text = (ns.read_text(node.cpid, MAIN_PID) or "").strip()
    return ns.host_pid(node.cpid, int(text)) if text.isdigit() else None


def service_pid(tb: Any, svc: ServiceRun) -> int:
    """The host PID whose file system and processes are the service's (the sidecar's init, or the host's)."""
    node = _docker_host(tb, svc.host)
    if is_sidecar(tb, svc):
        box = node.sidecars.get(svc.name)
        if box is None:
            raise TestbedError(f"{svc.host}: service {svc.name} was never started")
        box.reload()
        return int(box.attrs["State"]["Pid"])
    return node.cpid


def start(tb: Any, svc: ServiceRun) -> None:
    """Make sure `svc` runs on its host (started or replaced as needed), then wait until it is ready."""
    svc = resolved(tb, svc)
    node = _docker_host(tb, svc.host)
    if is_sidecar(tb, svc):
        node.add_sidecar(svc.name, svc.image, svc.command, dict(svc.env))
    elif svc.command is not None and list(svc.command) != node.main_command():
        stop(tb, svc)
        node.start_service(list(svc.command), dict(svc.env))
    elif main_pid(node) is None:
        node.start_service()
    wait_ready(tb, svc)


def stop(tb: Any, svc: ServiceRun) -> None:
    """Stop `svc` (its container, or the host container's main command)."""
    svc = resolved(tb, svc)
    node = _docker_host(tb, svc.host)
    if is_sidecar(tb, svc):
        box = node.sidecars.get(svc.name)
        if box is not None:
            box.kill()
        return
    pid = main_pid(node)
    if pid is not None:
        namespaces_of(node).kill(pid)


def kill(tb: Any, svc: ServiceRun) -> str:
    """The service fails while its host stays up (kill -9 of its process, or its container killed)."""
    svc = resolved(tb, svc)
    node = _docker_host(tb, svc.host)
    if is_sidecar(tb, svc):
        node.sidecars[svc.name].kill()
        return f"container of {svc.name} killed"
    pid = main_pid(node)
    if pid is None:
        raise TestbedError(f"{svc.host}: service {svc.name} is not running")
    namespaces_of(node).kill(pid)
    return f"kill -9 {svc.name} (pid {pid})"


def restart(tb: Any, svc: ServiceRun) -> None:
    """Start a killed service again (a fresh container for a sidecar) and wait until it is ready."""
    svc = resolved(tb, svc)
    node = _docker_host(tb, svc.host)
    if is_sidecar(tb, svc):
        node.restart_sidecar(svc.name)
        wait_ready(tb, svc)
    else:
        start(tb, svc)


def set_delay(tb: Any, svc: ServiceRun, delay_ms: float) -> None:
    """Write the service's processing delay to its declared `delay_control` file."""
    svc = resolved(tb, svc)
    if svc.delay_control is None:
        raise TestbedError(f"{svc.host}: service {svc.name} declares no delay_control")
    try:
        namespaces_of(tb.node(svc.host)).write_text(service_pid(tb, svc), svc.delay_control, f"{delay_ms:g}\n")
    except OSError as exc:
        raise TestbedError(f"{svc.host}: cannot write {svc.delay_control}: {exc.strerror or exc}") from None


# -- readiness -----------------------------------------------------------------------------------
def _ready(tb: Any, svc: ServiceRun, timeout: float) -> bool:
    """True once `svc` (resolved) passes its readiness check, tried until `timeout` (0: once).

    `listen` and the probes are checked where the host runs (netns here, its server's /proc and
    namespace through its door, testbed/cluster/engine.Namespaces); a `command` in its container.
    """
    node = tb.node(svc.host)
    check = svc.ready or Readiness("listen")
    ns = namespaces_of(node)
    if check.kind == "listen":
        return not ns.wait_ports({svc.name: (node.pid, [(p.proto, p.port) for p in svc.ports])}, timeout)
    if check.kind == "command":
        box = node.sidecars[svc.name] if is_sidecar(tb, svc) else node.container
        deadline = time.monotonic() + timeout
        while box.exec_run(list(check.command))[0] != 0:
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)
        return True
    return ns.probe(node.pid, check, timeout)


def ready_once(tb: Any, svc: ServiceRun) -> bool:
    """True when `svc` (resolved) passes its readiness check right now."""
    return _ready(tb, svc, 0.0)


def wait_ready(tb: Any, svc: ServiceRun) -> None:
    """Wait until `svc` passes its readiness check; TestbedError after its timeout."""
    svc = resolved(tb, svc)
    timeout = (svc.ready or Readiness()).timeout_s
    if not _ready(tb, svc, timeout):
        raise TestbedError(f"{svc.host}: service {svc.name} not ready within {timeout:g} s "
                           f"({(svc.ready or Readiness()).kind} check)")
