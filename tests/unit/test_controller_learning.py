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
    LearningConfig,
    LearningSwitch,
    is_multicast,
)

A, B, C = "00:00:00:00:00:0a", "00:00:00:00:00:0b", "00:00:00:00:00:0c"
BCAST = "ff:ff:ff:ff:ff:ff"
NB = ofp.OFP_NO_BUFFER
FRAME = b"\x00" * 60
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


def outputs(msg) -> list[int]:
    """Output ports of a packet-out or of a flow-mod's apply-actions."""
    if isinstance(msg, parser.OFPPacketOut):
        acts = msg.actions
    else:
        acts = [a for i in msg.instructions for a in i.actions]
    return [a.port for a in acts if isinstance(a, parser.OFPActionOutput)]


@pytest.fixture
def sw() -> LearningSwitch:
    s = LearningSwitch(LearningConfig(idle_timeout=30, mac_timeout=300))
    s.switch_features(DP)
    return s


def test_features_installs_table_miss_to_controller() -> None:
    msgs = LearningSwitch().switch_features(DP)
    assert msgs[0].command == ofp.OFPFC_DELETE  # stale flows of a previous controller go first
    miss = [m for m in flow_mods(msgs, ofp.OFPFC_ADD) if m.priority == PRIO_MISS]
    assert len(miss) == 1
    assert miss[0].match.to_jsondict()["OFPMatch"]["oxm_fields"] == []
    (action,) = miss[0].instructions[0].actions
    assert action.port == ofp.OFPP_CONTROLLER and action.max_len == ofp.OFPCML_NO_BUFFER
    for m in msgs:
        assert len(serialize(m)) >= 48


def test_features_drops_lldp() -> None:
    msgs = LearningSwitch().switch_features(DP)
    lldp = [m for m in flow_mods(msgs, ofp.OFPFC_ADD) if m.match.get("eth_type") == 0x88CC]
    assert len(lldp) == 1 and lldp[0].instructions == [] and lldp[0].priority > PRIO_LEARNT


def test_broadcast_is_flooded(sw: LearningSwitch) -> None:
    msgs = sw.packet_in(DP, 1, A, BCAST, NB, FRAME, now=0.0)
    assert len(msgs) == 1
    (out,) = msgs
    assert isinstance(out, parser.OFPPacketOut)
    assert outputs(out) == [ofp.OFPP_FLOOD] and out.in_port == 1 and out.data == FRAME
    assert sw.state(DP).macs[A].port == 1
    serialize(out)


def test_unknown_unicast_is_flooded(sw: LearningSwitch) -> None:
    (out,) = sw.packet_in(DP, 1, A, B, NB, FRAME, now=0.0)
    assert outputs(out) == [ofp.OFPP_FLOOD]


def test_known_destination_installs_flow_and_sends(sw: LearningSwitch) -> None:
    sw.packet_in(DP, 2, B, BCAST, NB, FRAME, now=0.0)
    msgs = sw.packet_in(DP, 1, A, B, NB, FRAME, now=1.0)
    (flow,) = flow_mods(msgs, ofp.OFPFC_ADD)
    assert flow.match.to_jsondict()["OFPMatch"]["oxm_fields"] == [
        {"OXMTlv": {"field": "eth_dst", "mask": None, "value": B}}
    ]
    assert outputs(flow) == [2]
    assert flow.priority == PRIO_LEARNT and flow.idle_timeout == 30 and flow.cookie == COOKIE_LEARNT
    (out,) = [m for m in msgs if isinstance(m, parser.OFPPacketOut)]
    assert outputs(out) == [2] and out.in_port == 1
    assert msgs.index(flow) < msgs.index(out)
    for m in msgs:
        serialize(m)


def test_buffered_packet_out_carries_no_data(sw: LearningSwitch) -> None:
    sw.packet_in(DP, 2, B, BCAST, NB, FRAME, now=0.0)
    msgs = sw.packet_in(DP, 1, A, B, 42, FRAME, now=1.0)
    (out,) = [m for m in msgs if isinstance(m, parser.OFPPacketOut)]
    assert out.buffer_id == 42 and out.data is None


def test_destination_on_in_port_is_dropped(sw: LearningSwitch) -> None:
    sw.packet_in(DP, 1, B, BCAST, NB, FRAME, now=0.0)
    assert sw.packet_in(DP, 1, A, B, NB, FRAME, now=1.0) == []


def test_stale_mac_is_flooded_again(sw: LearningSwitch) -> None:
    sw.packet_in(DP, 2, B, BCAST, NB, FRAME, now=0.0)
    (out,) = sw.packet_in(DP, 1, A, B, NB, FRAME, now=301.0)
    assert outputs(out) == [ofp.OFPP_FLOOD]
    assert B not in sw.state(DP).macs


def test_multicast_source_is_not_learnt(sw: LearningSwitch) -> None:
    sw.packet_in(DP, 1, "01:00:5e:00:00:01", BCAST, NB, FRAME, now=0.0)
    assert sw.state(DP).macs == {}


def test_mac_move_deletes_stale_flow_and_relearns(sw: LearningSwitch) -> None:
    sw.packet_in(DP, 2, B, BCAST, NB, FRAME, now=0.0)
    msgs = sw.packet_in(DP, 3, B, BCAST, NB, FRAME, now=1.0)
    (delete,) = flow_mods(msgs, ofp.OFPFC_DELETE)
    assert delete.match["eth_dst"] == B
    assert delete.out_port == ofp.OFPP_ANY
    assert sw.state(DP).macs[B].port == 3
    (flow,) = flow_mods(sw.packet_in(DP, 1, A, B, NB, FRAME, now=2.0), ofp.OFPFC_ADD)
    assert outputs(flow) == [3]
    serialize(delete)


def test_same_port_refresh_deletes_nothing(sw: LearningSwitch) -> None:
    sw.packet_in(DP, 2, B, BCAST, NB, FRAME, now=0.0)
    msgs = sw.packet_in(DP, 2, B, BCAST, NB, FRAME, now=5.0)
    assert flow_mods(msgs, ofp.OFPFC_DELETE) == []
    assert sw.state(DP).macs[B].last_seen == 5.0


def test_port_down_forgets_macs_and_deletes_flows(sw: LearningSwitch) -> None:
    sw.packet_in(DP, 2, B, BCAST, NB, FRAME, now=0.0)
    sw.packet_in(DP, 2, C, BCAST, NB, FRAME, now=0.0)
    sw.packet_in(DP, 1, A, BCAST, NB, FRAME, now=0.0)
    (delete,) = sw.port_status(DP, 2, up=False)
    assert delete.command == ofp.OFPFC_DELETE
    assert delete.out_port == 2 and delete.table_id == ofp.OFPTT_ALL
    assert delete.cookie == COOKIE_LEARNT and delete.cookie_mask == 0xFFFFFFFFFFFFFFFF
    assert set(sw.state(DP).macs) == {A}
    (out,) = sw.packet_in(DP, 1, A, B, NB, FRAME, now=1.0)
    assert outputs(out) == [ofp.OFPP_FLOOD]
    serialize(delete)


def test_port_up_sends_nothing(sw: LearningSwitch) -> None:
    sw.packet_in(DP, 2, B, BCAST, NB, FRAME, now=0.0)
    assert sw.port_status(DP, 2, up=True) == []
    assert B in sw.state(DP).macs


def test_topology_change_flushes_other_switches(sw: LearningSwitch) -> None:
    sw.switch_features(2)
    sw.packet_in(DP, 1, A, BCAST, NB, FRAME, now=0.0)
    sw.packet_in(2, 1, A, BCAST, NB, FRAME, now=0.0)
    out = sw.topology_change(origin_dpid=DP)
    assert list(out) == [2]
    (delete,) = out[2]
    assert delete.command == ofp.OFPFC_DELETE and delete.cookie == COOKIE_LEARNT
    assert sw.state(2).macs == {} and A in sw.state(DP).macs


def test_switches_are_independent(sw: LearningSwitch) -> None:
    sw.packet_in(DP, 2, B, BCAST, NB, FRAME, now=0.0)
    (out,) = sw.packet_in(9, 1, A, B, NB, FRAME, now=0.0)
    assert outputs(out) == [ofp.OFPP_FLOOD]


def test_reconnect_clears_state(sw: LearningSwitch) -> None:
    sw.packet_in(DP, 2, B, BCAST, NB, FRAME, now=0.0)
    sw.switch_features(DP)
    assert sw.state(DP).macs == {}


@pytest.mark.parametrize("mac,expected", [(BCAST, True), ("01:00:5e:00:00:fb", True),
                                          ("33:33:00:00:00:01", True), (A, False)])
def test_is_multicast(mac: str, expected: bool) -> None:
    assert is_multicast(mac) is expected
