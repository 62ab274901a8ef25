"""L2 learning-switch logic for OpenFlow 1.3: turns switch events into lists of OpenFlow messages.

Plain Python in the FAUCET manner: no os-ken app machinery, every message is built with
`datapath=None` and the caller (the thin app in `l2_switch.py`) attaches the datapath and sends
it. Time comes in as `now`, so MAC ageing is tested with a fake clock.

Flows match only `eth_dst` (one flow per known destination per switch) and carry an idle timeout;
the MAC table lives in the controller, learnt from packet-ins. A port that goes down forgets its
MACs and deletes the flows that output to it, so traffic re-learns a failover path at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from os_ken.ofproto import ether
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

log = logging.getLogger(__name__)

#: Priority of the table-miss flow (packet to the controller).
PRIO_MISS = 0
#: Priority of learnt destination flows.
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

    idle_timeout: int = 30  # flow idle timeout in the switch
    mac_timeout: float = 300.0  # a MAC not seen for this long is unknown again (flooded)


class LearningSwitch:
    """The learning-switch logic for all datapaths; each method returns the messages to send."""

    def __init__(self, config: LearningConfig | None = None) -> None:
        self.config = config or LearningConfig()
        self.switches: dict[int, SwitchState] = {}

    def state(self, dpid: int) -> SwitchState:
        """The state of datapath `dpid`, created empty on first use."""
        return self.switches.setdefault(dpid, SwitchState(dpid))

    def switch_features(self, dpid: int) -> list[parser.OFPFlowMod]:
        """A switch (re)connected: clear its flows, install the table-miss and noise-drop flows."""
        self.switches[dpid] = SwitchState(dpid)
        msgs: list[parser.OFPFlowMod] = [delete_flows()]
        msgs.append(add_flow(PRIO_DROP, parser.OFPMatch(eth_type=ether.ETH_TYPE_LLDP), []))
        msgs.append(add_flow(
            PRIO_DROP,
            parser.OFPMatch(eth_dst=("01:80:c2:00:00:00", "ff:ff:ff:ff:ff:f0")),
            [],
        ))
        to_controller = parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)
        msgs.append(add_flow(PRIO_MISS, parser.OFPMatch(), [to_controller]))
        return msgs

    def switch_leave(self, dpid: int) -> None:
        """A switch disconnected: forget everything about it."""
        self.switches.pop(dpid, None)

    def packet_in(
        self,
        dpid: int,
        in_port: int,
        eth_src: str,
        eth_dst: str,
        buffer_id: int,
        data: bytes,
        now: float,
    ) -> list[parser.MsgBase]:
        """A frame missed the flow table: learn its source, then forward it (flow + out, or flood)."""
        sw = self.state(dpid)
        msgs: list[parser.MsgBase] = []
        if not is_multicast(eth_src):
            msgs.extend(self._learn(sw, eth_src, in_port, now))
        entry = None if is_multicast(eth_dst) else sw.macs.get(eth_dst)
        if entry is not None and now - entry.last_seen > self.config.mac_timeout:
            del sw.macs[eth_dst]
            entry = None
        if entry is None:
            msgs.append(packet_out(in_port, ofp.OFPP_FLOOD, buffer_id, data))
            return msgs
        if entry.port == in_port:
            log.debug("dpid %s: %s is on in_port %s, dropping", dpid, eth_dst, in_port)
            return msgs
        actions = [parser.OFPActionOutput(entry.port)]
        msgs.append(add_flow(
            PRIO_LEARNT,
            parser.OFPMatch(eth_dst=eth_dst),
            actions,
            idle_timeout=self.config.idle_timeout,
            cookie=COOKIE_LEARNT,
        ))
        msgs.append(packet_out(in_port, entry.port, buffer_id, data))
        return msgs

    def _learn(self, sw: SwitchState, mac: str, port: int, now: float) -> list[parser.MsgBase]:
        """Record `mac` on `port`; if it moved from another port, delete the stale flow towards it."""
        old = sw.macs.get(mac)
        sw.macs[mac] = MacEntry(port, now)
        if old is None or old.port == port:
            return []
        log.info("dpid %s: %s moved from port %s to %s", sw.dpid, mac, old.port, port)
        return [delete_flows(match=parser.OFPMatch(eth_dst=mac))]

    def port_status(self, dpid: int, port_no: int, up: bool) -> list[parser.MsgBase]:
        """A port changed: when it went down, forget its MACs and delete flows that output to it."""
        if up:
            return []
        sw = self.state(dpid)
        gone = [mac for mac, e in sw.macs.items() if e.port == port_no]
        for mac in gone:
            del sw.macs[mac]
        log.info("dpid %s: port %s down, forgot %d MACs", dpid, port_no, len(gone))
        return [delete_flows(out_port=port_no, cookie=COOKIE_LEARNT)]

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
    idle_timeout: int = 0,
    cookie: int = 0,
) -> parser.OFPFlowMod:
    """An OFPFC_ADD flow in table 0 applying `actions` (empty: drop)."""
    inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)] if actions else []
    return parser.OFPFlowMod(
        datapath=None,
        cookie=cookie,
        table_id=0,
        command=ofp.OFPFC_ADD,
        idle_timeout=idle_timeout,
        priority=priority,
        buffer_id=ofp.OFP_NO_BUFFER,
        match=match,
        instructions=inst,
    )


def delete_flows(
    *,
    match: parser.OFPMatch | None = None,
    out_port: int = ofp.OFPP_ANY,
    cookie: int | None = None,
) -> parser.OFPFlowMod:
    """An OFPFC_DELETE of table-0 flows matching `match`/`out_port`/`cookie` (defaults: all flows)."""
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


def packet_out(in_port: int, out_port: int, buffer_id: int, data: bytes) -> parser.OFPPacketOut:
    """Send a packet-in frame (buffered in the switch, or carried as `data`) out of `out_port`."""
    buffered = buffer_id != ofp.OFP_NO_BUFFER
    return parser.OFPPacketOut(
        datapath=None,
        buffer_id=buffer_id,
        in_port=in_port,
        actions=[parser.OFPActionOutput(out_port)],
        data=None if buffered else data,
    )
