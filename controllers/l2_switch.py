"""The os-ken app shell of the L2 learning switch and its northbound steering: translates, delegates, sends.

Config ($TESTBED_CONTROLLER_CONFIG, see testbed.controller): `idle_timeout`, `mac_timeout` (s).
Northbound commands (testbed.control's protocol on the controller's socket):
`topology {map}` (testbed.controller.topology_map), `steer {ip, host, proto?, port?, mode?}`,
`unsteer {ip, proto?, port?}`, `steers {}`; see controllers/steering.py; `moved {host, dpid, port}`
(a host re-attached elsewhere: forgotten everywhere, its steers re-pathed; controllers/mobility.py). OF 1.3 only.
"""

from __future__ import annotations

import json
import os
import threading
import time

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib.packet import ethernet, packet
from os_ken.ofproto import ofproto_v1_3

from controllers.learning import COOKIE_LEARNT, TABLE_SRC, LearningConfig, LearningSwitch
from controllers.mobility import moved
from controllers.northbound import PlanRunner
from controllers.steering import Steering, TopologyMap

#: Where testbed.controller names the app's config file (JSON).
CONFIG_ENV = "TESTBED_CONTROLLER_CONFIG"


def load_config() -> LearningConfig:
    """The learning switch's config from the file $TESTBED_CONTROLLER_CONFIG names (defaults without it)."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        return LearningConfig()
    with open(path, encoding="utf-8") as f:
        return LearningConfig(**json.load(f))


class L2Switch(app_manager.OSKenApp):
    """Learning switch for every connected datapath; the logic lives in `controllers.learning`."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]
    #: On any port down, also flush the other switches (their paths may have led through it).
    flush_on_port_down = True

    def __init__(self, *args, **kwargs) -> None:
        """Set up the learning logic and the table of connected datapaths."""
        super().__init__(*args, **kwargs)
        self.logic = LearningSwitch(load_config())
        self.datapaths: dict[int, object] = {}
        self.steering = Steering()
        self.runner = PlanRunner(self.datapaths)
        self._steer_lock = threading.Lock()  # one steer at a time (the event thread never takes it)

    def northbound_handlers(self) -> dict:
        """The control commands this app adds to the controller's socket."""
        return {"topology": self.nb_topology, "steer": self.nb_steer, "unsteer": self.nb_unsteer,
                "steers": lambda args: self.steering.listing(), "moved": self.nb_moved}

    def nb_topology(self, args: dict) -> dict:
        """Take the testbed's topology map (where hosts attach, WAN ports)."""
        tmap = TopologyMap.from_json(args.get("map"))
        with self._steer_lock:
            return self.steering.set_topology(tmap)

    def nb_steer(self, args: dict) -> dict:
        """Move traffic for an IP (proto/port) to a host; answers once every switch acknowledged."""
        with self._steer_lock:
            return self._run(lambda: self.steering.steer(args, time.monotonic()))

    def nb_unsteer(self, args: dict) -> dict:
        """Give an IP's (proto/port's) traffic back to MAC learning."""
        with self._steer_lock:
            return self._run(lambda: self.steering.unsteer(args))

    def _run(self, make_plan) -> dict:
        """Make a plan and carry it out; if no switch got any of it (one is not connected), forget it."""
        before = dict(self.steering.steers)
        plan = make_plan()
        try:
            return self.runner.run(plan)
        except ValueError:  # raised before anything was sent
            self.steering.steers = before
            raise

    def nb_moved(self, args: dict) -> dict:
        """A host re-attached to another switch port: forget its old place everywhere, re-path its steers."""
        with self._steer_lock:
            return self.runner.run(moved(self.logic, self.steering, args))

    def send(self, dp, msgs) -> None:
        """Attach datapath `dp` to each message of the logic and send it."""
        for msg in msgs:
            msg.datapath = dp
            dp.send_msg(msg)

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def on_features(self, ev) -> None:
        """A switch connected: install its base flows."""
        dp = ev.msg.datapath
        self.datapaths[dp.id] = dp
        self.logger.info("switch %016x connected", dp.id)
        self.send(dp, self.logic.switch_features(dp.id) + self.steering.switch_flows(dp.id))

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def on_barrier(self, ev) -> None:
        """A switch acknowledged a steering phase."""
        self.runner.acknowledged(ev.msg.datapath.id, ev.msg.xid)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def on_dead(self, ev) -> None:
        """A switch disconnected: forget it."""
        dp = ev.datapath
        if dp.id is not None and self.datapaths.get(dp.id) is dp:
            del self.datapaths[dp.id]
            self.logic.switch_leave(dp.id)
            self.logger.info("switch %016x disconnected", dp.id)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def on_packet_in(self, ev) -> None:
        """A copy of a frame from a source the switch did not know: learn it."""
        msg = ev.msg
        eth = packet.Packet(msg.data).get_protocol(ethernet.ethernet)
        if eth is None or msg.table_id != TABLE_SRC:
            return
        self.send(msg.datapath, self.logic.packet_in(msg.datapath.id, msg.match["in_port"], eth.src,
                                                     time.monotonic()))

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def on_flow_removed(self, ev) -> None:
        """A learnt source flow expired: forget the source and its destination flow."""
        msg = ev.msg
        if msg.table_id != TABLE_SRC or msg.cookie != COOKIE_LEARNT:
            return
        self.send(msg.datapath, self.logic.flow_removed(msg.datapath.id, msg.match["in_port"],
                                                        msg.match["eth_src"], msg.reason))

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def on_port_status(self, ev) -> None:
        """A port was added, changed or removed: forget what was learnt behind a port that went down."""
        msg = ev.msg
        dp = msg.datapath
        ofp = dp.ofproto
        port = msg.desc
        up = msg.reason != ofp.OFPPR_DELETE and not (
            port.state & ofp.OFPPS_LINK_DOWN or port.config & ofp.OFPPC_PORT_DOWN
        )
        self.logger.info("switch %016x port %s %s", dp.id, port.port_no, "up" if up else "down")
        self.send(dp, self.logic.port_status(dp.id, port.port_no, up))
        if not up and self.flush_on_port_down:
            for dpid, msgs in self.logic.topology_change(dp.id).items():
                if dpid in self.datapaths:
                    self.send(self.datapaths[dpid], msgs)
