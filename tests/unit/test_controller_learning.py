"""Unit tests of the learning-switch logic: messages built without a switch, controller or root."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controllers.learning import (
    COOKIE_LEARNT,
    PRIO_LEARNT,
    PRIO_MISS,
    TABLE_DST,
    TABLE_SRC,
    LearningConfig,
    LearningSwitch,
    is_multicast,
)
from controllers.steering import TopologyMap
from tests.unit.fakeoftable import FakeNetwork

A, B, C = "00:00:00:00:00:0a", "00:00:00:00:00:0b", "00:00:00:00:00:0c"
BCAST = "ff:ff:ff:ff:ff:ff"
DP = 1


def fake_dp() -> SimpleNamespace:
    """Just enough of a Datapath for MsgBase.serialize()."""
    return SimpleNamespace(ofproto=ofp, ofproto_parser=parser)


def serialize(msg: parser.MsgBase) -> bytes:
    """Serialise `msg` as the app would, returning the wire bytes."""
    msg.datapath = fake_dp()
    msg.xid = 7
    msg.serialize()
    return bytes(msg.buf)


def flow_mods(msgs, command):
    return [m for m in msgs if isinstance(m, parser.OFPFlowMod) and m.command == command]


def outputs(msg: parser.OFPFlowMod) -> list[int]:
    """Output ports of a flow-mod's apply-actions."""
    acts = [a for i in msg.instructions if hasattr(i, "actions") for a in i.actions]
    return [a.port for a in acts if isinstance(a, parser.OFPActionOutput)]


def goto(msg: parser.OFPFlowMod) -> int | None:
    """The table a flow-mod goes on to, if any."""
    return next((i.table_id for i in msg.instructions if isinstance(i, parser.OFPInstructionGotoTable)), None)


def fields(msg: parser.MsgBase) -> dict:
    return {f["OXMTlv"]["field"]: f["OXMTlv"]["value"] for f in msg.match.to_jsondict()["OFPMatch"]["oxm_fields"]}


#: One switch (DP) with hosts a, b, c on ports 1, 2, 3, for following frames through its tables.
MAP = {"switches": {"s1": DP}, "links": [],
       "hosts": {n: {"dpid": DP, "port": i, "mac": m, "ip": f"10.0.0.{i}"}
                 for i, (n, m) in enumerate((("a", A), ("b", B), ("c", C)), start=1)}}


def network(sw: LearningSwitch) -> FakeNetwork:
    net = FakeNetwork(TopologyMap.from_json(MAP))
    net.apply(DP, sw.switch_features(DP))
    return net


def send(net: FakeNetwork, sw: LearningSwitch, host: str, dst: str, now: float = 0.0) -> tuple:
    """Host `host` sends a frame to `dst`: where it ends; the controller learns from any copy, as the app does."""
    src = MAP["hosts"][host]
    end = net.send(host, {"eth_src": src["mac"], "eth_dst": dst})
    for dpid in net.asked:
        net.apply(dpid, sw.packet_in(dpid, src["port"], src["mac"], now))
    return end


@pytest.fixture
def sw() -> LearningSwitch:
    s = LearningSwitch(LearningConfig(idle_timeout=30, mac_timeout=300))
    s.switch_features(DP)
    return s


def test_features_installs_both_tables_misses() -> None:
    msgs = LearningSwitch().switch_features(DP)
    assert msgs[0].command == ofp.OFPFC_DELETE  # stale flows of a previous controller go first
    miss = {m.table_id: m for m in flow_mods(msgs, ofp.OFPFC_ADD) if m.priority == PRIO_MISS}
    assert set(miss) == {TABLE_SRC, TABLE_DST}
    assert all(fields(m) == {} for m in miss.values())
    (action,) = miss[TABLE_SRC].instructions[0].actions  # a copy to the controller, and on to the next table
    assert action.port == ofp.OFPP_CONTROLLER and action.max_len == ofp.OFPCML_NO_BUFFER
    assert goto(miss[TABLE_SRC]) == TABLE_DST
    assert outputs(miss[TABLE_DST]) == [ofp.OFPP_FLOOD] and goto(miss[TABLE_DST]) is None
    for m in msgs:
        assert len(serialize(m)) >= 48


def test_features_drops_lldp() -> None:
    msgs = LearningSwitch().switch_features(DP)
    lldp = [m for m in flow_mods(msgs, ofp.OFPFC_ADD) if m.match.get("eth_type") == 0x88CC]
    assert len(lldp) == 1 and lldp[0].instructions == [] and lldp[0].priority > PRIO_LEARNT
    assert lldp[0].table_id == TABLE_SRC


def test_learning_installs_a_source_and_a_destination_flow(sw: LearningSwitch) -> None:
    msgs = sw.packet_in(DP, 2, B, now=0.0)
    src, dst = flow_mods(msgs, ofp.OFPFC_ADD)
    assert src.table_id == TABLE_SRC and fields(src) == {"in_port": 2, "eth_src": B} and goto(src) == TABLE_DST
    assert outputs(src) == [] and src.idle_timeout == 30 and src.hard_timeout == 300
    assert src.flags & ofp.OFPFF_SEND_FLOW_REM  # the switch says when it expires
    assert dst.table_id == TABLE_DST and fields(dst) == {"eth_dst": B} and outputs(dst) == [2]
    assert dst.idle_timeout == 0 and dst.hard_timeout == 300  # lives as long as the source flow
    assert {src.priority, dst.priority} == {PRIO_LEARNT} and {src.cookie, dst.cookie} == {COOKIE_LEARNT}
    assert sw.state(DP).macs[B].port == 2
    for m in msgs:
        serialize(m)


def test_frames_flow_without_the_controller_once_learnt(sw: LearningSwitch) -> None:
    net = network(sw)
    assert send(net, sw, "a", B) == ("flood", DP) and net.asked == [DP]  # unknown b: flooded; a learnt
    assert send(net, sw, "b", A) == ("host", "a", A) and net.asked == [DP]  # a known; b learnt
    assert send(net, sw, "a", B) == ("host", "b", B) and net.asked == []  # both known: the switch alone
    assert send(net, sw, "b", A) == ("host", "a", A) and net.asked == []
    assert send(net, sw, "c", BCAST) == ("flood", DP) and net.asked == [DP]  # broadcast: flooded
    assert send(net, sw, "a", C) == ("host", "c", C)


def test_a_host_that_only_sends_to_known_hosts_is_learnt(sw: LearningSwitch) -> None:
    net = network(sw)
    send(net, sw, "b", BCAST)
    assert send(net, sw, "a", B) == ("host", "b", B)  # never flooded, still learnt from the copy
    assert send(net, sw, "b", A) == ("host", "a", A) and net.asked == []


def test_multicast_source_is_not_learnt(sw: LearningSwitch) -> None:
    assert sw.packet_in(DP, 1, "01:00:5e:00:00:01", now=0.0) == []
    assert sw.state(DP).macs == {}


def test_mac_move_deletes_stale_flows_and_relearns(sw: LearningSwitch) -> None:
    net = network(sw)
    net.apply(DP, sw.packet_in(DP, 2, B, now=0.0))
    msgs = sw.packet_in(DP, 3, B, now=1.0)
    deletes = flow_mods(msgs, ofp.OFPFC_DELETE)
    assert [fields(d) for d in deletes] == [{"eth_dst": B}, {"eth_src": B}]
    assert all(d.out_port == ofp.OFPP_ANY and d.table_id == ofp.OFPTT_ALL for d in deletes)
    assert msgs.index(deletes[-1]) < msgs.index(flow_mods(msgs, ofp.OFPFC_ADD)[0])  # deleted before re-added
    net.apply(DP, msgs)
    assert sw.state(DP).macs[B].port == 3
    assert [outputs(f) for f in flow_mods(msgs, ofp.OFPFC_ADD) if f.table_id == TABLE_DST] == [[3]]
    assert not [f for f in net.tables[DP].flows if f.match.get("in_port") == 2]  # the old source flow is gone
    net.host_at[(DP, 3)] = "c"
    assert send(net, sw, "a", B)[:2] == ("host", "c")
    for m in msgs:
        serialize(m)


def test_same_port_refresh_deletes_nothing(sw: LearningSwitch) -> None:
    sw.packet_in(DP, 2, B, now=0.0)
    msgs = sw.packet_in(DP, 2, B, now=5.0)
    assert flow_mods(msgs, ofp.OFPFC_DELETE) == []
    assert sw.state(DP).macs[B].last_seen == 5.0


@pytest.mark.parametrize("reason", [ofp.OFPRR_IDLE_TIMEOUT, ofp.OFPRR_HARD_TIMEOUT])
def test_an_expired_source_is_forgotten_with_its_destination_flow(sw: LearningSwitch, reason: int) -> None:
    net = network(sw)
    send(net, sw, "b", BCAST)
    net.tables[DP].flows = [f for f in net.tables[DP].flows if f.match.get("eth_src") != B]  # the switch expired it
    msgs = sw.flow_removed(DP, 2, B, reason)
    (delete,) = msgs
    assert fields(delete) == {"eth_dst": B} and delete.cookie == COOKIE_LEARNT
    net.apply(DP, msgs)
    assert B not in sw.state(DP).macs
    assert send(net, sw, "a", B) == ("flood", DP)  # unknown again
    assert send(net, sw, "b", A)[:2] == ("host", "a") and net.asked == [DP]  # and learnt afresh when it speaks
    assert send(net, sw, "a", B) == ("host", "b", B)
    serialize(delete)


def test_a_flow_removed_by_the_controller_or_from_an_old_port_changes_nothing(sw: LearningSwitch) -> None:
    sw.packet_in(DP, 2, B, now=0.0)
    assert sw.flow_removed(DP, 2, B, ofp.OFPRR_DELETE) == []
    sw.packet_in(DP, 3, B, now=1.0)  # moved: the old source flow's removal comes later
    assert sw.flow_removed(DP, 2, B, ofp.OFPRR_IDLE_TIMEOUT) == []
    assert sw.state(DP).macs[B].port == 3
    assert sw.flow_removed(DP, 1, A, ofp.OFPRR_IDLE_TIMEOUT) == []  # never learnt


def test_port_down_forgets_macs_and_deletes_flows(sw: LearningSwitch) -> None:
    net = network(sw)
    for host in ("b", "a"):
        send(net, sw, host, BCAST)
    sw.packet_in(DP, 2, C, now=0.0)
    to_port, from_port = sw.port_status(DP, 2, up=False)
    assert to_port.command == from_port.command == ofp.OFPFC_DELETE
    assert to_port.out_port == 2 and to_port.table_id == ofp.OFPTT_ALL
    assert fields(from_port) == {"in_port": 2} and from_port.out_port == ofp.OFPP_ANY
    for d in (to_port, from_port):
        assert d.cookie == COOKIE_LEARNT and d.cookie_mask == 0xFFFFFFFFFFFFFFFF
        serialize(d)
    net.apply(DP, [to_port, from_port])
    assert set(sw.state(DP).macs) == {A}
    assert send(net, sw, "a", B) == ("flood", DP)
    assert not [f for f in net.tables[DP].flows if f.cookie == COOKIE_LEARNT and f.match.get("in_port") == 2]


def test_port_up_sends_nothing(sw: LearningSwitch) -> None:
    sw.packet_in(DP, 2, B, now=0.0)
    assert sw.port_status(DP, 2, up=True) == []
    assert B in sw.state(DP).macs


def test_topology_change_flushes_other_switches(sw: LearningSwitch) -> None:
    sw.switch_features(2)
    sw.packet_in(DP, 1, A, now=0.0)
    sw.packet_in(2, 1, A, now=0.0)
    out = sw.topology_change(origin_dpid=DP)
    assert list(out) == [2]
    (delete,) = out[2]
    assert delete.command == ofp.OFPFC_DELETE and delete.cookie == COOKIE_LEARNT
    assert delete.table_id == ofp.OFPTT_ALL  # both tables
    assert sw.state(2).macs == {} and A in sw.state(DP).macs


def test_switches_are_independent(sw: LearningSwitch) -> None:
    sw.packet_in(DP, 2, B, now=0.0)
    assert sw.state(9).macs == {}
    assert [f.table_id for f in flow_mods(sw.packet_in(9, 2, B, now=0.0), ofp.OFPFC_ADD)] == [TABLE_SRC, TABLE_DST]


def test_reconnect_clears_state(sw: LearningSwitch) -> None:
    sw.packet_in(DP, 2, B, now=0.0)
    sw.switch_features(DP)
    assert sw.state(DP).macs == {}


@pytest.mark.parametrize("mac,expected", [(BCAST, True), ("01:00:5e:00:00:fb", True),
                                          ("33:33:00:00:00:01", True), (A, False)])
def test_is_multicast(mac: str, expected: bool) -> None:
    assert is_multicast(mac) is expected
