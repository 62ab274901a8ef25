"""A WAN link to another server is emulated on this machine, which holds one of its ends, as a local one is.

An SSH tunnel link (testbed/cluster/nodes.ClusterSSHLink) has a tap at each end. The tap on this
machine is not renamed onto the local switch: it is moved into the userspace emulator's namespace and becomes one inner end of an emulated link whose other inner end
is the peer of a veth on the local switch's port. Both directions are then shaped by the same
emulator, control protocol and shapes as a local link (testbed/links/userspace.py, used through
its public API), on the machine that holds one end of the link; and it can be taken down and reshaped at run time
(`ClusterLinks`, in front of the run's link backend), so WAN faults work as on local links. Frames
cross the ssh tunnel after (forward) or before (reverse) the emulator, so the tunnel's own latency
adds to the configured one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from testbed import proc
from testbed.ledger import Ledger
from testbed.links.userspace import UserspaceBackend, check_shape, disable_offloads
from testbed.topology.model import Shape

log = logging.getLogger(__name__)


@dataclass
class TunnelShaping:
    """A tunnel link's end on this machine, through the emulator: the switch's veth and the two inner ends."""

    emulator: UserspaceBackend
    link_id: str
    outer: str  # on the local switch, this machine's root namespace
    inner: str  # the outer's peer, in the emulator's namespace
    tap: str  # the tunnel's tap, moved into the emulator's namespace

    def set_up(self, up: bool) -> None:
        """Take the link down (no frame crosses) or bring it back up, in the emulator."""
        self.emulator.request("up" if up else "down", link_id=self.link_id)

    def shape(self, forward: Shape | None, reverse: Shape | None) -> None:
        """Change one or both directions at run time."""
        fields: dict[str, Any] = {"link_id": self.link_id}
        if forward is not None:
            fields["forward"] = check_shape(forward, f"links.{self.link_id}.forward")
        if reverse is not None:
            fields["reverse"] = check_shape(reverse, f"links.{self.link_id}.reverse")
        self.emulator.request("set", **fields)

    def stop(self) -> None:
        """Stop emulating, delete the veth (its peer goes with it) and the tap (the tunnel's ssh ended first)."""
        if self.emulator.pid is not None:
            try:
                self.emulator.request("remove", link_id=self.link_id)
            except Exception as exc:  # noqa: BLE001 - the emulator may be going down with the run
                log.warning("link %s: emulator remove: %s", self.link_id, exc)
        proc.run(["ip", "link", "del", self.outer], timeout=10, check=False)
        proc.run(["ip", "-n", self.emulator.netns, "link", "del", self.tap], timeout=10, check=False)


def inner_names(unit: int) -> tuple[str, str]:
    """The inner ends of tunnel `unit` in the emulator's namespace: the switch side's and the tap's."""
    return f"wt{unit}s", f"wt{unit}t"


def shape_tunnel(emulator: UserspaceBackend, ledger: Ledger, link_id: str, tap: str, unit: int, outer: str,
                 addr: str | None, forward: Shape, reverse: Shape, switch_is_a: bool) -> TunnelShaping:
    """Put this machine's end of a tunnel link (tap `tap`) through the emulator; `outer` is the local switch's port.

    `switch_is_a`: the local switch is the link's first end (`forward` is from it towards the tap).
    """
    fwd = check_shape(forward, f"links.{link_id}.forward")
    rev = check_shape(reverse, f"links.{link_id}.reverse")
    emulator.request("ping")  # started (its namespace made) on first use
    ns = emulator.netns
    inner, tap_inner = inner_names(unit)
    ledger.record("interface", outer, peer=inner, peer_netns=ns, link=link_id)
    shaping = TunnelShaping(emulator, link_id, outer, inner, tap_inner)
    try:
        proc.run(["ip", "link", "add", outer, *(["address", addr] if addr else []), "type", "veth",
                  "peer", "name", inner, "netns", ns], timeout=10)
        if emulator.outer_offloads:
            disable_offloads(outer)
        proc.run(["ip", "link", "set", "dev", outer, "up"], timeout=10)
        proc.run(["ip", "link", "set", "dev", tap, "netns", ns, "name", tap_inner], timeout=10)
        proc.run(["ip", "-n", ns, "link", "set", "dev", tap_inner, "up"], timeout=10)
        a, b = (inner, tap_inner) if switch_is_a else (tap_inner, inner)
        emulator.request("add", link_id=link_id, a=a, b=b, forward=fwd, reverse=rev)
    except Exception:
        shaping.stop()
        raise
    log.info("link %s: %s <-> tunnel %s through %s", link_id, outer, tap, ns)
    return shaping


@dataclass
class ClusterLinks:
    """The run's link backend, with the WAN links to other servers (`tunnels`, by link id) answered by their ends here."""

    backend: Any
    tunnels: dict[str, TunnelShaping] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:  # everything else is the run's backend's
        return getattr(self.__dict__["backend"], name)

    def shape(self, link_id: str, forward: Shape | None = None, reverse: Shape | None = None) -> None:
        """Change a link's shape at run time (a tunnel link's in the emulator here)."""
        if link_id in self.tunnels:
            return self.tunnels[link_id].shape(forward, reverse)
        return self.backend.shape(link_id, forward, reverse)

    def set_up(self, link_id: str, up: bool) -> None:
        """Take a link down or bring it up (a tunnel link's in the emulator here)."""
        if link_id in self.tunnels:
            return self.tunnels[link_id].set_up(up)
        return self.backend.set_up(link_id, up)
