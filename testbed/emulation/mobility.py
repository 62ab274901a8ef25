"""Moving users: re-attaches an end device's access link to another site's switch, then tells the controller.

As Mininet's own `examples/mobility.py` does it: the switch-side interface of the device's access
link is detached from one Open vSwitch bridge (`del-port`) and attached to another (`add-port`
with an `ofport_request`), and Mininet's bookkeeping (which switch owns the interface, on which
port) follows. The link itself is not touched: its veth pair, and with it the shaping of an
emulated access link, stays as it was (the netem backend's qdiscs are applied again after the
attach, since Open vSwitch may clear an interface's qdiscs when it adds a port). Between detach
and attach the device is attached nowhere for `gap_s` (the radio handover). Then the
controller's `moved` request (controllers/mobility.py) forgets where the device was on every
switch and re-paths steers towards it; it answers once every switch acknowledged.

Only hosts marked `device: true` in the topology move (no NIC, not anycast).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from testbed import proc
from testbed.errors import TestbedError
from testbed.topology.model import TopologySpec

log = logging.getLogger(__name__)
OVS_TIMEOUT = "--timeout=10"


def detach_argv(bridge: str, intf: str) -> list[str]:
    """The command that takes `intf` off Open vSwitch bridge `bridge`."""
    return ["ovs-vsctl", OVS_TIMEOUT, "del-port", bridge, intf]


def attach_argv(bridge: str, intf: str, port: int) -> list[str]:
    """The command that adds `intf` to `bridge` as OpenFlow port `port` (if that number is free)."""
    return ["ovs-vsctl", OVS_TIMEOUT, "add-port", bridge, intf, "--", "set", "Interface", intf,
            f"ofport_request={port}"]


def ofport_argv(intf: str) -> list[str]:
    """The command that prints the OpenFlow port number Open vSwitch gave `intf`."""
    return ["ovs-vsctl", OVS_TIMEOUT, "get", "Interface", intf, "ofport"]


def why_not_movable(topo: TopologySpec, host: str, site: str, current: str) -> str | None:
    """Why `host` cannot move to `site` from `current` (None: it can)."""
    try:
        spec = topo.host(host)
    except KeyError:
        return f"no host {host!r} in topology {topo.name!r}"
    if not spec.device:
        return f"{host} is not an end device (mark it `device: true` in the topology)"
    if site not in {s.name for s in topo.sites}:
        return f"no site {site!r} in topology {topo.name!r} (sites: {', '.join(s.name for s in topo.sites)})"
    if site == current:
        return f"{host} is attached to {site} already"
    return None


@dataclass
class MoveRecord:
    """One move: from where to where, and when each step ended (time.time())."""

    host: str
    src: str
    dst: str
    gap_s: float
    port: int
    started: float
    detached: float = 0.0
    attached: float = 0.0
    acked: float = 0.0  # the controller's answer came (every switch acknowledged); = attached without one
    controller: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view with step durations in ms."""
        out = asdict(self)
        out["detach_ms"] = round((self.detached - self.started) * 1000, 3)
        out["unattached_ms"] = round((self.attached - self.detached) * 1000, 3)
        out["controller_ms"] = round((self.acked - self.attached) * 1000, 3)
        return out

    def detail(self) -> str:
        """One line for events.csv."""
        d = self.to_dict()
        return (f"{self.src} -> {self.dst} port {self.port}: detach {d['detach_ms']:.0f} ms, unattached "
                f"{d['unattached_ms']:.0f} ms, controller {d['controller_ms']:.0f} ms")


class Mobility:
    """Where each end device of a running Testbed is attached now, and how it moves."""

    def __init__(self, tb: Any) -> None:
        self.tb = tb
        self.site_of: dict[str, str] = {}
        self.moves: list[MoveRecord] = []

    def site(self, host: str) -> str:
        """The site `host` is attached to now."""
        return self.site_of.get(host) or self.tb.topo.host(host).site

    def move(self, host: str, site: str, gap_s: float = 0.0) -> MoveRecord:
        """Re-attach `host` to `site`'s switch, `gap_s` after detaching it; returns what was done and when."""
        current = self.site(host) if host in {h.name for h in self.tb.topo.hosts()} else ""
        why = why_not_movable(self.tb.topo, host, site, current)
        if why:
            raise TestbedError(f"cannot move {host}: {why}")
        if gap_s < 0:
            raise TestbedError(f"cannot move {host}: gap must not be negative, got {gap_s:g} s")
        net = self.tb.net
        node, old_sw, new_sw = net[host], net[self.tb.switch_of[current]], net[self.tb.switch_of[site]]
        links = node.connectionsTo(old_sw)
        if not links:
            raise TestbedError(f"cannot move {host}: no link to {old_sw.name} ({current})")
        _, sintf = links[0]
        port = new_sw.newPort()
        rec = MoveRecord(host, current, site, gap_s, port, started=time.time())
        proc.run(detach_argv(old_sw.name, sintf.name))
        old_sw.delIntf(sintf)
        rec.detached = time.time()
        if gap_s:
            time.sleep(gap_s)  # the emulated handover itself: attached nowhere for this long
        new_sw.addIntf(sintf, port=port)  # a switch is in the root namespace: nothing is moved
        sintf.node = new_sw
        proc.run(attach_argv(new_sw.name, sintf.name, port))
        given = int(proc.run(ofport_argv(sintf.name)).stdout.strip())
        if given != port:  # the number was taken: follow what Open vSwitch chose
            log.warning("%s: asked for port %d on %s, got %d", sintf.name, port, new_sw.name, given)
            new_sw.delIntf(sintf)
            new_sw.addIntf(sintf, port=given)
            rec.port = port = given
        proc.run(["ip", "link", "set", "dev", sintf.name, "up"])
        self._keep_shaping(host)
        rec.attached = time.time()
        if "moved" in self.tb.controller.commands():
            rec.controller = self.tb.controller.call("moved", host=host, dpid=int(new_sw.dpid, 16), port=port)
        else:
            log.warning("controller app %s has no `moved` request: its state is left to port events",
                        self.tb.topo.controller.app)
        rec.acked = time.time()
        self.site_of[host] = site
        self.moves.append(rec)
        log.info("moved %s: %s", host, rec.detail())
        return rec

    def _keep_shaping(self, host: str) -> None:
        """Apply the access link's shape again where it lives in qdiscs on the interfaces (netem)."""
        links = self.tb.links
        link_id = self.tb._access_ids.get(host)  # noqa: SLF001 (the Testbed's own table of emulated links)
        if link_id is None or links is None or getattr(links, "name", "") != "netem":
            return
        shape = self.tb.topo.host(host).access
        links.shape(link_id, forward=shape, reverse=shape)
