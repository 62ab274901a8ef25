"""A run's servers: their doors, the controller's way to each, and which node and link classes a site gets.

The Testbed asks this object, for a site on another server, for Cluster Edition's remote classes
(testbed/cluster/nodes.py); sites on `localhost` keep the Testbed's own. The controller listens on
this machine's loopback; every other server reaches it at its own 127.0.0.1 and the same port,
through an ssh remote forward (`ssh -R`) that this run starts and records, so no firewall needs to
open for OpenFlow and the same controller target works on every server. A server with Docker hosts
gets its engine reached through a recorded socket forward (testbed/cluster/engine.py). Emulated
links run where they end (testbed/cluster/links.py): a WAN link to another server through the
emulator here, a link with both ends on another server through that server's own emulator (and a
WAN link between two other servers through the first's); the Testbed's `links` (`ClusterLinks`)
takes each down and reshapes it where it runs. A fail-safe NIC of a host there runs there,
controlled from here (testbed/cluster/nics.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from mininet.node import Node

from testbed import proc
from testbed.cluster.engine import Engine, open_engine
from testbed.cluster.nodes import ClusterHost, ClusterLink, ClusterSSHLink, ClusterSwitch, door_of
from testbed.cluster.preflight import servers_of
from testbed.cluster.server import LOCAL, Server, record_remote_process, record_server
from testbed.errors import TestbedError
from testbed.ledger import RUN_ROOT, Ledger
from testbed.topology.model import LOCAL_SERVER, HostSpec, TopologySpec

log = logging.getLogger(__name__)

#: Exits 0 once 127.0.0.1:PORT (argv[1]) accepts a connection on the server.
CONNECTS = "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 2).close()"


class Cluster:
    """The servers of one run (localhost included) and the classes and forwards that place sites on them."""

    def __init__(self, topo: TopologySpec, ledger: Ledger) -> None:
        self.topo = topo
        self.ledger = ledger
        self.doors: dict[str, Server] = servers_of(topo)
        self.site_server = {s.name: s.server for s in topo.sites}
        self.forwards: list[Any] = []
        self.engines: dict[str, Engine] = {}  # server -> its Docker engine, for servers with Docker hosts
        self._emulator: Any = None  # a userspace link emulator of our own, when the run's links are netem
        self.tunnels: dict[str, Any] = {}  # emulated links with an end on another server, by link id
        self.remote_emulators: dict[str, Any] = {}  # server -> its link emulator (links with both ends there)

    def remote(self, site: str) -> Server | None:
        """The door of `site`'s server, or None when the site is on this machine."""
        name = self.site_server[site]
        return None if name == LOCAL_SERVER else self.doors[name]

    def check(self, nics: bool) -> None:
        """Refuse, before anything is made, what a remote site cannot have yet (a capability not faked)."""
        for site in self.topo.sites:
            if self.remote(site.name) is None:
                continue
            for h in site.hosts:  # a NIC there runs there (testbed/cluster/nics.py), python data path only
                if h.nic is not None and nics and h.nic.datapath == "bpf":
                    raise TestbedError(f"sites.{site.name}.hosts.{h.name}.nic.datapath: bpf is not checked on "
                                       f"server {site.server} (the BPF self-test does not run through the door "
                                       "yet): use auto (python there) or python")

    def start(self, controller_port: int) -> None:
        """Record each server, open a master connection to each, forward the controller's port to each
        (ready when it connects there), reach each engine that has Docker hosts."""
        for door in self.doors.values():
            if not door.local:
                record_server(self.ledger, door)
        for name, door in list(self.doors.items()):
            if not door.local:
                self.doors[name] = self._master(door)
        for door in self.doors.values():
            if door.local:
                continue
            argv = ["ssh", *door.ssh_options(), "-N", "-o", "ExitOnForwardFailure=yes", "-o",
                    "ServerAliveInterval=5", "-R", f"127.0.0.1:{controller_port}:127.0.0.1:{controller_port}",
                    door.destination]
            out = (self.ledger.run_dir or Path("/tmp")) / f"controller-forward-{door.name}.log"
            p = proc.spawn(argv, output=out, on_start=lambda pid, d=door: self.ledger.record_process(
                pid, f"controller forward to {d.name}"))
            self.forwards.append(p)
            self._wait_forward(door, controller_port, p)
        for name in self.docker_servers():
            self.engines[name] = open_engine(self.doors[name], self.ledger, RUN_ROOT / self.ledger.rid)

    def docker_servers(self) -> list[str]:
        """The other servers that sites with Docker hosts are placed on."""
        return sorted({s.server for s in self.topo.sites if s.server != LOCAL_SERVER
                       and any(h.is_docker for h in s.hosts)})

    def server_of(self, site: str) -> str:
        """The name of the server `site` is placed on."""
        return self.site_server[site]

    def _master(self, door: Server, timeout: float = 15.0) -> Server:
        """A recorded master connection to `door`'s server; the door that multiplexes short commands over it."""
        path = RUN_ROOT / self.ledger.rid / f"cm-{door.name}"
        self.ledger.record("file", str(path))
        opts = [*door.ssh_options(), "-o", f"ControlPath={path}"]
        out = (self.ledger.run_dir or Path("/tmp")) / f"ssh-master-{door.name}.log"
        p = proc.spawn(["ssh", *opts, "-M", "-N", "-o", "ControlPersist=no", "-o", "ServerAliveInterval=5",
                        door.destination], output=out,
                       on_start=lambda pid: self.ledger.record_process(pid, f"ssh master connection to {door.name}"))
        self.forwards.append(p)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise TestbedError(f"ssh master connection to {door} exited {p.returncode}")
            if proc.run(["ssh", *opts, "-O", "check", door.destination], check=False, timeout=10).ok:
                return replace(door, control_path=str(path))
            time.sleep(0.05)
        raise TestbedError(f"ssh master connection to {door} not ready after {timeout:g} s")

    @staticmethod
    def _wait_forward(door: Server, port: int, p: Any, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise TestbedError(f"controller forward to {door} exited {p.returncode} (AllowTcpForwarding?)")
            if door.run(["python3", "-c", CONNECTS, str(port)], check=False, timeout=10).ok:
                return
        raise TestbedError(f"the controller is not reachable from {door} after {timeout:g} s")

    def wait_connected(self, switch_of: dict[str, str], timeout: float) -> None:
        """Until every bridge of a site on another server is connected to the controller (asked there)."""
        from testbed.controller import connection_status

        deadline = time.monotonic() + timeout
        for site, bridge in switch_of.items():
            door = self.remote(site)
            while door is not None:
                b = door.run(["ovs-vsctl", "--format=json", "--columns=name,controller", "list", "Bridge"])
                c = door.run(["ovs-vsctl", "--format=json", "--columns=_uuid,is_connected", "list", "Controller"])
                if connection_status(b.stdout, c.stdout).get(bridge, False):
                    break
                if time.monotonic() >= deadline:
                    raise TestbedError(f"bridge {bridge} on {door} not connected to the controller after {timeout:g}s")
                time.sleep(0.1)

    def switch_params(self, site: str, base: Any) -> dict[str, Any]:
        """addSwitch's extra parameters for `site`'s switch ({} on this machine); `base`: the net's switch partial."""
        door = self.remote(site)
        options = dict(getattr(base, "keywords", {}))  # datapath, protocols, fail mode, batch, run label
        return {} if door is None else {"cls": partial(ClusterSwitch, **options), "door": door}

    def host_params(self, spec: HostSpec) -> dict[str, Any]:
        """addHost's extra parameters for a plain host of a site on another server ({} on this machine)."""
        door = self.remote(spec.site)
        return {} if door is None else {"cls": ClusterHost, "door": door}

    def record_node(self, node: Node, what: str) -> None:
        """Record a node's processes: the local ssh carrying its shell, and its shell on the server."""
        door = door_of(node)
        if door.local:
            self.ledger.record_process(node.pid, what)
            return
        self.ledger.record_process(node.shell.pid, f"ssh for {what}")
        record_remote_process(self.ledger, door, node.pid, what)

    def link_cls(self, node1: Node, node2: Node, default: Any) -> Any:
        """The link class between two nodes: `default` here, ClusterLink on one server, else an SSH tunnel link."""
        d1, d2 = door_of(node1), door_of(node2)
        if d1.name != d2.name and not (d1.local or d2.local):  # emulated on the first server, where its ssh starts
            return partial(ClusterSSHLink, emulator=lambda _backend: self.remote_emulator(d1), tunnels=self.tunnels)
        if d1.name != d2.name:
            return partial(ClusterSSHLink, emulator=self.emulator, tunnels=self.tunnels)
        if d1.local:
            return default
        return partial(ClusterLink, emulator=partial(self.remote_emulator, d1), tunnels=self.tunnels)

    def emulator(self, backend: Any) -> Any:
        """The userspace link emulator that shapes tunnel links' ends here: the run's `backend` when it is
        one, else one of the cluster's own (started on first use, closed by `stop`)."""
        from testbed.cluster.links import ClusterLinks
        from testbed.links.userspace import UserspaceBackend

        if isinstance(backend, ClusterLinks):
            backend = backend.backend
        if isinstance(backend, UserspaceBackend):
            return backend
        if self._emulator is None:
            self._emulator = UserspaceBackend(self.ledger, self.ledger.run_dir or RUN_ROOT / self.ledger.rid,
                                              seed=getattr(backend, "seed", None))
        return self._emulator

    def remote_emulator(self, door: Server) -> Any:
        """The link emulator of `door`'s server (made on first use, started there on first link, closed by `stop`)."""
        from testbed.cluster.links import RemoteEmulator

        if door.name not in self.remote_emulators:
            tag = f"r{len(self.remote_emulators)}"
            self.remote_emulators[door.name] = RemoteEmulator(door, self.ledger, RUN_ROOT / self.ledger.rid, tag)
        return self.remote_emulators[door.name]

    def links(self, backend: Any) -> Any:
        """The run's link backend as the Testbed uses it: `backend`, with the WAN links to other servers in front."""
        from testbed.cluster.links import ClusterLinks

        return ClusterLinks(backend, self.tunnels)

    def door(self, node: Node) -> Server:
        return door_of(node)

    def stop(self) -> None:
        """Close the engines, end their forwards and the controller's (by handle)."""
        for emulator in [self._emulator, *self.remote_emulators.values()]:
            if emulator is not None:
                try:
                    emulator.close()
                except Exception as exc:  # noqa: BLE001 - the rest is still to be stopped
                    log.warning("closing a link emulator: %s", exc)
        self._emulator = None
        self.remote_emulators.clear()
        for engine in self.engines.values():
            engine.close()
        self.engines.clear()
        for p in self.forwards:
            proc.stop(p, timeout=5)
        self.forwards.clear()


__all__ = ["Cluster", "LOCAL"]
