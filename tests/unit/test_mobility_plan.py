"""Moving users without root: the Open vSwitch commands a move runs, and who may move where."""

from __future__ import annotations

import pytest

from testbed.emulation.mobility import MoveRecord, attach_argv, detach_argv, ofport_argv, why_not_movable
from testbed.errors import SpecError
from testbed.topology.api import MecTopo


def topo():
    t = MecTopo("m")
    t.addSite("edge1")
    t.addSite("edge2")
    t.addHost("ue1", site="edge1", device=True)
    t.addHost("cli", site="edge1")
    t.addWan("edge1", "edge2")
    return t.build()


def test_commands_are_argument_lists() -> None:
    assert detach_argv("tb1s1", "tb1s1-eth2") == ["ovs-vsctl", "--timeout=10", "del-port", "tb1s1", "tb1s1-eth2"]
    assert attach_argv("tb1s2", "tb1s1-eth2", 4) == [
        "ovs-vsctl", "--timeout=10", "add-port", "tb1s2", "tb1s1-eth2", "--", "set", "Interface", "tb1s1-eth2",
        "ofport_request=4"]
    assert ofport_argv("x") == ["ovs-vsctl", "--timeout=10", "get", "Interface", "x", "ofport"]


@pytest.mark.parametrize("host, site, current, expected", [
    ("ue1", "edge2", "edge1", None),
    ("ue1", "edge1", "edge1", "attached to edge1 already"),
    ("ue1", "edge9", "edge1", "no site 'edge9'"),
    ("cli", "edge2", "edge1", "not an end device"),
    ("nobody", "edge2", "edge1", "no host 'nobody'"),
])
def test_who_may_move_where(host: str, site: str, current: str, expected: str | None) -> None:
    why = why_not_movable(topo(), host, site, current)
    assert why is None if expected is None else expected in why


def test_a_device_has_no_nic_and_no_anycast_address() -> None:
    t = MecTopo("m")
    t.addSite("edge1")
    t.addDocker("ue1", site="edge1", dimage="testbed/echo", device=True, nic=True)
    with pytest.raises(SpecError, match="device"):
        t.build()


def test_a_move_record_gives_its_steps_in_ms() -> None:
    rec = MoveRecord("ue1", "edge1", "edge2", 0.05, 3, started=10.0, detached=10.01, attached=10.07, acked=10.075)
    d = rec.to_dict()
    assert (d["detach_ms"], d["unattached_ms"], d["controller_ms"]) == (10.0, 60.0, 5.0)
    assert "edge1 -> edge2 port 3" in rec.detail()
