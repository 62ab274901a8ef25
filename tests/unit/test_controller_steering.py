"""Unit tests of the steering logic on a fake flow table: where packets go before, during and after a steer."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controllers.learning import LearningSwitch
from controllers.steering import PRIO_STEER, Steering, TopologyMap
from tests.unit.fakeoftable import FakeNetwork

S1, S2, S3 = 0x101, 0x102, 0x103
VIP = "10.0.0.50"
MAC = {"cli": "00:00:00:00:00:01", "r1": "00:00:00:00:00:51", "r2": "00:00:00:00:00:52",
       "other": "00:00:00:00:00:09"}
#: s1 (cli, r1) -- s2 (other) -- s3 (r2): a line of three switches.
MAP = {
    "switches": {"edge1": S1, "transit": S2, "edge2": S3},
    "hosts": {"cli": {"dpid": S1, "port": 1, "mac": MAC["cli"], "ip": "10.0.0.1/24"},
              "r1": {"dpid": S1, "port": 2, "mac": MAC["r1"], "ip": VIP},
              "other": {"dpid": S2, "port": 3, "mac": MAC["other"], "ip": "10.0.0.9"},
              "r2": {"dpid": S3, "port": 1, "mac": MAC["r2"], "ip": VIP}},
    "links": [{"a": S1, "a_port": 3, "b": S2, "b_port": 1}, {"a": S2, "a_port": 2, "b": S3, "b_port": 2}],
}
UDP = {"eth_type": 0x0800, "eth_src": MAC["cli"], "eth_dst": MAC["r1"], "ipv4_dst": VIP, "ip_proto": 17,
       "udp_dst": 9000}
ARP = {"eth_type": 0x0806, "eth_src": MAC["cli"], "eth_dst": "ff:ff:ff:ff:ff:ff", "arp_tpa": VIP}


@pytest.fixture
def tmap() -> TopologyMap:
    return TopologyMap.from_json(MAP)


@pytest.fixture
def net(tmap: TopologyMap) -> FakeNetwork:
    """The fake network with the learning switch's base flows on every switch."""
    n = FakeNetwork(tmap)
    learning = LearningSwitch()
    for dpid in tmap.switches.values():
        n.apply(dpid, learning.switch_features(dpid))
    return n


@pytest.fixture
def steering(tmap: TopologyMap) -> Steering:
    s = Steering()
    s.set_topology(tmap)
    return s


def run(net: FakeNetwork, plan) -> None:
    for phase in plan.phases:
        net.apply_phase(phase)


def copy(net: FakeNetwork) -> FakeNetwork:
    trial = FakeNetwork(net.tmap)
    for dpid, table in net.tables.items():
        trial.tables[dpid].flows = list(table.flows)
    return trial


def every_step(net: FakeNetwork, plan, pkt: dict) -> list[set]:
    """Per phase, where `pkt` from cli ends for every subset of switches that may have applied that
    phase already (a packet can pass while a phase is half done); `net` ends with the plan applied."""
    seen = []
    for phase in plan.phases:
        ends = set()
        for n in range(len(phase) + 1):
            for done in itertools.combinations(sorted(phase), n):
                trial = copy(net)
                trial.apply_phase({d: phase[d] for d in done})
                ends.add(trial.send("cli", pkt)[:2])
        seen.append(ends)
        net.apply_phase(phase)
    return seen


def test_map_from_json_and_shortest_next_hops(tmap: TopologyMap) -> None:
    assert tmap.hosts["cli"].ip == "10.0.0.1" and tmap.hosts["r1"].mac == MAC["r1"]
    assert tmap.next_hops(S3) == {S2: 2, S1: 3}
    assert tmap.next_hops(S1) == {S2: 1, S3: 2}
    with pytest.raises(ValueError, match="unknown switch"):
        TopologyMap.from_json({**MAP, "hosts": {"x": {"dpid": 7, "port": 1, "mac": "m", "ip": VIP}}})
    with pytest.raises(ValueError, match="malformed"):
        TopologyMap.from_json({"switches": {}})
    with pytest.raises(ValueError, match="expected an integer"):
        TopologyMap.from_json({**MAP, "switches": {"a": "1"}})


def test_unsteered_traffic_goes_to_mac_learning(net: FakeNetwork) -> None:
    assert net.send("cli", UDP) == ("flood", S1) and net.asked == [S1]  # unknown: flooded, the source learnt


def test_first_steer_sends_ip_and_arp_to_the_host_whatever_mac_the_client_used(
        net: FakeNetwork, steering: Steering) -> None:
    plan = steering.steer({"ip": VIP, "host": "r2"}, now=5.0)
    assert plan.result == {"ip": VIP, "proto": None, "port": None, "host": "r2", "mode": "make-before-break",
                           "from": None, "changed": True}
    assert [set(p) for p in plan.phases] == [{S3}, {S2}, {S1}]  # from r2's switch outwards
    run(net, plan)
    assert net.send("cli", UDP) == ("host", "r2", MAC["r2"])  # eth_dst rewritten to r2's MAC
    assert net.send("cli", ARP)[:2] == ("host", "r2")  # only r2 is asked, so only r2 answers
    assert net.send("other", {**UDP, "eth_src": MAC["other"]})[:2] == ("host", "r2")
    other_ip = {**UDP, "ipv4_dst": "10.0.0.9", "eth_dst": MAC["other"]}
    assert net.send("cli", other_ip) == ("flood", S1) and net.asked == [S1]  # other traffic is untouched
    assert steering.listing() == [{"ip": VIP, "proto": None, "port": None, "host": "r2", "generation": 0,
                                   "since": 5.0}]


def test_make_before_break_delivers_at_every_step(net: FakeNetwork, steering: Steering) -> None:
    run(net, steering.steer({"ip": VIP, "host": "r1"}, now=0.0))
    plan = steering.steer({"ip": VIP, "host": "r2", "mode": "make-before-break"}, now=1.0)
    assert plan.result["from"] == "r1"
    # make (S3, then S2, then S1), break (delete r1's path), settle (new path at rest priority)
    assert [set(p) for p in plan.phases] == [{S3}, {S2}, {S1}, {S1, S2, S3}, {S1, S2, S3}]
    seen = every_step(net, plan, UDP)
    assert all(ends <= {("host", "r1"), ("host", "r2")} for ends in seen), seen  # never lost, never loops
    assert seen[-2:] == [{("host", "r2")}, {("host", "r2")}]
    assert net.send("cli", UDP) == ("host", "r2", MAC["r2"])
    assert net.send("cli", ARP)[:2] == ("host", "r2")
    steer_flows = [f for f in net.tables[S1].flows if f.priority > PRIO_STEER]
    assert len(steer_flows) == 2  # IP and ARP of the new path only: the old one and the high copy are gone


def test_make_before_break_with_a_loop_in_the_wan(steering: Steering) -> None:
    ring = {**MAP, "links": MAP["links"] + [{"a": S1, "a_port": 4, "b": S3, "b_port": 3}]}
    tmap = TopologyMap.from_json(ring)
    assert tmap.next_hops(S3) == {S1: 4, S2: 2}
    steering.set_topology(tmap)
    net = FakeNetwork(tmap)
    run(net, steering.steer({"ip": VIP, "host": "r1"}, now=0.0))
    for host in ("r2", "r1", "r2"):
        seen = every_step(net, steering.steer({"ip": VIP, "host": host}, now=1.0), UDP)
        assert all(ends <= {("host", "r1"), ("host", "r2")} for ends in seen), seen
        assert net.send("cli", UDP)[:2] == ("host", host)


def test_break_before_make_drops_in_between(net: FakeNetwork, steering: Steering) -> None:
    run(net, steering.steer({"ip": VIP, "host": "r1"}, now=0.0))
    plan = steering.steer({"ip": VIP, "host": "r2", "mode": "break-before-make"}, now=1.0)
    assert len(plan.phases) == 2
    seen = every_step(net, plan, UDP)
    assert ("drop", S1) in seen[0] and ("drop", S1) in seen[1]  # the guard: not back to learning (and r1)
    assert net.send("cli", UDP) == ("host", "r2", MAC["r2"])


def test_moves_back_and_forth(net: FakeNetwork, steering: Steering) -> None:
    run(net, steering.steer({"ip": VIP, "host": "r1"}, now=0.0))
    for i, host in enumerate(["r2", "r1", "r2", "r1"], start=1):
        run(net, steering.steer({"ip": VIP, "host": host}, now=float(i)))
        assert net.send("cli", UDP)[:2] == ("host", host)
        assert len([f for f in net.tables[S2].flows if f.priority > PRIO_STEER]) == 2


def test_the_same_host_again_changes_nothing(steering: Steering) -> None:
    steering.steer({"ip": VIP, "host": "r1"}, now=0.0)
    plan = steering.steer({"ip": VIP, "host": "r1"}, now=1.0)
    assert plan.phases == [] and plan.result["changed"] is False


def test_more_specific_steers_win(net: FakeNetwork, steering: Steering) -> None:
    run(net, steering.steer({"ip": VIP, "host": "r1"}, now=0.0))
    run(net, steering.steer({"ip": VIP, "proto": "udp", "port": 9000, "host": "r2"}, now=0.0))
    assert net.send("cli", UDP)[:2] == ("host", "r2")
    assert net.send("cli", {**UDP, "udp_dst": 9001})[:2] == ("host", "r1")
    tcp = {k: v for k, v in UDP.items() if k != "udp_dst"} | {"ip_proto": 6, "tcp_dst": 9000}
    assert net.send("cli", tcp)[:2] == ("host", "r1")
    # a break-before-make of the port steer drops only that port's traffic in between
    brk, make = steering.steer({"ip": VIP, "proto": "udp", "port": 9000, "host": "r1",
                                "mode": "break-before-make"}, now=1.0).phases
    net.apply_phase(brk)
    assert net.send("cli", UDP) == ("drop", S1)
    assert net.send("cli", {**UDP, "udp_dst": 9001})[:2] == ("host", "r1")
    net.apply_phase(make)
    assert net.send("cli", UDP)[:2] == ("host", "r1")


def test_unsteer_gives_the_traffic_back_to_learning(net: FakeNetwork, steering: Steering) -> None:
    run(net, steering.steer({"ip": VIP, "host": "r1"}, now=0.0))
    run(net, steering.steer({"ip": VIP, "host": "r2"}, now=1.0))
    run(net, steering.unsteer({"ip": VIP}))
    assert net.send("cli", UDP) == ("flood", S1) and net.asked == [S1]
    assert all(f.priority < PRIO_STEER for t in net.tables.values() for f in t.flows)
    assert steering.listing() == []
    with pytest.raises(ValueError, match="no steer"):
        steering.unsteer({"ip": VIP})


def test_a_reconnected_switch_gets_its_steer_flows_back(net: FakeNetwork, steering: Steering) -> None:
    run(net, steering.steer({"ip": VIP, "host": "r2"}, now=0.0))
    net.apply(S2, LearningSwitch().switch_features(S2))  # reconnect: every flow deleted, base flows back
    assert net.send("cli", UDP) == ("flood", S2) and net.asked == [S2]
    net.apply(S2, steering.switch_flows(S2))
    assert net.send("cli", UDP)[:2] == ("host", "r2")


@pytest.mark.parametrize("args, message", [
    ({"ip": "10.0.0.500", "host": "r1"}, "ip: expected an IPv4 address"),
    ({"ip": VIP, "host": "nobody"}, "host: no host 'nobody'"),
    ({"ip": VIP, "host": "cli"}, "host: cli has ip 10.0.0.1, not 10.0.0.50"),
    ({"ip": VIP, "host": "r1", "port": 80}, "port: needs proto"),
    ({"ip": VIP, "host": "r1", "proto": "sctp"}, "proto: expected one of tcp, udp"),
    ({"ip": VIP, "host": "r1", "proto": "udp", "port": 0}, "port: expected a port number"),
    ({"ip": VIP, "host": "r1", "mode": "fast"}, "mode: expected one of make-before-break, break-before-make"),
])
def test_bad_requests_name_the_field(steering: Steering, args, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        steering.steer(args, now=0.0)
    assert steering.listing() == []


def test_no_map_yet_is_an_error() -> None:
    with pytest.raises(ValueError, match="no topology map yet"):
        Steering().steer({"ip": VIP, "host": "r1"}, now=0.0)


def test_every_message_serialises(steering: Steering) -> None:
    plans = [steering.steer({"ip": VIP, "host": "r1"}, now=0.0), steering.steer({"ip": VIP, "host": "r2"}, now=1.0),
             steering.steer({"ip": VIP, "proto": "tcp", "port": 80, "host": "r1"}, now=1.0),
             steering.unsteer({"ip": VIP})]
    dp = SimpleNamespace(ofproto=ofp, ofproto_parser=parser)
    for plan in plans:
        for phase in plan.phases:
            for msgs in phase.values():
                for msg in msgs:
                    msg.datapath, msg.xid = dp, 1
                    msg.serialize()
                    assert len(msg.buf) >= 48
