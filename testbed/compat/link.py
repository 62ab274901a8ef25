"""Links with Mininet's TCLink vocabulary, emulated by the machine's link backend and kept in the ledger."""

from __future__ import annotations

import logging
from typing import Any, Callable

from mininet.link import Intf
from mininet.link import Link as MininetLink
from mininet.link import TCIntf as MininetTCIntf
from mininet.link import TCLink as MininetTCLink
from mininet.node import Node

from testbed import proc
from testbed.compat.params import SHAPE_KEYS, direction, shape_of, split, unwrap
from testbed.emulation.link import TestbedLink, netns_of
from testbed.errors import SpecError
from testbed.ledger import Ledger
from testbed.links.base import LinkBackend
from testbed.links.netem import in_netns

log = logging.getLogger(__name__)


class TestbedIntf(Intf):
    """Mininet's Intf; shaping asked at run time (`intf.config(delay='5ms')`) goes to the link's backend."""

    __test__ = False

    def config(self, **params: Any) -> dict:  # type: ignore[override]
        """Intf.config for addresses; bw/delay/jitter/loss/max_queue_size reshape this interface's egress."""
        shaping = {k: params.pop(k) for k in SHAPE_KEYS if k in params}
        result = super().config(**params)
        if shaping:
            link = self.link
            where = f"{self.name}.config"
            if not isinstance(link, TestbedLink) or link.backend is None:
                raise SpecError(where, "this link was made without shaping; make it a TCLink with "
                                       "shaping to change it at run time")
            shape = shape_of(shaping, where)
            forward = self is link.intf1
            link.backend.shape(link.link_id, forward=shape if forward else None,
                               reverse=None if forward else shape)
        return result


def intf_preset(factory: Any, where: str) -> dict[str, Any]:
    """The options preset by an interface constructor (Intf, TCIntf, custom(TCIntf, bw=10)), else refused."""
    if factory is None:
        return {}
    cls, preset = unwrap(factory)
    if not (isinstance(cls, type) and issubclass(cls, Intf)):
        raise SpecError(where, f"{getattr(cls, '__name__', cls)} is not an interface class the testbed "
                               f"can make (use Intf or TCIntf)")
    if issubclass(cls, Intf) and cls.__module__ not in ("mininet.link", __name__):
        raise SpecError(where, f"interface class {cls.__name__} configures itself; the testbed cannot "
                               f"tell what it does (use TCIntf parameters)")
    return preset


def tx_off(node: Node, name: str) -> None:
    """Turn off TX checksum offload on `name` (OVS's userspace datapath does not fill checksums in)."""
    proc.run(in_netns(netns_of(node), ["ethtool", "-K", name, "tx", "off"]), timeout=10)


def set_mac(node: Node, name: str, mac: str) -> None:
    """Give interface `name` of `node` the MAC address `mac`."""
    proc.run(in_netns(netns_of(node), ["ip", "link", "set", "dev", name, "address", mac]), timeout=10)


class TCLink(TestbedLink):
    """Mininet's TCLink: bw, delay, jitter, loss, max_queue_size per interface's egress (as TCIntf).

    A shaped link goes to the run's link backend (netem where the kernel has it, the userspace
    emulator elsewhere); an unshaped one is a plain veth. Options the testbed cannot honour are
    refused by name, never dropped.
    """

    def __init__(self, node1: Node, node2: Node, port1: int | None = None, port2: int | None = None,
                 intfName1: str | None = None, intfName2: str | None = None,  # noqa: N803
                 addr1: str | None = None, addr2: str | None = None, intf: Any = None,
                 cls1: Any = None, cls2: Any = None, params1: dict | None = None,
                 params2: dict | None = None, *, ledger: Ledger,
                 backend: LinkBackend | Callable[[], LinkBackend] | None = None, link_id: str = "",
                 **params: Any) -> None:
        where = f"link {node1.name}-{node2.name}"
        preset = intf_preset(intf, f"{where}.intf")
        preset1 = {**preset, **intf_preset(cls1, f"{where}.cls1")}
        preset2 = {**preset, **intf_preset(cls2, f"{where}.cls2")}
        forward, opts1 = direction(params, preset1, dict(params1 or {}), where)
        reverse, opts2 = direction(params, preset2, dict(params2 or {}), where)
        self._check(forward, reverse, where)
        chosen = None
        if forward.shaped or reverse.shaped:
            chosen = backend() if callable(backend) and not isinstance(backend, LinkBackend) else backend
        super().__init__(node1, node2, ledger=ledger, link_id=link_id, backend=chosen, forward=forward,
                         reverse=reverse, port1=port1, port2=port2, intfName1=intfName1,
                         intfName2=intfName2, addr1=addr1, addr2=addr2, intf=TestbedIntf,
                         params1=opts1, params2=opts2)
        if chosen is None:  # a plain veth: the backends do this themselves
            tx_off(node1, self.intf1.name)
            tx_off(node2, self.intf2.name)
        else:  # the backends make their veths with the kernel's MACs: give them the ones Mininet recorded
            for node, intf, mac in ((node1, self.intf1, addr1), (node2, self.intf2, addr2)):
                if mac:
                    set_mac(node, intf.name, mac)
        log.info("link %s: %s / %s (%s)", self.link_id, forward, reverse,
                 chosen.name if chosen else "veth")

    def _check(self, forward: Any, reverse: Any, where: str) -> None:
        """Hook for subclasses that refuse shaping."""


class Link(TCLink):
    """Mininet's Link: a veth pair made by the testbed; shaping options are refused (Mininet drops them)."""

    def _check(self, forward: Any, reverse: Any, where: str) -> None:
        if forward.shaped or reverse.shaped:
            raise SpecError(where, "Link does not shape (Mininet would drop bw/delay/loss silently): "
                                   "use cls=TCLink")


#: Mininet's own classes a ported script may still name, and what the testbed makes instead.
LINK_CLASSES: dict[Any, type] = {MininetTCLink: TCLink, MininetLink: Link, TCLink: TCLink, Link: Link}
INTF_CLASSES = (Intf, MininetTCIntf, TestbedIntf)


def link_class(factory: Any, where: str) -> tuple[type, dict[str, Any]]:
    """The testbed link class (and preset options) for a link constructor a script names."""
    cls, preset = unwrap(factory)
    if cls in LINK_CLASSES:
        return LINK_CLASSES[cls], preset
    if isinstance(cls, type) and issubclass(cls, TCLink):
        return cls, preset
    raise SpecError(where, f"link class {getattr(cls, '__name__', cls)} makes its interfaces itself, "
                           f"outside the testbed's ledger; use TCLink or Link")


__all__ = ["Link", "TCLink", "TestbedIntf", "link_class", "split"]
