"""Containernet's tree helper: a tree of switches with Docker hosts at the leaves."""

from __future__ import annotations

from typing import Any

from mininet.topo import Topo

from testbed.compat.docker import Docker
from testbed.compat.net import Containernet

#: The image leaves run when none is named (Containernet's ubuntu:trusty cannot be pulled here).
DEFAULT_IMAGE = "testbed/base"


class ContainerTreeTopo(Topo):
    """A tree of depth `depth` and fanout `fanout` whose hosts h1..hN are Docker hosts of `dimage`."""

    def build(self, depth: int = 1, fanout: int = 2, dimage: str = DEFAULT_IMAGE) -> None:  # type: ignore[override]
        self.hostNum, self.switchNum = 1, 1
        self.addTree(depth, fanout, dimage)

    def addTree(self, depth: int, fanout: int, dimage: str) -> str:  # noqa: N802
        """Add a subtree; returns its root's name."""
        if depth > 0:
            node = self.addSwitch(f"s{self.switchNum}")
            self.switchNum += 1
            for _ in range(fanout):
                self.addLink(node, self.addTree(depth - 1, fanout, dimage))
            return node
        node = self.addHost(f"h{self.hostNum}", cls=Docker, dimage=dimage)
        self.hostNum += 1
        return node


def TreeContainerNet(depth: int = 1, fanout: int = 2, dimage: str = DEFAULT_IMAGE,  # noqa: N802
                     **params: Any) -> Containernet:
    """Containernet's TreeContainerNet: a Containernet built from a ContainerTreeTopo."""
    return Containernet(topo=ContainerTreeTopo(depth, fanout, dimage), **params)
