"""A Mininet link whose interfaces are made by the testbed: a plain veth, or through a link backend."""

from __future__ import annotations

from typing import Any

from mininet.link import Link
from mininet.node import Node

from testbed.ledger import Ledger
from testbed.links.base import LinkBackend, LinkEnds
from testbed.links.veth import make_veth
from testbed.topology.model import Shape


def netns_of(node: Node) -> int | None:
    """The PID whose network namespace holds `node`'s interfaces (None: the root namespace)."""
    return node.pid if node.inNamespace else None


class TestbedLink(Link):
    """A Mininet Link made by the testbed; `backend` set means it is emulated (shapable, can go down)."""

    def __init__(self, node1: Node, node2: Node, *, ledger: Ledger, link_id: str = "",
                 backend: LinkBackend | None = None, forward: Shape = Shape(), reverse: Shape = Shape(),
                 **params: Any) -> None:
        self.link_id = link_id or f"{node1.name}-{node2.name}"
        self.ledger = ledger
        self.backend = backend
        self.forward = forward
        self.reverse = reverse
        super().__init__(node1, node2, fast=True, **params)

    def makeIntfPair(self, intfname1: str, intfname2: str, addr1: str | None = None,  # noqa: N802
                     addr2: str | None = None, node1: Node | None = None, node2: Node | None = None,
                     deleteIntfs: bool = True) -> None:
        """Create the two interfaces, recording those in the root namespace before they exist."""
        assert node1 is not None and node2 is not None
        for node, name in ((node1, intfname1), (node2, intfname2)):
            if not node.inNamespace:
                self.ledger.record("interface", name, link=self.link_id)
        if self.backend is None:
            make_veth(intfname1, netns_of(node1), intfname2, netns_of(node2), addr1, addr2)
        else:
            ends = LinkEnds(self.link_id, intfname1, netns_of(node1), intfname2, netns_of(node2))
            self.backend.create(ends, self.forward, self.reverse)

    def delete(self) -> None:
        """Remove the interfaces (and the emulation state, for an emulated link)."""
        if self.backend is not None:
            self.backend.delete(self.link_id)
        super().delete()
