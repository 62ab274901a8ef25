"""A Mininet link whose interfaces are made by the testbed: a plain veth, or through a link backend."""

from __future__ import annotations

import os
from typing import Any

from mininet.link import Intf, Link
from mininet.node import Node

from testbed import proc
from testbed.ledger import Ledger
from testbed.links.base import LinkBackend, LinkEnds
from testbed.links.veth import make_veth
from testbed.topology.model import Shape


def netns_of(node: Node) -> int | None:
    """The PID whose network namespace holds `node`'s interfaces (None: the root namespace)."""
    return node.pid if node.inNamespace else None


def set_mac(name: str, netns_pid: int | None, mac: str) -> None:
    """Give interface `name` (in the namespace of `netns_pid`, None: the root one) the address `mac`."""
    argv = ["ip", "link", "set", "dev", name, "address", mac]
    proc.run(argv if netns_pid is None else ["nsenter", "-t", str(netns_pid), "-n", *argv])


class TestbedIntf(Intf):
    """Mininet's Intf without the shell commands for what the link already did when it made the interface.

    Mininet configures each new interface through its node's shell (`ifconfig … up`, three more
    commands for a MAC), one round trip each, a `docker exec` pty for a Docker host; and at
    teardown deletes both ends of a veth, though the kernel removes the pair with either end.
    """

    __test__ = False

    def __init__(self, name: str, node: Node | None = None, made_mac: str | None = None,
                 made_up: bool = False, **params: Any) -> None:
        self.made_mac = made_mac  # the address the interface was created with
        self.made_up = made_up  # created up: the first "bring it up" is already done
        super().__init__(name, node=node, **params)

    def setMAC(self, macstr: str) -> str:  # noqa: N802
        if macstr and macstr == self.made_mac:
            self.mac = macstr
            return ""
        return super().setMAC(macstr)

    def isUp(self, setUp: bool = False) -> bool:  # noqa: N802,N803
        if setUp and self.made_up:
            self.made_up = False  # only the first time: a later call may follow a "down"
            return True
        return super().isUp(setUp)

    def delete(self) -> None:
        """Delete the interface unless it is gone already (its pair's other end or its namespace went first)."""
        link = self.link
        gone = getattr(link, "pair_deleted", False)
        if not gone and self.node is not None and not self.node.inNamespace:
            gone = not os.path.exists(f"/sys/class/net/{self.name}")  # root namespace: look, no command
        if not gone:
            self.cmd("ip link del " + self.name)
        if isinstance(link, TestbedLink) and link.backend is None:
            link.pair_deleted = True  # one veth: the other end went with this one
        if self.node is not None:
            self.node.delIntf(self)
        self.link = None


class TestbedLink(Link):
    """A Mininet Link made by the testbed; `backend` set means it is emulated (shapable, can go down)."""

    __test__ = False  # not a pytest test class

    def __init__(self, node1: Node, node2: Node, *, ledger: Ledger, link_id: str = "",
                 backend: LinkBackend | None = None, forward: Shape = Shape(), reverse: Shape = Shape(),
                 **params: Any) -> None:
        self.link_id = link_id or f"{node1.name}-{node2.name}"
        self.ledger = ledger
        self.backend = backend
        self.forward = forward
        self.reverse = reverse
        self.pair_deleted = False
        if params.get("intf") in (None, Intf):  # Mininet.addLink passes its own default, plain Intf
            params["intf"] = TestbedIntf
        if params["intf"] is TestbedIntf:
            # a plain veth is made with its first end up and both MACs; the backend brings both outer ends up
            for i, addr in ((1, params.get("addr1")), (2, params.get("addr2"))):
                extra = dict(params.pop(f"params{i}", None) or {})
                extra.setdefault("made_mac", addr)  # made with it by make_veth, or set right after by set_mac
                extra.setdefault("made_up", backend is not None or i == 1)
                params[f"params{i}"] = extra
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
            make_veth(intfname1, netns_of(node1), intfname2, netns_of(node2), addr1, addr2, up1=True)
        else:
            ends = LinkEnds(self.link_id, intfname1, netns_of(node1), intfname2, netns_of(node2))
            self.backend.create(ends, self.forward, self.reverse)
            for node, name, addr in ((node1, intfname1, addr1), (node2, intfname2, addr2)):
                if addr:  # the backend makes its veths with kernel-chosen MACs
                    set_mac(name, netns_of(node), addr)

    def delete(self) -> None:
        """Remove the interfaces (and the emulation state, for an emulated link)."""
        if self.backend is not None:
            self.backend.delete(self.link_id)
            self.pair_deleted = True  # the backend's veths took the outer ends with them
        super().delete()
