"""Unit tests of the northbound plumbing: the plan runner's barriers, the topology map, the app's handlers."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controllers.l2_switch import load_config
from controllers.learning import LearningConfig
from controllers.northbound import XID_BASE, PlanRunner
from controllers.steering import Plan, Steering, TopologyMap
from testbed.controller import northbound_handlers, topology_map
from testbed.errors import TestbedError
from testbed.topology.api import MecTopo


class FakeDatapath:
    """Records what is sent; answers barriers through `runner` when `answer` is set."""

    def __init__(self, dpid: int, log: list, answer: bool = True) -> None:
        self.id, self.log, self.answer = dpid, log, answer
        self.ofproto, self.ofproto_parser = ofp, parser
        self.runner: PlanRunner | None = None

    def send_msg(self, msg) -> None:
        self.log.append((self.id, type(msg).__name__, msg.xid))
        if isinstance(msg, parser.OFPBarrierRequest) and self.answer:
            assert self.runner is not None
            threading.Timer(0.01, self.runner.acknowledged, (self.id, msg.xid)).start()


def flow() -> parser.OFPFlowMod:
    return parser.OFPFlowMod(datapath=None, match=parser.OFPMatch(), instructions=[])


def test_each_phase_is_sent_then_barriered_before_the_next() -> None:
    log: list = []
    dps = {1: FakeDatapath(1, log), 2: FakeDatapath(2, log)}
    ticks = iter([0.0, 0.002, 0.005])
    runner = PlanRunner(dps, timeout=2.0, clock=lambda: next(ticks))
    for dp in dps.values():
        dp.runner = runner
    plan = Plan([{1: [flow()], 2: [flow(), flow()]}, {2: [flow()]}], {"host": "r2"})
    out = runner.run(plan)
    assert out == {"host": "r2", "phases": 2, "flow_mods": 4, "acked_ms": [2.0, 5.0]}
    kinds = [(d, k) for d, k, _ in log]
    assert kinds == [(1, "OFPFlowMod"), (1, "OFPBarrierRequest"), (2, "OFPFlowMod"), (2, "OFPFlowMod"),
                     (2, "OFPBarrierRequest"), (2, "OFPFlowMod"), (2, "OFPBarrierRequest")]
    assert all(x >= XID_BASE for _, k, x in log if k == "OFPBarrierRequest")


def test_a_switch_that_never_acknowledges_is_an_error() -> None:
    log: list = []
    runner = PlanRunner({1: FakeDatapath(1, log, answer=False)}, timeout=0.05)
    with pytest.raises(TimeoutError, match="switch 0x1 did not acknowledge phase 1 of 1"):
        runner.run(Plan([{1: [flow()]}]))


def test_a_plan_for_an_unconnected_switch_sends_nothing() -> None:
    log: list = []
    runner = PlanRunner({1: FakeDatapath(1, log)})
    with pytest.raises(ValueError, match="not connected: 0x2"):
        runner.run(Plan([{1: [flow()]}, {2: [flow()]}]))
    assert log == []


class FakeIntf:
    def __init__(self, node) -> None:
        self.node, self.link = node, None


class FakeNode:
    def __init__(self, name: str, mac: str = "", dpid: str = "") -> None:
        self.name, self._mac, self.dpid, self.ports = name, mac, dpid, {}
        self._next = 1

    def MAC(self) -> str:  # noqa: N802
        return self._mac


def connect(a: FakeNode, b: FakeNode) -> None:
    ia, ib = FakeIntf(a), FakeIntf(b)
    ia.link = ib.link = SimpleNamespace(intf1=ia, intf2=ib)
    for node, intf in ((a, ia), (b, ib)):
        node.ports[intf] = node._next
        node._next += 1


def test_topology_map_names_dpids_host_ports_and_wan_ports() -> None:
    t = MecTopo("m", subnet="10.0.0.0/24")
    t.addSite("a")
    t.addSite("b")
    t.addHost("h1", site="a", ip="10.0.0.1")
    t.addHost("h2", site="b", ip="10.0.0.2")
    t.addWan("a", "b")
    topo = t.build()
    s1, s2 = FakeNode("s1", dpid="00000000000000a1"), FakeNode("s2", dpid="00000000000000b2")
    h1, h2, nic = FakeNode("h1", "00:00:00:00:00:01"), FakeNode("h2", "00:00:00:00:00:02"), FakeNode("h2-nic")
    connect(h1, s1)
    connect(h2, nic)
    connect(nic, s2)  # h2 sits behind a NIC: its port is the NIC's
    connect(s1, s2)
    net = {n.name: n for n in (s1, s2, h1, h2, nic)}
    out = topology_map(topo, net, {"a": "s1", "b": "s2"}, {"h2": nic})
    assert out == {"switches": {"a": 0xA1, "b": 0xB2},
                   "hosts": {"h1": {"dpid": 0xA1, "port": 1, "mac": "00:00:00:00:00:01", "ip": "10.0.0.1"},
                             "h2": {"dpid": 0xB2, "port": 1, "mac": "00:00:00:00:00:02", "ip": "10.0.0.2"}},
                   "links": [{"a": 0xA1, "a_port": 2, "b": 0xB2, "b_port": 2}]}
    json.dumps(out)
    assert TopologyMap.from_json(out).next_hops(0xB2) == {0xA1: 2}
    with pytest.raises(TestbedError, match="no port of s1 leads to h2"):
        topology_map(topo, net, {"a": "s1", "b": "s1"}, {})


def test_ping_names_the_commands_of_the_apps() -> None:
    class App:
        def northbound_handlers(self):
            return {"steer": lambda args: "ok"}

    handlers = northbound_handlers({"app": App(), "other": object()})
    assert handlers["steer"]({}) == "ok"
    answer = handlers["ping"]({})
    assert answer["commands"] == ["ping", "steer"] and answer["apps"] == ["app", "other"]
    assert northbound_handlers({"plain": object()})["ping"]({})["commands"] == ["ping"]


def test_learning_app_reads_its_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TESTBED_CONTROLLER_CONFIG", raising=False)
    assert load_config() == LearningConfig()
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"idle_timeout": 7, "mac_timeout": 60}))
    monkeypatch.setenv("TESTBED_CONTROLLER_CONFIG", str(path))
    assert load_config() == LearningConfig(idle_timeout=7, mac_timeout=60)


def test_steering_listing_is_json() -> None:
    s = Steering()
    s.set_topology(TopologyMap.from_json({"switches": {"a": 1}, "hosts": {
        "h": {"dpid": 1, "port": 1, "mac": "00:00:00:00:00:01", "ip": "10.0.0.5"}}}))
    s.steer({"ip": "10.0.0.5", "host": "h"}, now=1.0)
    assert json.loads(json.dumps(s.listing()))[0]["host"] == "h"


def test_a_steer_no_switch_got_is_forgotten() -> None:
    from controllers.l2_switch import L2Switch

    app = L2Switch()
    assert {"topology", "steer", "unsteer", "steers"} <= set(app.northbound_handlers())
    app.nb_topology({"map": {"switches": {"a": 1}, "hosts": {
        "h": {"dpid": 1, "port": 1, "mac": "00:00:00:00:00:01", "ip": "10.0.0.5"}}}})
    with pytest.raises(ValueError, match="not connected: 0x1"):
        app.nb_steer({"ip": "10.0.0.5", "host": "h"})
    assert app.northbound_handlers()["steers"]({}) == []
    log: list = []
    dp = FakeDatapath(1, log)
    dp.runner = app.runner
    app.datapaths[1] = dp
    assert app.nb_steer({"ip": "10.0.0.5", "host": "h"})["phases"] == 1  # one switch: one ring
    assert [s["host"] for s in app.northbound_handlers()["steers"]({})] == ["h"]
