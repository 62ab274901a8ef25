"""A host's network namespace seen from the root namespace: its links taken down and up, routes kept.

Everything here acts through `nsenter -t PID -n` with the root namespace's own `ip`, so it works
whatever runs (or no longer runs, or is frozen) inside the host: a killed or paused container
cannot answer a shell, but its namespace can still be reached through the holder's PID.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Sequence

from testbed import proc
from testbed.errors import TestbedError

PORT_POLL_S = 0.02
_CLONE_NEWNET = 0x40000000


def nsenter(pid: int, argv: list[str]) -> list[str]:
    """`argv` run in the network namespace of process `pid` (root's binaries, root's file system)."""
    return ["nsenter", "-t", str(pid), "-n", *argv]


def listening(pid: int, proto: str, port: int) -> bool:
    """True when a socket of the namespace of `pid` is bound to `port` (TCP: listening), from /proc/PID/net."""
    states = {"tcp": {"0A"}, "udp": {"07", "01"}}[proto]
    for table in (proto, proto + "6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] in states:
                return True
    return False


def probe_once(check: Any) -> bool:
    """One readiness probe (`check`: kind udp/tcp/http, port, send, expect, path) against 127.0.0.1 of the calling thread's namespace."""
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


def in_netns(pid: int, probe: Callable[[], Any]) -> Any:
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


def container_path(pid: int, path: str) -> Path:
    """`path` inside the file system of the container whose init is host PID `pid`."""
    root = Path(f"/proc/{pid}/root")
    if not root.exists():
        raise TestbedError(f"container init {pid} is gone (was the host killed?)")
    return root / path.lstrip("/")


def find_pid(container_pid: int, inner_pid: int) -> int | None:
    """The PID (in this /proc) of the process numbered `inner_pid` in the PID namespace of `container_pid`; None if none."""
    try:
        ns = os.readlink(f"/proc/{container_pid}/ns/pid")
    except OSError:
        return None
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
    return None


def parse_port(text: str) -> tuple[str, int]:
    """Docker's "7000/udp" notation (TCP without a suffix) as (proto, port)."""
    number, _, proto = text.partition("/")
    return proto or "tcp", int(number)


def wait_ports(wanted: Mapping[Hashable, tuple[int, Sequence[tuple[str, int]]]], timeout: float) -> list[Hashable]:
    """Poll, from outside, until every key's namespace (its PID) listens on all its (proto, port); the keys still not after `timeout`.

    One loop over /proc for all hosts: no process is started inside them, so a hundred services
    starting at once are not slowed down by their own readiness checks.
    """
    todo = {key: list(ports) for key, (pid, ports) in wanted.items() if ports}
    pids = {key: pid for key, (pid, _) in wanted.items()}
    deadline = time.monotonic() + timeout
    while True:
        for key in list(todo):
            todo[key] = [(proto, port) for proto, port in todo[key] if not listening(pids[key], proto, port)]
            if not todo[key]:
                del todo[key]
        if not todo or time.monotonic() >= deadline:
            return list(todo)
        time.sleep(PORT_POLL_S)


def links(pid: int) -> list[str]:
    """The interfaces of the namespace of `pid`, loopback left out."""
    out = proc.run(nsenter(pid, ["ip", "-j", "link", "show"]), timeout=10).stdout
    return [item["ifname"] for item in json.loads(out or "[]") if item.get("ifname") != "lo"]


def route_args(route: dict) -> list[str]:
    """`ip route replace` arguments that re-create one route of `ip -j route show`."""
    args = [route["dst"]]
    if route.get("gateway"):
        args += ["via", route["gateway"]]
    if route.get("dev"):
        args += ["dev", route["dev"]]
    if route.get("metric") is not None:
        args += ["metric", str(route["metric"])]
    if route.get("prefsrc"):
        args += ["src", route["prefsrc"]]
    return args


@dataclass
class LinkState:
    """What taking a namespace's links down loses and bringing them up must restore: its static routes."""

    routes: list[dict] = field(default_factory=list)


def static_routes(pid: int) -> list[dict]:
    """The routes of the namespace of `pid` that the kernel would not re-create on link up."""
    out = proc.run(nsenter(pid, ["ip", "-j", "route", "show"]), timeout=10).stdout
    return [r for r in json.loads(out or "[]") if r.get("protocol") != "kernel"]


def links_down(pid: int) -> LinkState:
    """Every interface of the namespace of `pid` down (the host falls silent); what `links_up` needs back."""
    state = LinkState(static_routes(pid))
    for name in links(pid):
        proc.run(nsenter(pid, ["ip", "link", "set", "dev", name, "down"]), timeout=10)
    return state


def links_up(pid: int, state: LinkState | None = None) -> None:
    """Every interface of the namespace of `pid` up again, with the routes `links_down` saw."""
    for name in links(pid):
        proc.run(nsenter(pid, ["ip", "link", "set", "dev", name, "up"]), timeout=10)
    for route in (state.routes if state else []):
        proc.run(nsenter(pid, ["ip", "route", "replace", *route_args(route)]), timeout=10)
