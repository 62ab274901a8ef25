"""Cluster Edition's remote nodes and tunnel links, reached through the testbed's command door.

`DoorMixin` replaces the part of Cluster Edition's RemoteMixin that assumes passwordless sudo and
ssh's defaults (and registers Mininet's kill-by-name cleanup on every server): its shells and commands run over
`Server.ssh_options()` (BatchMode, the server's key, port and known_hosts). On top of it:
`ClusterHost` (a RemoteHost), `ClusterSwitch` (a RemoteOVSSwitch made like TestbedSwitch, its
ovs-vsctl transactions through the door), `ClusterLink` (a veth made on the server both ends are
on) and `ClusterSSHLink` (a RemoteSSHLink whose tap devices and ssh tunnel are ours, by number,
so two runs never fight over `tap9`).
"""

from __future__ import annotations

import logging
import os
import shlex
from itertools import groupby
from pathlib import Path
from typing import Any, Callable, Sequence

from mininet.examples.cluster import RemoteHost, RemoteMixin, RemoteOVSSwitch, RemoteSSHLink
from mininet.node import Node

from testbed import proc
from testbed.cluster.server import LOCAL, Server, record_remote_process
from testbed.emulation.link import TestbedLink
from testbed.emulation.plainhost import tolerant_decoder
from testbed.emulation.switch import OVS_TIMEOUT_S, TestbedSwitch, delete_args, transactions
from testbed.errors import TestbedError
from testbed.ledger import Ledger
from testbed.links.base import LinkEnds
from testbed.links.veth import veth_cmd
from testbed.topology.model import Shape

log = logging.getLogger(__name__)


def door_of(node: Node) -> Server:
    """The server `node` runs on (this machine for a node that is not a cluster node)."""
    return getattr(node, "door", LOCAL)


class DoorMixin:
    """RemoteMixin's remote shell and commands, over the door's ssh; no sudo for root, no kill-by-name cleanup."""

    door: Server

    def __init__(self, name: str, door: Server, **kwargs: Any) -> None:
        self.door = door
        self.server = door.name
        self.serverIP = door.address
        self.user = door.user
        self.controlPath = False
        self.splitInit = False
        self.isRemote = not door.local
        self.dest = door.destination if self.isRemote else None
        self.sshcmd = ["ssh", *door.ssh_options(), "-q", door.destination] if self.isRemote else []
        self.shell, self.pid = None, None
        super(RemoteMixin, self).__init__(name, **kwargs)  # type: ignore[call-arg]  # skip RemoteMixin.__init__

    def _popen(self, cmd: Any, sudo: bool = True, tt: bool = True, **params: Any) -> Any:
        """Start `cmd` on the server: `ssh [-tt] user@addr -- 'quoted argv'` (sudo only for a non-root user)."""
        argv = cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]
        if self.isRemote:
            if sudo and self.user != "root":
                argv = ["sudo", "-E", *argv]
            argv = ["ssh", *self.door.ssh_options(), *(["-tt"] if tt else []), self.door.destination, "--",
                    shlex.join(argv)]
        params.update(preexec_fn=os.setpgrp)  # as Cluster Edition: the terminal's ^C is not the node's
        log.debug("%s: _popen %s", getattr(self, "name", "?"), argv)
        return Node._popen(self, argv, **params)  # type: ignore[arg-type]

    def startShell(self, *args: Any, **kwargs: Any) -> None:  # noqa: N802
        self.decoder = tolerant_decoder()
        super().startShell(*args, **kwargs)  # type: ignore[misc]


class ClusterHost(DoorMixin, RemoteHost):
    """A plain host (a namespace) on a server: Cluster Edition's RemoteHost through the door."""

    __test__ = False


class ClusterSwitch(DoorMixin, RemoteOVSSwitch, TestbedSwitch):
    """A site's edge switch on a server: a RemoteOVSSwitch whose bridge is planned like TestbedSwitch's
    and made by ovs-vsctl argument lists through the door, per server in a few transactions."""

    __test__ = False

    def apply_here(self, plans: Sequence[Any]) -> None:
        for args in transactions(plans):
            self.door.run(args, timeout=OVS_TIMEOUT_S + 10)

    def start(self, controllers: Sequence[Any]) -> None:  # type: ignore[override]
        self.plan = self.bridge_plan(controllers)
        if not self.batch:
            self.apply_here([self.plan])

    @classmethod
    def batchStartup(cls, switches: Sequence[Any], run: Any = None) -> Sequence[Any]:  # noqa: N802
        key = lambda s: s.door.name  # noqa: E731
        for _, group in groupby(sorted(switches, key=key), key):
            members = list(group)
            plans = [s.plan for s in members if s.batch and s.plan is not None]
            if plans:
                members[0].apply_here(plans)
        for s in switches:
            s.batch = False
        return switches

    def stop(self, deleteIntfs: bool = True) -> None:  # noqa: N803
        self.door.run(delete_args([self.name]), timeout=OVS_TIMEOUT_S + 10, check=False)
        if self.datapath == "user":
            self.door.run(["ip", "link", "del", self.name], check=False)
        Node.stop(self, deleteIntfs)

    @classmethod
    def batchShutdown(cls, switches: Sequence[Any], run: Any = None) -> Sequence[Any]:  # noqa: N802
        key = lambda s: s.door.name  # noqa: E731
        for _, group in groupby(sorted(switches, key=key), key):
            members = list(group)
            members[0].door.run(delete_args(s.name for s in members), timeout=OVS_TIMEOUT_S + 10, check=False)
        for s in switches:
            s.terminate()
        return switches


class ClusterLink(TestbedLink):
    """A link whose two ends are on one server (not this machine): one veth made there, or, emulated
    (a backend given), through that server's own link emulator (`emulator()`, testbed/cluster/links.py),
    listed in `tunnels` so that it can be taken down and reshaped."""

    __test__ = False

    def __init__(self, node1: Node, node2: Node, *, emulator: Callable[[], Any] | None = None,
                 tunnels: dict[str, Any] | None = None, **params: Any) -> None:
        emulated = params.get("backend") is not None
        if emulated and emulator is None:
            raise TestbedError(f"link {node1.name}-{node2.name} on server {door_of(node1).name}: no link "
                               "emulator there to shape it")
        params["backend"] = emulator() if emulated and emulator is not None else None
        super().__init__(node1, node2, **params)
        if self.backend is not None and tunnels is not None:
            from testbed.cluster.links import LinkControl

            tunnels[self.link_id] = LinkControl(self.backend, self.link_id)

    def makeIntfPair(self, intfname1: str, intfname2: str, addr1: str | None = None,  # noqa: N802
                     addr2: str | None = None, node1: Node | None = None, node2: Node | None = None,
                     deleteIntfs: bool = True) -> None:
        assert node1 is not None and node2 is not None
        door = door_of(node1)
        for node, name in ((node1, intfname1), (node2, intfname2)):
            if not node.inNamespace:
                self.ledger.record("interface", name, link=self.link_id, server=door.name)
        ns1 = node1.pid if node1.inNamespace else None
        ns2 = node2.pid if node2.inNamespace else None
        if self.backend is None:
            door.run(veth_cmd(intfname1, ns1, intfname2, ns2, addr1, addr2, up1=True))
            return
        self.backend.create(LinkEnds(self.link_id, intfname1, ns1, intfname2, ns2), self.forward, self.reverse)
        for name, pid, addr in ((intfname1, ns1, addr1), (intfname2, ns2, addr2)):
            if addr:  # the emulator's veths are made with kernel-chosen MACs
                argv = ["ip", "link", "set", "dev", name, "address", addr]
                door.run(argv if pid is None else ["nsenter", "-t", str(pid), "-n", *argv])


def tunnel_number(rid: str, index: int) -> int:
    """The tap unit of a run's `index`-th tunnel link (`ssh -w N:N`, device tapN): unique per run."""
    return 100000 + (int(rid, 16) * 64 + index) % 4_000_000


class ClusterSSHLink(RemoteSSHLink):
    """A WAN link between switches on two servers: Cluster Edition's SSH tunnel link (an Ethernet
    tunnel, `ssh -o Tunnel=ethernet -w N:N`), its taps and its ssh made through the doors and recorded.
    Between two other servers the tunnel's ssh runs on the first one (the second's key and known_hosts
    paths as given in `servers:`, valid there too), its PID there recorded. With an
    `emulator(backend)`, the first end (this machine's, or the first server's when neither is here)
    goes through that machine's link emulator, shaped or not, and is listed in `tunnels`
    (testbed/cluster/links.py)."""

    __test__ = False
    made = 0

    def __init__(self, node1: Node, node2: Node, *, ledger: Ledger, link_id: str = "",
                 emulator: Callable[[Any], Any] | None = None, tunnels: dict[str, Any] | None = None,
                 **params: Any) -> None:
        self.ledger = ledger
        self.link_id = link_id or f"{node1.name}-{node2.name}"
        backend = params.pop("backend", None)
        self.shapes = (params.pop("forward", Shape()), params.pop("reverse", Shape()))
        self.shaping: Any = None  # testbed/cluster/links.TunnelShaping: its end here, through the emulator
        self.tunnels = tunnels if tunnels is not None else {}
        self.emulator = None if emulator is None else emulator(backend)
        self.remote_pid: tuple[Server, int] | None = None  # the tunnel's ssh on the first server, when not here
        if self.emulator is None and any(shape.shaped for shape in self.shapes):
            raise TestbedError(f"WAN link {self.link_id} joins two servers: no link emulator to shape it")
        super().__init__(node1, node2, **params)

    def makeTunnel(self, node1: Node, node2: Node, intfname1: str, intfname2: str,  # noqa: N802
                   addr1: str | None = None, addr2: str | None = None) -> Any:
        """Taps on both servers, then the tunnel from the first's server to the second's, then renamed."""
        door1, door2 = door_of(node1), door_of(node2)
        if door2.local:  # ssh goes from this machine out
            return self.makeTunnel(node2, node1, intfname2, intfname1, addr2, addr1)
        type(self).made += 1
        unit = tunnel_number(self.ledger.rid, type(self).made)
        tap = f"tap{unit}"
        for door, name in ((door1, intfname1), (door2, intfname2)):
            self.ledger.record("interface", tap, link=self.link_id, server=door.name)
            self.ledger.record("interface", name, link=self.link_id, server=door.name)
            door.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"])
        argv = ["ssh", *door2.ssh_options(), "-n", "-o", "Tunnel=ethernet", "-w", f"{unit}:{unit}",
                door2.destination, "--", "echo @"]
        if not door1.local:  # started on the first server; its shell says the PID there first
            argv = door1.argv(["sh", "-c", 'echo "$$"; exec "$@"', "sh", *argv])
        log_path = (self.ledger.run_dir or Path("/tmp")) / f"tunnel-{self.link_id}.log"
        tunnel = proc.spawn_piped(argv, stderr=log_path)
        self.ledger.record_process(tunnel.pid, f"ssh tunnel of {self.link_id}" +
                                   ("" if door1.local else f" (the ssh to {door1.name} that starts it)"))
        assert tunnel.stdout is not None
        if not door1.local:
            try:
                self._record_remote(door1, tunnel.stdout.readline())
            except BaseException:
                proc.stop(tunnel, timeout=2)
                raise
        first = tunnel.stdout.read(1)
        if first != b"@":
            proc.stop(tunnel, timeout=2)
            why = log_path.read_text(errors="replace").strip()[-300:] if log_path.exists() else ""
            raise TestbedError(f"WAN link {self.link_id}: ssh tunnel to {door2} failed (is PermitTunnel "
                               f"yes in its sshd_config?): {why or shlex.join(argv)}")
        self.cmd = argv
        ends = ((door2, intfname2, addr2),) if self.emulator is not None else ((door1, intfname1, addr1),
                                                                                (door2, intfname2, addr2))
        for door, name, addr in ends:
            door.run(["ip", "link", "set", tap, "name", name, *(["address", addr] if addr else []), "up"])
        if self.emulator is not None:  # the first end through the emulator there: tap -> emulator <- veth on the switch
            from testbed.cluster.links import shape_tunnel

            forward, reverse = self.shapes
            self.shaping = shape_tunnel(self.emulator, self.ledger, self.link_id, tap, unit, intfname1, addr1,
                                        forward, reverse, switch_is_a=node1 is self.node1, door=door1)
            self.tunnels[self.link_id] = self.shaping
        return tunnel

    def _record_remote(self, door: Server, line: bytes) -> None:
        """Record the tunnel's ssh on `door`'s server (its PID, the first line it printed) so clean ends it there."""
        text = line.decode(errors="replace").strip()
        if not text.isdigit():
            raise TestbedError(f"WAN link {self.link_id}: the tunnel's ssh on {door} did not start: {text!r}")
        record_remote_process(self.ledger, door, text, f"ssh tunnel of {self.link_id}")
        self.remote_pid = (door, int(text))

    def stop(self) -> None:
        """End the tunnel (its ssh, by handle) and remove both taps."""
        if self.tunnel is not None:
            proc.stop(self.tunnel, timeout=5)
            if self.remote_pid is not None:  # its ssh there outlives the session that started it
                door, pid = self.remote_pid
                door.run(["kill", str(pid)], check=False)
                self.remote_pid = None
            if self.shaping is not None:
                self.tunnels.pop(self.link_id, None)
                self.shaping.stop()
                self.shaping = None
            for intf in (self.intf1, self.intf2):
                door_of(intf.node).run(["ip", "link", "del", intf.name], check=False)
        self.tunnel = None
