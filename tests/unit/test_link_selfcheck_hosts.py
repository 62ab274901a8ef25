"""The self-check reaches every host: site pairs' paths plus each other host from its site's first host."""

import pytest

from testbed.emulation.selfcheck import host_rows, plan
from testbed.topology.api import MecTopo


def sites():
    t = MecTopo("sites", subnet="10.7.0.0/24")
    t.addSite("a")
    t.addSite("b")
    t.addSite("c")  # no hosts: nothing to ping there
    t.addHost("a1", site="a", ip="10.7.0.1")
    t.addHost("a2", site="a", ip="10.7.0.2", access={"delay": "2ms"})
    t.addHost("a3", site="a", ip="10.7.0.3")
    t.addHost("b1", site="b", ip="10.7.0.11", access={"delay": "1ms"})
    t.addWan("a", "b", delay="3ms")
    t.addWan("b", "c", delay="3ms")
    return t.build()


def test_every_host_is_reached_and_every_site_pair_measured():
    topo = sites()
    rows = plan(topo) + host_rows(topo)
    assert {h.name for h in topo.hosts()} == {r["src"] for r in rows} | {r["dst"] for r in rows}
    assert [(r["src"], r["dst"], r["wan_links"]) for r in rows] == [("a1", "b1", 1), ("a1", "a2", 0), ("a1", "a3", 0)]


def test_same_site_rows_count_both_access_links():
    rows = host_rows(sites())
    assert rows[0]["configured_rtt_ms"] == pytest.approx(4) and rows[0]["dst_ip"] == "10.7.0.2"
    assert rows[1]["configured_rtt_ms"] == pytest.approx(0) and rows[1]["link"] == "a" and rows[1]["path"] == ["a", "a"]


def test_a_single_site_topology_still_checks_its_hosts():
    t = MecTopo("one", subnet="10.8.0.0/24")
    t.addSite("s")
    for i in range(1, 4):
        t.addHost(f"h{i}", site="s", ip=f"10.8.0.{i}")
    topo = t.build()
    assert plan(topo) == [] and [r["dst"] for r in host_rows(topo)] == ["h2", "h3"]
