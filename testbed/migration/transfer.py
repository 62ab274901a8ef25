"""Runs the state agent (in service containers, or on the machine in a host's namespace); hosts' migration addresses.

Twins that share an anycast address cannot open a connection to each other on it, so each host
taking part gets a second address from the top of the topology's subnet (one no host uses),
added in its own network namespace; the agent's connection runs between those addresses, across
the emulated links. Every command goes through testbed/proc.py (`docker exec`, `nsenter`). The
one copy of a directory between hosts: migration and standbys (the agent in the containers) and
replicas' syncs and image shipment (`copy_dir`, the agent on the machine's file system).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from testbed import proc
from testbed.emulation.netns import nsenter
from testbed.errors import TestbedError
from testbed.experiment import services
from testbed.experiment.spec import ServiceRun

log = logging.getLogger(__name__)
AGENT_PATH = Path(__file__).parent / "agent.py"
AGENT = AGENT_PATH.read_text()
_ADDRS: dict[tuple[str, str], str] = {}


def migration_ip(topo: Any, host: str) -> str:
    """The migration address of `host`: counted down from the top of the subnet, skipping used ones (pure)."""
    net = ipaddress.ip_network(topo.subnet, strict=False)
    used = {h.ip.split("/")[0] for h in topo.hosts()}
    used |= {h.nic.ip.split("/")[0] for h in topo.hosts() if getattr(h, "nic", None) is not None}
    names = sorted(h.name for h in topo.hosts())
    free = [str(a) for a in reversed(list(net.hosts())) if str(a) not in used]
    if len(free) < len(names):
        raise TestbedError(f"subnet {topo.subnet} has no room for migration addresses")
    return free[names.index(host)]


def ensure_address(tb: Any, host: str) -> str:
    """Add `host`'s migration address to its interface (once per run); the address."""
    key = (tb.rid, host)
    if key not in _ADDRS:
        ip = migration_ip(tb.topo, host)
        node = tb.node(host)
        prefix = ipaddress.ip_network(tb.topo.subnet, strict=False).prefixlen
        proc.run(nsenter(node.pid, ["ip", "addr", "add", f"{ip}/{prefix}", "dev", node.defaultIntf().name]),
                 timeout=10)
        _ADDRS[key] = ip
    return _ADDRS[key]


def container_name(tb: Any, svc: ServiceRun) -> str:
    """The container whose file system holds `svc`'s state (its own, or its host's)."""
    node = tb.node(svc.host)
    if services.is_sidecar(tb, svc):
        return node.sidecars[svc.name].name
    return node.cname


def agent_argv(container: str, args: Sequence[str]) -> list[str]:
    """`docker exec` of the state agent in `container` (pure)."""
    return ["docker", "exec", container, "python3", "-u", "-c", AGENT, *[str(a) for a in args]]


def host_argv(pid: int, args: Sequence[str]) -> list[str]:
    """The state agent on the machine (its file system) in the network namespace of process `pid` (pure)."""
    return nsenter(pid, [sys.executable, "-u", str(AGENT_PATH), *[str(a) for a in args]])


def lines_of(text: str) -> list[dict]:
    """The JSON objects an agent printed, one per line (other lines skipped)."""
    out = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


def run_agent(container: str, args: Sequence[str], timeout: float = 300.0, argv: Sequence[str] | None = None) -> dict:
    """Run a one-shot agent command (in `container`, or `argv` as given) to its end; its last JSON line."""
    res = proc.run(list(argv) if argv is not None else agent_argv(container, args), timeout=timeout)
    found = lines_of(res.stdout)
    if not found:
        raise TestbedError(f"state agent in {container} printed nothing: {res.stderr.strip()[-200:]}")
    return found[-1]


class Spawned:
    """A long-running agent: its `docker exec` process, and the lines it printed so far."""

    def __init__(self, container: str, args: Sequence[str], log_path: Path | None = None,
                 argv: Sequence[str] | None = None) -> None:
        self.container = container  # where it runs (a container's name, or a label with `argv`)
        self.popen = proc.spawn_piped(list(argv) if argv is not None else agent_argv(container, args), stderr=log_path)
        self.buf = b""
        self.items: list[dict] = []

    def read(self, timeout: float) -> list[dict]:
        """Lines that arrive within `timeout` seconds (at least one if any comes)."""
        new: list[dict] = []
        deadline = time.monotonic() + timeout
        fd = self.popen.stdout.fileno()
        while not new:
            left = deadline - time.monotonic()
            if left <= 0 or not proc.readable(fd, left):
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self.buf += chunk
            *done, self.buf = self.buf.split(b"\n")
            new += lines_of(b"\n".join(done).decode(errors="replace"))
        self.items += new
        return new

    def wait_for(self, key: str, timeout: float) -> dict:
        """The first line with `key` (reading on); TestbedError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            for item in self.items:
                if key in item:
                    return item
            left = deadline - time.monotonic()
            if left <= 0 or (not self.read(left) and self.popen.poll() is not None):
                raise TestbedError(f"state agent in {self.container}: no {key!r} within {timeout:g} s")

    def stop(self, container_pid: int | None) -> None:
        """Kill the agent inside its container (by the PID it printed), then its docker exec."""
        inner = next((i["pid"] for i in self.items if "pid" in i), None)
        if inner is not None and container_pid is not None:
            try:
                os.kill(services.host_pid(container_pid, int(inner)), signal.SIGKILL)
            except (TestbedError, ProcessLookupError):
                pass
        proc.stop(self.popen, timeout=2.0)


def copy_dir(tb: Any, src: str, dst: str, src_dir: Path, dst_dir: Path, port: int, what: str,
             timeout: float = 120.0) -> int:
    """Copy machine directory `src_dir` of host `src` into `dst_dir` of host `dst`, over the emulated network; bytes.

    The sender streams the tar onto the connection as it reads the files and the receiver extracts
    it as it arrives, so a caller timing this call (imagedist.ship's `transfer` phase) times: the
    receiver's start until it listens, the sender's start and TCP handshake, the bytes on the wire
    (extraction overlapped), and the receiver's close after the last byte is written to disk.
    """
    src_ip, dst_ip = ensure_address(tb, src), ensure_address(tb, dst)
    label = f"{what} receiver on {dst}"
    receiver = Spawned(label, [], argv=host_argv(tb.node(dst).pid, ["recv", port, dst_dir, 1, 0]))
    tb.ledger.record_process(receiver.popen.pid, label)
    try:
        receiver.wait_for("listening", 30)
        run_agent(f"{what} sender on {src}", [], timeout,
                  argv=host_argv(tb.node(src).pid, ["send", src_ip, dst_ip, port, src_dir]))
        return int(receiver.wait_for("received", timeout)["bytes"])
    finally:
        receiver.stop(None)
