"""A fake OpenFlow 1.3 network for unit tests, after FAUCET's fakeoftable: apply FlowMods, follow a packet.

`FakeTable` keeps one switch's flows (every table) and applies OFPFC_ADD and (non-strict) OFPFC_DELETE
FlowMods as a switch does (table, cookie/mask, match subset, out_port). `FakeNetwork` holds one per
switch of a `TopologyMap` and follows a packet (a dict of match fields) from a switch port through
set-field and output actions and goto-table instructions, across WAN links, to where it ends: a
host, the controller, a flood, or a drop; the switches that copied it to the controller on the way
are in `asked`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controllers.steering import TopologyMap


@dataclass
class Flow:
    """One flow entry."""

    priority: int
    match: dict[str, Any]
    actions: list[parser.OFPAction]
    cookie: int
    table: int = 0
    goto: int | None = None


def _mac(v: str) -> int:
    return int(v.replace(":", ""), 16)


def _field_matches(want: Any, have: Any) -> bool:
    """A flow's field value (maybe (value, mask) for a MAC) against a packet's."""
    if have is None:
        return False
    if isinstance(want, tuple):
        value, mask = want
        return _mac(have) & _mac(mask) == _mac(value) & _mac(mask)
    return want == have


def _outputs(flow: Flow) -> list[int]:
    return [a.port for a in flow.actions if isinstance(a, parser.OFPActionOutput)]


@dataclass
class FakeTable:
    """One switch's flow table."""

    flows: list[Flow] = field(default_factory=list)

    def apply(self, msg: parser.MsgBase) -> None:
        """Apply one message as the switch would (only FlowMods change the table)."""
        if not isinstance(msg, parser.OFPFlowMod):
            return
        match = dict(msg.match._fields2)
        if msg.command == ofp.OFPFC_ADD:
            self.flows = [f for f in self.flows
                          if not (f.table == msg.table_id and f.priority == msg.priority and f.match == match)]
            actions = [a for i in msg.instructions if hasattr(i, "actions") for a in i.actions]
            goto = next((i.table_id for i in msg.instructions if isinstance(i, parser.OFPInstructionGotoTable)), None)
            self.flows.append(Flow(msg.priority, match, actions, msg.cookie, msg.table_id, goto))
        elif msg.command == ofp.OFPFC_DELETE:
            def doomed(f: Flow) -> bool:
                if msg.table_id not in (ofp.OFPTT_ALL, f.table):
                    return False
                if (f.cookie & msg.cookie_mask) != (msg.cookie & msg.cookie_mask):
                    return False
                if any(f.match.get(k) != v for k, v in match.items()):
                    return False
                return msg.out_port == ofp.OFPP_ANY or msg.out_port in _outputs(f)
            self.flows = [f for f in self.flows if not doomed(f)]
        else:
            raise NotImplementedError(f"FlowMod command {msg.command}")

    def lookup(self, pkt: dict[str, Any], table: int = 0) -> Flow | None:
        """The highest-priority flow of `table` matching packet `pkt` (first added wins a tie), or None."""
        best = None
        for f in self.flows:
            if f.table == table and all(_field_matches(v, pkt.get(k)) for k, v in f.match.items()):
                if best is None or f.priority > best.priority:
                    best = f
        return best


class FakeNetwork:
    """A fake table per switch of `tmap`; packets are followed across its WAN links to hosts."""

    def __init__(self, tmap: TopologyMap) -> None:
        self.tmap = tmap
        self.tables = {dpid: FakeTable() for dpid in tmap.switches.values()}
        self.host_at = {(h.dpid, h.port): name for name, h in tmap.hosts.items()}
        self.peer: dict[tuple[int, int], tuple[int, int]] = {}
        self.asked: list[int] = []  # switches that copied the last packet sent to the controller
        for link in tmap.links:
            self.peer[(link.a, link.a_port)] = (link.b, link.b_port)
            self.peer[(link.b, link.b_port)] = (link.a, link.a_port)

    def apply(self, dpid: int, msgs: list[parser.MsgBase]) -> None:
        for msg in msgs:
            self.tables[dpid].apply(msg)

    def apply_phase(self, phase: dict[int, list[parser.MsgBase]]) -> None:
        for dpid, msgs in phase.items():
            self.apply(dpid, msgs)

    def send(self, host: str, pkt: dict[str, Any], max_hops: int = 16) -> tuple[str, Any]:
        """Where `pkt` sent by `host` ends: ("host", name, eth_dst), ("controller", dpid),
        ("flood", dpid), ("drop", dpid), or ("miss", dpid) when no flow matches."""
        at = self.tmap.hosts[host]
        dpid, port, table = at.dpid, at.port, 0
        pkt = dict(pkt)
        self.asked = []
        for _ in range(max_hops):
            flow = self.tables[dpid].lookup({**pkt, "in_port": port}, table)
            if flow is None:
                return ("miss", dpid)
            out = None
            for a in flow.actions:
                if isinstance(a, parser.OFPActionSetField):
                    pkt[a.key] = a.value
                elif isinstance(a, parser.OFPActionOutput) and a.port == ofp.OFPP_CONTROLLER and flow.goto is not None:
                    self.asked.append(dpid)  # a copy; the packet goes on
                elif isinstance(a, parser.OFPActionOutput):
                    out = a.port
            if flow.goto is not None:
                table = flow.goto
                continue
            if out is None:
                return ("drop", dpid)
            if out == ofp.OFPP_CONTROLLER:
                return ("controller", dpid)
            if out == ofp.OFPP_FLOOD:
                return ("flood", dpid)
            if (dpid, out) in self.host_at:
                return ("host", self.host_at[(dpid, out)], pkt.get("eth_dst"))
            if (dpid, out) not in self.peer:
                raise AssertionError(f"switch {dpid:#x} outputs to unconnected port {out}")
            dpid, port = self.peer[(dpid, out)]
            table = 0
        raise AssertionError(f"packet loops: {pkt}")
