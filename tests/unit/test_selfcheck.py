"""The self-check's plan: every pair of sites with hosts, the WAN path between them and its configured RTT."""

import pytest

from testbed.emulation.selfcheck import parse_ping, path_delay_ms, ping_args, plan, site_path
from testbed.topology.api import MecTopo


def line():
    t = MecTopo("line", subnet="10.5.0.0/24")
    for i in range(1, 5):
        t.addSite(f"s{i}")
    for i in (1, 2, 4):  # s3 has no host: a transit site
        t.addHost(f"h{i}", site=f"s{i}", ip=f"10.5.0.{i}")
    t.addHost("h1b", site="s1", ip="10.5.0.11", access={"delay": "1ms"})
    t.addWan("s1", "s2", delay="2ms")
    t.addWan("s2", "s3", delay="5ms", reverse={"delay": "7ms"})
    t.addWan("s4", "s3", delay="10ms")  # written the other way round
    return t.build()


def test_site_path_follows_the_tree_in_order():
    topo = line()
    assert [w.name for w in site_path(topo, "s1", "s4")] == ["s1-s2", "s2-s3", "s4-s3"]
    assert [w.name for w in site_path(topo, "s4", "s2")] == ["s4-s3", "s2-s3"]
    assert site_path(topo, "s2", "s2") == []


def test_path_delay_counts_each_direction_of_each_link():
    topo = line()
    assert path_delay_ms(topo, "s1", "s2") == pytest.approx(4)
    assert path_delay_ms(topo, "s1", "s4") == pytest.approx(2 + 2 + 5 + 7 + 10 + 10)
    assert path_delay_ms(topo, "s4", "s1") == pytest.approx(path_delay_ms(topo, "s1", "s4"))


def test_plan_has_every_pair_of_sites_with_hosts_once():
    rows = plan(line())
    assert [(r["src"], r["dst"], r["wan_links"]) for r in rows] == [("h1", "h2", 1), ("h1", "h4", 3), ("h2", "h4", 2)]
    assert rows[1]["configured_rtt_ms"] == pytest.approx(36)
    assert rows[1]["link"] == "s1-s2, s2-s3, s4-s3" and rows[1]["dst_ip"] == "10.5.0.4"


def test_access_delays_count_on_both_ends():
    t = MecTopo("two", subnet="10.6.0.0/24")
    t.addSite("a")
    t.addSite("b")
    t.addHost("x", site="a", ip="10.6.0.1", access={"delay": "1ms"})
    t.addHost("y", site="b", ip="10.6.0.2")
    t.addWan("a", "b", delay="3ms")
    assert plan(t.build())[0]["configured_rtt_ms"] == pytest.approx(8)


def test_ping_runs_in_the_source_namespace_and_parses():
    assert ping_args(42, "10.0.0.2", 3)[:4] == ["nsenter", "--target=42", "--net", "ping"]
    assert parse_ping("rtt min/avg/max/mdev = 1.0/2.5/4.0/0.5 ms") == {"min": 1.0, "avg": 2.5, "max": 4.0, "mdev": 0.5}
    assert parse_ping("3 packets transmitted, 0 received") is None
