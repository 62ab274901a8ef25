"""Mininet with Containernet's `addDocker`, for scripts that build a network by hand."""

from __future__ import annotations

from functools import partial
from typing import Any

from mininet.net import Mininet

from testbed.emulation.dockerhost import DockerHost
from testbed.emulation.link import TestbedLink
from testbed.emulation.plainhost import PlainHost
from testbed.ledger import Ledger


class TestbedNet(Mininet):
    """A Mininet whose Docker hosts and host shells belong to a run's ledger (so `testbed clean` works).

    Containernet scripts port by changing the import: `net.addDocker('d1', dimage='testbed/echo')`.
    Name switches with `ledger.prefix` (e.g. f"{ledger.prefix}s1") so cleanup can find them.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, *args: Any, ledger: Ledger, **kwargs: Any) -> None:
        self.ledger = ledger
        kwargs.setdefault("host", PlainHost)
        # links made from the root namespace: a container's shell cannot name other namespaces by PID
        kwargs.setdefault("link", partial(TestbedLink, ledger=ledger))
        super().__init__(*args, **kwargs)

    def addDocker(self, name: str, dimage: str, **params: Any) -> DockerHost:  # noqa: N802
        """Add a Docker host (Containernet's signature: `dimage`, plus cpu, memory, environment...)."""
        return self.addHost(name, cls=DockerHost, dimage=dimage, ledger=self.ledger, **params)

    def addHost(self, name: str, cls: Any = None, **params: Any):  # noqa: N802
        """Mininet's addHost; a namespace host's shell is recorded in the ledger."""
        host = super().addHost(name, cls=cls, **params)
        if not isinstance(host, DockerHost):
            self.ledger.record_process(host.pid, f"shell of {name}")
        return host

    def addSwitch(self, name: str, cls: Any = None, **params: Any):  # noqa: N802
        """Mininet's addSwitch; the bridge is recorded in the ledger before it exists."""
        self.ledger.record("ovs_bridge", name)
        return super().addSwitch(name, cls=cls, **params)

    def start(self) -> None:
        """Start the network, then let each Docker host's main command run."""
        super().start()
        for host in self.hosts:
            if isinstance(host, DockerHost):
                for intf in host.intfList():
                    host.cmd("ethtool", "-K", intf.name, "tx", "off")
                host.ready()
