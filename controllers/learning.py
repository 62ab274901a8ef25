"""L2 learning-switch logic for OpenFlow 1.3: turns switch events into lists of OpenFlow messages.

Plain Python in the FAUCET manner: no os-ken app machinery, every message is built with
`datapath=None` and the caller (the thin app in `l2_switch.py`) attaches the datapath and sends
it. Time comes in as `now`, so the logic is tested with a fake clock.

Two tables, as FAUCET's eth_src and eth_dst tables: table 0 knows the sources, `(in_port, eth_src)`
flows sending known ones on to table 1; a frame from a source not known there is copied to the
controller and goes on to table 1 all the same, so no frame waits for the controller. Table 1
sends a known `eth_dst` out of its port and floods the rest in the switch. Learning a source
installs both its flows; they live `idle_timeout` after the source last sent (the switch tells
the controller when its source flow expires, and the controller then deletes its destination
flow) and at most `mac_timeout`, after which its next frame learns it afresh. A port that goes
down forgets its MACs and deletes their flows, so traffic re-learns a failover path at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from os_ken.ofproto import ether
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

log = logging.getLogger(__name__)

#: The table of known sources (table-miss: copy to the controller, go on to TABLE_DST).
TABLE_SRC = 0
#: The table of known destinations (table-miss: flood).
TABLE_DST = 1
#: Priority of the table-miss flows.
PRIO_MISS = 0
#: Priority of learnt source and destination flows.
PRIO_LEARNT = 100
#: Priority of the flows that drop link-local noise (LLDP, 802.1D/802.1Q link-local groups).
PRIO_DROP = 200
#: Cookie carried by learnt flows, so they can be told from others in dump-flows.
COOKIE_LEARNT = 0x1EA4
BROADCAST = "ff:ff:ff:ff:ff:ff"


def is_multicast(mac: str) -> bool:
    """True for group (broadcast or multicast) MAC addresses: the low bit of the first octet."""
    return bool(int(mac.split(":", 1)[0], 16) & 1)


@dataclass
class MacEntry:
    """Where a MAC address was last seen on one switch, and when."""

    port: int
    last_seen: float


@dataclass
class SwitchState:
    """What the controller knows about one datapath: its MAC table."""

    dpid: int
    macs: dict[str, MacEntry] = field(default_factory=dict)


@dataclass(frozen=True)
class LearningConfig:
    """Timeouts of the learning switch; seconds."""

    idle_timeout: int = 30  # a source silent this long is forgotten (its flows expire)
    mac_timeout: int = 300  # a learnt source is learnt afresh after this long (its flows' hard timeout)


class LearningSwitch:
    """The learning-switch logic for all datapaths; each method returns the messages to send."""

    def __init__(self, config: LearningConfig | None = None) -> None:
        self.config = config or LearningConfig()
        self.switches: dict[int, SwitchState] = {}

    def state(self, dpid: int) -> SwitchState:
        """The state of datapath `dpid`, created empty on first use."""
        return self.switches.setdefault(dpid, SwitchState(dpid))

    def switch_features(self, dpid: int) -> list[parser.OFPFlowMod]:
        """A switch (re)connected: clear its flows, install both tables' table-miss flows and the noise drops."""
        self.switches[dpid] = SwitchState(dpid)
        msgs: list[parser.OFPFlowMod] = [delete_flows()]
        msgs.append(add_flow(PRIO_DROP, parser.OFPMatch(eth_type=ether.ETH_TYPE_LLDP), []))
        msgs.append(add_flow(
            PRIO_DROP,
            parser.OFPMatch(eth_dst=("01:80:c2:00:00:00", "ff:ff:ff:ff:ff:f0")),
            [],
        ))
        to_controller = parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)
        msgs.append(add_flow(PRIO_MISS, parser.OFPMatch(), [to_controller], goto=TABLE_DST))
        msgs.append(add_flow(PRIO_MISS, parser.OFPMatch(), [parser.OFPActionOutput(ofp.OFPP_FLOOD)],
                             table=TABLE_DST))
        return msgs

    def switch_leave(self, dpid: int) -> None:
        """A switch disconnected: forget everything about it."""
        self.switches.pop(dpid, None)

    def packet_in(self, dpid: int, in_port: int, eth_src: str, now: float) -> list[parser.MsgBase]:
        """A frame from a source table 0 did not know (the switch forwards it anyway): learn the source."""
        if is_multicast(eth_src):
            return []
        sw = self.state(dpid)
        old = sw.macs.get(eth_src)
        sw.macs[eth_src] = MacEntry(in_port, now)
        msgs: list[parser.MsgBase] = []
        if old is not None and old.port != in_port:
            log.info("dpid %s: %s moved from port %s to %s", dpid, eth_src, old.port, in_port)
            msgs.extend(forget_flows(eth_src))
        cfg = self.config
        msgs.append(add_flow(PRIO_LEARNT, parser.OFPMatch(in_port=in_port, eth_src=eth_src), [], goto=TABLE_DST,
                             idle_timeout=cfg.idle_timeout, hard_timeout=cfg.mac_timeout, cookie=COOKIE_LEARNT,
                             flags=ofp.OFPFF_SEND_FLOW_REM))
        msgs.append(add_flow(PRIO_LEARNT, parser.OFPMatch(eth_dst=eth_src), [parser.OFPActionOutput(in_port)],
                             table=TABLE_DST, hard_timeout=cfg.mac_timeout, cookie=COOKIE_LEARNT))
        return msgs

    def flow_removed(self, dpid: int, in_port: int, eth_src: str, reason: int) -> list[parser.MsgBase]:
        """The switch expired a source flow: forget that source and delete the flow towards it."""
        sw = self.state(dpid)
        entry = sw.macs.get(eth_src)
        if reason == ofp.OFPRR_DELETE or entry is None or entry.port != in_port:
            return []  # deleted by us (the state is already right), or learnt elsewhere since
        del sw.macs[eth_src]
        return [delete_flows(match=parser.OFPMatch(eth_dst=eth_src), cookie=COOKIE_LEARNT)]

    def port_status(self, dpid: int, port_no: int, up: bool) -> list[parser.MsgBase]:
        """A port changed: when it went down, forget its MACs and delete the flows from and to it."""
        if up:
            return []
        sw = self.state(dpid)
        gone = [mac for mac, e in sw.macs.items() if e.port == port_no]
        for mac in gone:
            del sw.macs[mac]
        log.info("dpid %s: port %s down, forgot %d MACs", dpid, port_no, len(gone))
        return [delete_flows(out_port=port_no, cookie=COOKIE_LEARNT),
                delete_flows(match=parser.OFPMatch(in_port=port_no), cookie=COOKIE_LEARNT)]

    def flush(self, dpid: int) -> list[parser.MsgBase]:
        """Forget every MAC of `dpid` and delete its learnt flows (after a topology change elsewhere)."""
        self.state(dpid).macs.clear()
        return [delete_flows(cookie=COOKIE_LEARNT)]

    def topology_change(self, origin_dpid: int) -> dict[int, list[parser.MsgBase]]:
        """A port of `origin_dpid` went down: flush every other switch, whose paths may lead there."""
        return {dpid: self.flush(dpid) for dpid in self.switches if dpid != origin_dpid}


def add_flow(
    priority: int,
    match: parser.OFPMatch,
    actions: list[parser.OFPAction],
    *,
    table: int = TABLE_SRC,
    goto: int | None = None,
    idle_timeout: int = 0,
    hard_timeout: int = 0,
    cookie: int = 0,
    flags: int = 0,
) -> parser.OFPFlowMod:
    """An OFPFC_ADD flow in `table` applying `actions`, then going to table `goto` (neither: drop)."""
    inst: list[parser.OFPInstruction] = []
    if actions:
        inst.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions))
    if goto is not None:
        inst.append(parser.OFPInstructionGotoTable(goto))
    return parser.OFPFlowMod(
        datapath=None,
        cookie=cookie,
        table_id=table,
        command=ofp.OFPFC_ADD,
        idle_timeout=idle_timeout,
        hard_timeout=hard_timeout,
        priority=priority,
        buffer_id=ofp.OFP_NO_BUFFER,
        flags=flags,
        match=match,
        instructions=inst,
    )


def forget_flows(mac: str) -> list[parser.OFPFlowMod]:
    """Delete the learnt flows from and towards `mac` (every port, both tables)."""
    return [delete_flows(match=parser.OFPMatch(eth_dst=mac), cookie=COOKIE_LEARNT),
            delete_flows(match=parser.OFPMatch(eth_src=mac), cookie=COOKIE_LEARNT)]


def delete_flows(
    *,
    match: parser.OFPMatch | None = None,
    out_port: int = ofp.OFPP_ANY,
    cookie: int | None = None,
) -> parser.OFPFlowMod:
    """An OFPFC_DELETE of the flows (all tables) matching `match`/`out_port`/`cookie` (defaults: all flows)."""
    return parser.OFPFlowMod(
        datapath=None,
        cookie=cookie or 0,
        cookie_mask=0xFFFFFFFFFFFFFFFF if cookie is not None else 0,
        table_id=ofp.OFPTT_ALL,
        command=ofp.OFPFC_DELETE,
        buffer_id=ofp.OFP_NO_BUFFER,
        out_port=out_port,
        out_group=ofp.OFPG_ANY,
        match=match or parser.OFPMatch(),
    )
