"""A classic OpenFlow 1.3 learning switch written as a Ryu app, the example of a user's own controller.

It is written the way Ryu's `simple_switch_13` sample is (one class, a `mac_to_port` table, a
table-miss flow, flows matching in_port/eth_src/eth_dst), and imports only `os_ken`: a Ryu app
ports by renaming `ryu` to `os_ken` and `RyuApp` to `OSKenApp`, nothing else. Choose it with
`controller: {app: controllers/simple_switch_13.py}` or `testbed topo --controller FILE`.

It reads its optional `config` the way any app may: the testbed writes the topology's
`controller.config` mapping as JSON to the file named by $TESTBED_CONTROLLER_CONFIG. Here the only
key is `idle_timeout` (seconds, default 0: flows never expire).
"""

import json
import os

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib.packet import ether_types, ethernet, packet
from os_ken.ofproto import ofproto_v1_3


def load_config():
    """The app's config mapping from $TESTBED_CONTROLLER_CONFIG, or {} when run without the testbed."""
    path = os.environ.get("TESTBED_CONTROLLER_CONFIG")
    if not path:
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class SimpleSwitch13(app_manager.OSKenApp):
    """Learn which port each MAC is behind, per switch; install a flow once a destination is known."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super(SimpleSwitch13, self).__init__(*args, **kwargs)
        self.mac_to_port = {}
        self.idle_timeout = int(load_config().get("idle_timeout", 0))

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features_handler(self, ev):
        """Install the table-miss flow: whatever matches nothing goes to the controller, unbuffered."""
        datapath = ev.msg.datapath
        ofproto = datapath.ofproto
        parser = datapath.ofproto_parser
        match = parser.OFPMatch()
        actions = [parser.OFPActionOutput(ofproto.OFPP_CONTROLLER, ofproto.OFPCML_NO_BUFFER)]
        self.add_flow(datapath, 0, match, actions)

    def add_flow(self, datapath, priority, match, actions, buffer_id=None):
        """Add a flow applying `actions`; with `buffer_id`, also release that buffered packet through it."""
        ofproto = datapath.ofproto
        parser = datapath.ofproto_parser
        inst = [parser.OFPInstructionActions(ofproto.OFPIT_APPLY_ACTIONS, actions)]
        kwargs = dict(datapath=datapath, priority=priority, match=match, instructions=inst,
                      idle_timeout=self.idle_timeout if priority else 0)
        if buffer_id is not None:
            kwargs["buffer_id"] = buffer_id
        datapath.send_msg(parser.OFPFlowMod(**kwargs))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in_handler(self, ev):
        """Learn the source port, then forward to the known port (adding a flow) or flood."""
        msg = ev.msg
        datapath = msg.datapath
        ofproto = datapath.ofproto
        parser = datapath.ofproto_parser
        in_port = msg.match["in_port"]

        eth = packet.Packet(msg.data).get_protocols(ethernet.ethernet)[0]
        if eth.ethertype == ether_types.ETH_TYPE_LLDP:
            return  # link discovery frames are not for us
        dst, src = eth.dst, eth.src
        dpid = format(datapath.id, "d").zfill(16)
        self.mac_to_port.setdefault(dpid, {})
        self.logger.debug("packet in %s %s %s %s", dpid, src, dst, in_port)
        self.mac_to_port[dpid][src] = in_port

        out_port = self.mac_to_port[dpid].get(dst, ofproto.OFPP_FLOOD)
        actions = [parser.OFPActionOutput(out_port)]
        if out_port != ofproto.OFPP_FLOOD:
            match = parser.OFPMatch(in_port=in_port, eth_dst=dst, eth_src=src)
            if msg.buffer_id != ofproto.OFP_NO_BUFFER:
                self.add_flow(datapath, 1, match, actions, msg.buffer_id)
                return
            self.add_flow(datapath, 1, match, actions)
        data = msg.data if msg.buffer_id == ofproto.OFP_NO_BUFFER else None
        out = parser.OFPPacketOut(datapath=datapath, buffer_id=msg.buffer_id, in_port=in_port,
                                  actions=actions, data=data)
        datapath.send_msg(out)
