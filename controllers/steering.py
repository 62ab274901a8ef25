"""Traffic steering for the northbound socket: "send traffic for IP X (proto/port) to host H", as FlowMods.

Plain Python in the FAUCET manner, like `learning.py`: `Steering` knows the topology map (which
switch and port each host is behind, which ports the WAN links use) and the steers in force, and
turns a request into a `Plan`: phases of OpenFlow messages per datapath (built with
`datapath=None`). The caller sends one phase to every switch, waits for every switch's barrier
reply, then sends the next; so a plan is done when the switches have acknowledged it.

A steer of key (ip, proto, port) installs, on every switch of the map, a flow matching that
traffic which outputs towards the host's switch along a shortest path (in hops) over the WAN
links, and there rewrites eth_dst to the host's MAC and outputs to its port: whichever MAC a
client resolved the IP to, the chosen host receives it. A steer of a whole IP also sends ARP
requests for it to that host only. Under the steer flows lies the key's guard flow (drop), so
steered traffic never falls back to MAC learning (which would deliver it to whichever host has
the MAC, e.g. the old replica). A steer at rest has its path at priority `low`. Moving it:

- `make-before-break`: the new path is added at priority `high`, one hop-distance ring at a
  time starting at the new host's switch (so a switch never forwards into a switch that lacks the
  new path: no transient loop), each ring acknowledged before the next; then the old path is
  deleted; then the new path is re-added at `low` and its `high` copy deleted (same actions, so
  forwarding does not change). At every moment each switch has a path, old or new.
- `break-before-make`: the old path is deleted, then the new one added; in between the guard
  drops the traffic.

More specific keys take precedence: ip < ip+proto < ip+proto+port (each level's priorities lie
above the less specific level's).
"""

from __future__ import annotations

import ipaddress
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping

from os_ken.ofproto import ether, inet
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controllers.learning import add_flow

log = logging.getLogger(__name__)

MODES = ("make-before-break", "break-before-make")
PROTOS = {"tcp": inet.IPPROTO_TCP, "udp": inet.IPPROTO_UDP}
#: Priority of the guard of a key at specificity level 0 (ip), 1 (ip+proto), 2 (ip+proto+port);
#: its path at rest is one above (`low`), a path being made two above (`high`).
PRIO_STEER = 300
LOW, HIGH = 1, 2
#: Cookie layout: tag (16 bits) | kind (8) | steer id (32) | generation (8).
COOKIE_TAG = 0x57EE
KIND_PATH, KIND_GUARD, KIND_MAKE = 1, 2, 3
_ALL = 0xFFFFFFFFFFFFFFFF
_STEER_MASK = 0xFFFF00FFFFFFFF00  # tag and steer id: every kind and generation of one steer


def cookie(kind: int, steer_id: int, generation: int = 0) -> int:
    """The cookie of a steer's flows of `kind` and `generation`."""
    return (COOKIE_TAG << 48) | (kind << 40) | ((steer_id & 0xFFFFFFFF) << 8) | (generation & 0xFF)


@dataclass(frozen=True)
class Attachment:
    """Where a host is: its switch (dpid) and port, its MAC and IP."""

    dpid: int
    port: int
    mac: str
    ip: str


@dataclass(frozen=True)
class WanPorts:
    """A link between two switches: each end's dpid and port."""

    a: int
    a_port: int
    b: int
    b_port: int


@dataclass(frozen=True)
class TopologyMap:
    """What the testbed tells the controller about the network: switches, hosts, WAN links."""

    switches: Mapping[str, int]  # site -> dpid
    hosts: Mapping[str, Attachment]
    links: tuple[WanPorts, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> "TopologyMap":
        """The map from its JSON form (see `testbed.controller.topology_map`); ValueError when malformed."""
        if not isinstance(data, Mapping):
            raise ValueError("topology map: expected an object with switches, hosts, links")
        try:
            switches = {str(k): _int(v, f"switches.{k}") for k, v in dict(data["switches"]).items()}
            hosts = {}
            for name, h in dict(data["hosts"]).items():
                where = f"hosts.{name}"
                hosts[str(name)] = Attachment(_int(h["dpid"], f"{where}.dpid"), _int(h["port"], f"{where}.port"),
                                              str(h["mac"]).lower(), str(h["ip"]).split("/")[0])
            links = tuple(WanPorts(_int(l["a"], "a"), _int(l["a_port"], "a_port"), _int(l["b"], "b"),
                                   _int(l["b_port"], "b_port")) for l in data.get("links", ()))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"topology map: malformed ({exc.__class__.__name__}: {exc})") from None
        dpids = set(switches.values())
        for name, h in hosts.items():
            if h.dpid not in dpids:
                raise ValueError(f"topology map: host {name} is on unknown switch {h.dpid:#x}")
        return cls(switches, hosts, links)

    def rings(self, target: int) -> list[list[int]]:
        """The switches that can reach switch `target`, by hop distance: [[target], its neighbours, ...]."""
        out: list[list[int]] = []
        for dpid, d in self._search(target)[1].items():
            while len(out) <= d:
                out.append([])
            out[d].append(dpid)
        return out

    def next_hops(self, target: int) -> dict[int, int]:
        """For every switch that can reach switch `target`, the port of its first hop there (fewest hops)."""
        return self._search(target)[0]

    def _search(self, target: int) -> tuple[dict[int, int], dict[int, int]]:
        """Breadth-first from `target`: each other reachable switch's first-hop port, and every hop distance."""
        adjacent: dict[int, list[tuple[int, int]]] = {}  # dpid -> [(peer, peer's port back to dpid)]
        for link in sorted(self.links, key=lambda l: (l.a, l.a_port, l.b, l.b_port)):
            adjacent.setdefault(link.a, []).append((link.b, link.b_port))
            adjacent.setdefault(link.b, []).append((link.a, link.a_port))
        hops: dict[int, int] = {}
        dist, queue = {target: 0}, deque([target])
        while queue:
            here = queue.popleft()
            for peer, port_back in adjacent.get(here, ()):
                if peer not in dist:
                    dist[peer] = dist[here] + 1
                    hops[peer] = port_back
                    queue.append(peer)
        return hops, dist


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"topology map: {where}: expected an integer, got {value!r}")
    return value


@dataclass(frozen=True)
class SteerKey:
    """What traffic a steer takes: to `ip`, optionally only `proto`, optionally only port `port`."""

    ip: str
    proto: str | None = None
    port: int | None = None

    @property
    def level(self) -> int:
        """0 for a whole IP, 1 with a protocol, 2 with a protocol and port."""
        return (self.proto is not None) + (self.port is not None)

    def matches(self) -> list[parser.OFPMatch]:
        """The OpenFlow matches of this traffic (a whole IP also takes ARP requests for it)."""
        fields: dict[str, Any] = {"eth_type": ether.ETH_TYPE_IP, "ipv4_dst": self.ip}
        if self.proto is not None:
            fields["ip_proto"] = PROTOS[self.proto]
        if self.port is not None:
            fields[f"{self.proto}_dst"] = self.port
        out = [parser.OFPMatch(**fields)]
        if self.level == 0:
            out.append(parser.OFPMatch(eth_type=ether.ETH_TYPE_ARP, arp_tpa=self.ip))
        return out

    def describe(self) -> str:
        return self.ip + (f" {self.proto}" if self.proto else "") + (f"/{self.port}" if self.port else "")


@dataclass
class Steer:
    """A steer in force: its key, the host it sends to, its id (cookie) and generation, since when."""

    key: SteerKey
    host: str
    steer_id: int
    generation: int
    since: float


@dataclass
class Plan:
    """Messages to send in phases (each acknowledged by a barrier before the next), and the answer."""

    phases: list[dict[int, list[parser.MsgBase]]] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)


def parse_key(args: Mapping[str, Any]) -> SteerKey:
    """The key of a request's `ip`, `proto`, `port`; ValueError naming the field when invalid."""
    try:
        ip = str(ipaddress.IPv4Address(args.get("ip")))
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise ValueError(f"ip: expected an IPv4 address, got {args.get('ip')!r}") from None
    proto, port = args.get("proto"), args.get("port")
    if proto is not None and proto not in PROTOS:
        raise ValueError(f"proto: expected one of {', '.join(PROTOS)}, got {proto!r}")
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"port: expected a port number 1..65535, got {port!r}")
        if proto is None:
            raise ValueError("port: needs proto (tcp or udp)")
    return SteerKey(ip, proto, port)


class Steering:
    """The steers in force over one topology map; each request gives the Plan that carries it out."""

    def __init__(self) -> None:
        self.map: TopologyMap | None = None
        self.steers: dict[SteerKey, Steer] = {}
        self._next_id = 1

    def set_topology(self, tmap: TopologyMap) -> dict[str, int]:
        """Use `tmap` from now on (steers already in force keep their flows until moved)."""
        self.map = tmap
        return {"switches": len(tmap.switches), "hosts": len(tmap.hosts), "links": len(tmap.links)}

    def steer(self, args: Mapping[str, Any], now: float) -> Plan:
        """Send the traffic of `args` (ip, proto?, port?) to `args["host"]`, in `args["mode"]` order."""
        tmap = self._need_map()
        key = parse_key(args)
        host = args.get("host")
        if host not in tmap.hosts:
            raise ValueError(f"host: no host {host!r} in the topology map (have: {', '.join(sorted(tmap.hosts))})")
        if tmap.hosts[host].ip != key.ip:
            raise ValueError(f"host: {host} has ip {tmap.hosts[host].ip}, not {key.ip}")
        mode = args.get("mode", MODES[0])
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
        old = self.steers.get(key)
        result = {"ip": key.ip, "proto": key.proto, "port": key.port, "host": host, "mode": mode,
                  "from": old.host if old else None}
        if old is not None and old.host == host:
            return Plan([], {**result, "changed": False})
        if old is None:
            new = Steer(key, host, self._next_id, 0, now)
            self._next_id += 1
            guard = self._guard(new)
            phases = [_merge({d: guard.pop(d, []) for d in ring}, self._paths(new, LOW, ring))
                      for ring in self._rings(new)]
            phases.append(guard)  # switches that cannot reach the host: only the guard
        else:
            new = Steer(key, host, old.steer_id, old.generation + 1, now)
            brk = self._delete(old, KIND_PATH)
            if mode == MODES[0]:
                phases = [self._paths(new, HIGH, ring) for ring in self._rings(new)]
                settle = _merge(self._paths(new, LOW), self._delete(new, KIND_MAKE))
                phases += [brk, settle]
            else:
                phases = [brk, self._paths(new, LOW)]
        self.steers[key] = new
        log.info("steer %s -> %s (%s, was %s)", key.describe(), host, mode, result["from"])
        return Plan([p for p in phases if p], {**result, "changed": True})

    def unsteer(self, args: Mapping[str, Any]) -> Plan:
        """Hand the traffic of `args` back to MAC learning: delete its paths and guard."""
        key = parse_key(args)
        old = self.steers.pop(key, None)
        if old is None:
            raise ValueError(f"no steer for {key.describe()}")
        phase = {dpid: [_delete_cookie(cookie(0, old.steer_id), _STEER_MASK)] for dpid in self._dpids()}
        return Plan([phase], {"ip": key.ip, "proto": key.proto, "port": key.port, "host": old.host})

    def listing(self) -> list[dict[str, Any]]:
        """The steers in force."""
        return [{"ip": s.key.ip, "proto": s.key.proto, "port": s.key.port, "host": s.host,
                 "generation": s.generation, "since": s.since} for s in self.steers.values()]

    def switch_flows(self, dpid: int) -> list[parser.MsgBase]:
        """Every steer's guard and current path flows on switch `dpid` (after it (re)connected)."""
        if self.map is None:
            return []
        msgs: list[parser.MsgBase] = []
        for s in list(self.steers.values()):  # a snapshot: the control thread may be steering
            msgs += self._guard(s).get(dpid, []) + self._paths(s, LOW).get(dpid, [])
        return msgs

    # -- flows ---------------------------------------------------------------------------
    def _need_map(self) -> TopologyMap:
        if self.map is None:
            raise ValueError("no topology map yet (the testbed sends it once the network is built)")
        return self.map

    def _dpids(self) -> list[int]:
        return sorted(set(self._need_map().switches.values()))

    def _guard(self, s: Steer) -> dict[int, list[parser.MsgBase]]:
        """The key's drop flows, under its paths, on every switch."""
        prio = PRIO_STEER + 10 * s.key.level
        c = cookie(KIND_GUARD, s.steer_id)
        return {dpid: [add_flow(prio, m, [], cookie=c) for m in s.key.matches()] for dpid in self._dpids()}

    def _rings(self, s: Steer) -> list[list[int]]:
        """The switches that can reach `s`'s host, by hop distance from its switch."""
        tmap = self._need_map()
        return tmap.rings(tmap.hosts[s.host].dpid)

    def _paths(self, s: Steer, slot: int, only: list[int] | None = None) -> dict[int, list[parser.MsgBase]]:
        """The flows (at priority `slot`: LOW or HIGH) that take the key's traffic to its host, on every
        switch that can reach it (or only on the switches in `only`)."""
        tmap = self._need_map()
        at = tmap.hosts[s.host]
        prio = PRIO_STEER + 10 * s.key.level + slot
        c = cookie(KIND_PATH if slot == LOW else KIND_MAKE, s.steer_id, s.generation)
        out: dict[int, list[parser.MsgBase]] = {}
        hops = tmap.next_hops(at.dpid)
        for dpid in self._dpids() if only is None else only:
            msgs = []
            for m in s.key.matches():
                if dpid == at.dpid:
                    actions: list[parser.OFPAction] = [parser.OFPActionOutput(at.port)]
                    if m.get("eth_type") == ether.ETH_TYPE_IP:
                        actions.insert(0, parser.OFPActionSetField(eth_dst=at.mac))
                elif dpid in hops:
                    actions = [parser.OFPActionOutput(hops[dpid])]
                else:
                    continue  # cannot reach the host: the guard drops
                msgs.append(add_flow(prio, m, actions, cookie=c))
            if msgs:
                out[dpid] = msgs
        return out

    def _delete(self, s: Steer, kind: int) -> dict[int, list[parser.MsgBase]]:
        """Delete the flows of `kind` of steer `s`'s generation, on every switch."""
        return {dpid: [_delete_cookie(cookie(kind, s.steer_id, s.generation), _ALL)] for dpid in self._dpids()}


def _merge(*parts: dict[int, list[parser.MsgBase]]) -> dict[int, list[parser.MsgBase]]:
    out: dict[int, list[parser.MsgBase]] = {}
    for part in parts:
        for dpid, msgs in part.items():
            out.setdefault(dpid, []).extend(msgs)
    return out


def _delete_cookie(value: int, mask: int) -> parser.OFPFlowMod:
    """An OFPFC_DELETE of every flow whose cookie matches `value` under `mask`, in every table."""
    return parser.OFPFlowMod(
        datapath=None, cookie=value, cookie_mask=mask, table_id=ofp.OFPTT_ALL, command=ofp.OFPFC_DELETE,
        buffer_id=ofp.OFP_NO_BUFFER, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=parser.OFPMatch())
