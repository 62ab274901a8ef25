"""Mininet with Containernet's `addDocker`, for scripts that build a network by hand (also at run time)."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from mininet.log import output
from mininet.net import Mininet
from mininet.node import Node, OVSSwitch

from testbed import proc
from testbed.emulation.dockerhost import DockerHost
from testbed.emulation.link import TestbedLink
from testbed.emulation.plainhost import PlainHost
from testbed.errors import TestbedError
from testbed.ledger import Ledger

log = logging.getLogger(__name__)


def takes_ledger(cls: Any) -> bool:
    """True for host classes that record what they create in the run's ledger themselves."""
    from testbed.compat.params import unwrap

    klass, _ = unwrap(cls)
    return isinstance(klass, type) and (issubclass(klass, DockerHost) or getattr(klass, "takes_ledger", False))


class TestbedNet(Mininet):
    """A Mininet whose Docker hosts, host shells and bridges belong to a run's ledger (so `testbed clean` works).

    Containernet scripts port by changing the import: `net.addDocker('d1', dimage='testbed/echo')`.
    Hosts and links added after `start()` are attached and ready when the call returns, as in
    Containernet; `removeDocker` and `removeLink` take them away again. Name switches with
    `ledger.prefix` (e.g. f"{ledger.prefix}s1") so cleanup can find them.
    """

    __test__ = False  # not a pytest test class
    docker_cls: type = DockerHost

    def __init__(self, *args: Any, ledger: Ledger, **kwargs: Any) -> None:
        self.ledger = ledger
        self.started = False
        kwargs.setdefault("host", PlainHost)
        # links made from the root namespace: a container's shell cannot name other namespaces by PID
        kwargs.setdefault("link", partial(TestbedLink, ledger=ledger))
        super().__init__(*args, **kwargs)

    def addDocker(self, name: str, dimage: str | None = None, cls: Any = None,  # noqa: N802
                  **params: Any) -> DockerHost:
        """Add a Docker host (Containernet's signature: `dimage`, plus cpu, memory, environment...)."""
        return self.addHost(name, cls=cls or self.docker_cls, dimage=dimage, **params)

    def removeDocker(self, name: str | Node, **params: Any) -> bool:  # noqa: N802
        """Containernet's removeDocker: the host's links, then its container."""
        return self.removeHost(name, **params)

    def addHost(self, name: str, cls: Any = None, **params: Any):  # noqa: N802
        """Mininet's addHost; a namespace host's shell is recorded in the ledger, a Docker host gets it."""
        if takes_ledger(cls or self.host):
            params.setdefault("ledger", self.ledger)
        host = super().addHost(name, cls=cls, **params)
        if not isinstance(host, DockerHost):
            self.ledger.record_process(host.pid, f"shell of {name}")
        return host

    def removeHost(self, name: str | Node, **params: Any) -> bool:  # noqa: N802
        """Remove a host at run time: its links (ports detached from switches), then the host itself."""
        host = self[name] if isinstance(name, str) else name
        for link in [l for l in self.links if host in (l.intf1.node, l.intf2.node)]:
            self.removeLink(link)
        self.hosts.remove(host)
        del self.nameToNode[host.name]
        host.stop(deleteIntfs=True)
        return True

    def addSwitch(self, name: str, cls: Any = None, **params: Any):  # noqa: N802
        """Mininet's addSwitch; the bridge is recorded in the ledger before it exists."""
        self.ledger.record("ovs_bridge", name)
        switch = super().addSwitch(name, cls=cls, **params)
        if self.started:
            switch.start(self.controllers)
        return switch

    def addLink(self, node1: Any, node2: Any, port1: int | None = None, port2: int | None = None,  # noqa: N802
                cls: Any = None, **params: Any):
        """Mininet's addLink; after `start()` the new ports are attached and a new Docker host is ready."""
        link = super().addLink(node1, node2, port1=port1, port2=port2, cls=cls, **params)
        if self.started:
            self._attach(link)
        return link

    def _attach(self, link: Any) -> None:
        """Add a run-time link's switch ports to their bridges and let new Docker hosts start."""
        for intf in (link.intf1, link.intf2):
            if isinstance(intf.node, OVSSwitch):
                intf.node.attach(intf)
        for intf in (link.intf1, link.intf2):
            if isinstance(intf.node, DockerHost):
                intf.node.cmd("ethtool", "-K", intf.name, "tx", "off")
                intf.node.ready()

    def removeLink(self, link: Any = None, node1: Any = None, node2: Any = None) -> None:  # noqa: N802
        """Containernet's removeLink: by link object or by its two nodes (or their names)."""
        if link is None:
            a = self[node1] if isinstance(node1, str) else node1
            b = self[node2] if isinstance(node2, str) else node2
            found = self.linksBetween(a, b)
            if not found:
                raise TestbedError(f"no link between {getattr(a, 'name', a)} and {getattr(b, 'name', b)}")
            link = found[0]
        for intf in (link.intf1, link.intf2):
            if isinstance(intf.node, OVSSwitch):
                proc.run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-port", intf.node.name, intf.name])
        link.delete()
        self.links.remove(link)

    def ping(self, hosts: list | None = None, timeout: str | None = None,  # type: ignore[override]
             manualdestip: str | None = None) -> float:
        """Mininet's ping; with Containernet's `manualdestip`, each host pings that address once."""
        if manualdestip is None:
            return super().ping(hosts=hosts, timeout=timeout)
        packets = lost = 0
        for node in hosts or self.hosts:
            opts = f"-W {timeout} " if timeout else ""
            sent, received = self._parsePing(node.cmd(f"LANG=C ping -c1 {opts}{manualdestip}"))
            packets += sent
            lost += sent - received
            output(f"{node.name} -> {manualdestip if received else 'X'}\n")
        ploss = 100.0 * lost / packets if packets else 100.0
        output(f"*** Results: {ploss:.0f}% dropped ({packets - lost}/{packets} received)\n")
        return ploss

    def start(self) -> None:
        """Start the network, then let each Docker host's main command run."""
        super().start()
        for host in self.hosts:
            if isinstance(host, DockerHost):
                for intf in host.intfList():
                    host.cmd("ethtool", "-K", intf.name, "tx", "off")
                host.ready()
        self.started = True

    def stop(self) -> None:
        """Mininet's stop (controllers, switches, hosts, links)."""
        self.started = False
        super().stop()
