"""Runs any service on a Docker host: start, ready-check, stop, kill and slow it, whatever its image.

A service whose image is the host's runs as the host container's main command (PID in
/run/testbed/main.pid); one with another image runs in a container of its own (a sidecar) in the
host's network namespace. Readiness is checked from inside the host's network namespace (a thread
that joins it with setns(2)) or by a command in the service's container; never by sleeping.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from testbed.emulation.netns import listening
from testbed.errors import TestbedError
from testbed.experiment.service_defaults import resolve
from testbed.experiment.spec import Readiness, ServiceRun

MAIN_PID = "/run/testbed/main.pid"
_CLONE_NEWNET = 0x40000000
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


def container_path(pid: int, path: str) -> Path:
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


def main_pid(node: Any) -> int | None:
    """Host PID of the host container's main command, None when it is not running."""
    try:
        text = container_path(node.cpid, MAIN_PID).read_text().strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    try:
        return host_pid(node.cpid, int(text))
    except TestbedError:
        return None


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
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


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
    os.kill(pid, signal.SIGKILL)
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
    path = container_path(service_pid(tb, svc), svc.delay_control)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{delay_ms:g}\n")
    except OSError as exc:
        raise TestbedError(f"{svc.host}: cannot write {svc.delay_control}: {exc.strerror}") from None


# -- readiness -----------------------------------------------------------------------------------
def in_netns(pid: int, probe: Any) -> Any:
    """Run `probe()` in a thread that has joined the network namespace of `pid`; its result or exception."""
    result: dict[str, Any] = {}

    def body() -> None:
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            result["value"] = probe()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result["error"] = exc

    worker = threading.Thread(target=body, name="netns-probe")
    worker.start()
    worker.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def _probe(check: Readiness) -> bool:
    """One readiness probe against 127.0.0.1 (in whatever namespace the calling thread is)."""
    addr = ("127.0.0.1", check.port or 0)
    try:
        if check.kind == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(0.2)
                s.sendto((check.send or "").encode(), addr)
                reply = s.recv(65536)
        else:
            with socket.create_connection(addr, timeout=0.5) as s:
                if check.kind == "http":
                    s.sendall(f"GET {check.path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
                    head = s.recv(64).decode(errors="replace")
                    return head.startswith("HTTP/") and head[9:10] in ("2", "3")
                if check.send is None:
                    return True
                s.sendall((check.send + "\n").encode())
                reply = s.recv(65536)
    except OSError:
        return False
    return check.expect is None or check.expect.encode() in reply


def ready_once(tb: Any, svc: ServiceRun) -> bool:
    """True when `svc` (resolved) passes its readiness check right now."""
    node = tb.node(svc.host)
    check = svc.ready or Readiness("listen")
    if check.kind == "listen":
        return all(listening(node.pid, p.proto, p.port) for p in svc.ports)
    if check.kind == "command":
        box = node.sidecars[svc.name] if is_sidecar(tb, svc) else node.container
        code, _ = box.exec_run(list(check.command))
        return code == 0
    return bool(in_netns(node.pid, lambda: _probe(check)))


def wait_ready(tb: Any, svc: ServiceRun) -> None:
    """Wait until `svc` passes its readiness check; TestbedError after its timeout."""
    svc = resolved(tb, svc)
    timeout = (svc.ready or Readiness()).timeout_s
    deadline = time.monotonic() + timeout
    while not ready_once(tb, svc):
        if time.monotonic() > deadline:
            raise TestbedError(f"{svc.host}: service {svc.name} not ready within {timeout:g} s "
                               f"({(svc.ready or Readiness()).kind} check)")
        time.sleep(_POLL_S)
