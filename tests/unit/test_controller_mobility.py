"""The `moved` request: a host re-attached elsewhere is forgotten on every switch and its steers follow it."""

from __future__ import annotations

import pytest

from controllers.learning import LearningSwitch
from controllers.mobility import moved
from controllers.steering import Steering, TopologyMap
from tests.unit.fakeoftable import FakeNetwork
from tests.unit.test_controller_steering import MAC, MAP, S1, S2, S3, UDP, VIP

UE = "00:00:00:00:00:77"


def network(tmap: TopologyMap) -> tuple[FakeNetwork, LearningSwitch]:
    net = FakeNetwork(tmap)
    learning = LearningSwitch()
    for dpid in tmap.switches.values():
        net.apply(dpid, learning.switch_features(dpid))
    return net, learning


def learn_path(net: FakeNetwork, learning: LearningSwitch) -> None:
    """A frame from ue1 (s3 port 5) floods to cli, cli answers: every switch learns both and installs their flows."""
    for dpid, in_port in ((S3, 5), (S2, 2), (S1, 3)):  # ue1's frame, flooded along the line
        net.apply(dpid, learning.packet_in(dpid, in_port, UE, now=1.0))
    for dpid, in_port in ((S1, 1), (S2, 1), (S3, 2)):  # cli's answer, forwarded by the learnt MAC
        net.apply(dpid, learning.packet_in(dpid, in_port, MAC["cli"], now=1.0))


@pytest.fixture
def tmap() -> TopologyMap:
    data = {**MAP, "hosts": {**MAP["hosts"], "ue1": {"dpid": S3, "port": 5, "mac": UE, "ip": "10.0.0.7"}}}
    return TopologyMap.from_json(data)


def test_a_moved_host_is_forgotten_everywhere_and_relearnt_at_its_new_port(tmap: TopologyMap) -> None:
    net, learning = network(tmap)
    steering = Steering()
    steering.set_topology(tmap)
    learn_path(net, learning)
    to_ue = {"eth_type": 0x0800, "eth_src": MAC["cli"], "eth_dst": UE, "ipv4_dst": "10.0.0.7"}
    assert net.send("cli", to_ue) == ("host", "ue1", UE) and net.asked == []  # learnt: cli -> s1 -> s2 -> s3 port 5
    assert all(UE in learning.state(d).macs for d in (S1, S2, S3))
    plan = moved(learning, steering, {"host": "ue1", "dpid": S1, "port": 9})
    assert len(plan.phases) == 1 and set(plan.phases[0]) == {S1, S2, S3}
    assert plan.result["from"] == {"dpid": S3, "port": 5} and plan.result["to"] == {"dpid": S1, "port": 9}
    assert plan.result["forgot"] == 3
    net.apply_phase(plan.phases[0])
    assert all(UE not in learning.state(d).macs for d in (S1, S2, S3))
    assert net.send("cli", to_ue) == ("flood", S1)  # no stale flow towards s3: flooded until ue1 is heard
    assert not [f for t in net.tables.values() for f in t.flows if UE in f.match.values()]  # from and to it
    assert net.send("cli", {**UDP, "eth_dst": MAC["r1"]})[0] in ("host", "flood")  # others untouched
    assert steering.map.hosts["ue1"].dpid == S1 and steering.map.hosts["ue1"].port == 9


def test_a_steer_to_the_moved_host_follows_it(tmap: TopologyMap) -> None:
    net, learning = network(tmap)
    steering = Steering()
    steering.set_topology(tmap)
    for phase in steering.steer({"ip": VIP, "host": "r2"}, now=0.0).phases:
        net.apply_phase(phase)
    assert net.send("cli", UDP) == ("host", "r2", MAC["r2"])
    plan = moved(learning, steering, {"host": "r2", "dpid": S2, "port": 7})
    assert plan.result["steers"] == [VIP]
    net.apply_phase(plan.phases[0])
    net.host_at = {(h.dpid, h.port): n for n, h in steering.map.hosts.items()}
    assert net.send("cli", UDP) == ("host", "r2", MAC["r2"])  # now delivered at s2 port 7


@pytest.mark.parametrize("args, message", [
    ({"host": "nobody", "dpid": S1, "port": 1}, "host: no host 'nobody'"),
    ({"host": "ue1", "dpid": 0x999, "port": 1}, "dpid: no switch"),
    ({"host": "ue1", "dpid": S1, "port": "1"}, "port: expected a non-negative integer"),
])
def test_bad_moved_requests_name_the_field(tmap: TopologyMap, args: dict, message: str) -> None:
    steering = Steering()
    steering.set_topology(tmap)
    with pytest.raises(ValueError, match=message):
        moved(LearningSwitch(), steering, args)


def test_no_map_yet_is_an_error() -> None:
    with pytest.raises(ValueError, match="no topology map"):
        moved(LearningSwitch(), Steering(), {"host": "ue1", "dpid": 1, "port": 1})
