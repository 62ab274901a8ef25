"""testbed.compat without root: TCLink/TCIntf options read into Shapes or refused, Docker options mapped or refused."""

from __future__ import annotations

import functools

import pytest
from mininet.link import TCIntf as MininetTCIntf
from mininet.link import TCLink as MininetTCLink
from mininet.node import Controller as MininetController
from mininet.node import OVSSwitch as MininetOVSSwitch, UserSwitch
from mininet.util import custom as mininet_custom

from testbed.compat import link as compat_link
from testbed.compat.docker import cpu_of, docker_options
from testbed.compat.net import controller_factory, switch_factory
from testbed.compat.nodes import OVSSwitch
from testbed.compat.params import direction, shape_of, split, unwrap
from testbed.errors import SpecError
from testbed.topology.model import Shape


def test_tclink_vocabulary_becomes_one_shape_per_direction():
    fwd, opts = direction({"bw": 10, "delay": "5ms", "loss": 10, "use_htb": True}, {}, {"ip": "10.0.0.1/8"}, "l")
    assert fwd == Shape(bw_mbit=10, delay_ms=5, loss_pct=10)
    assert opts == {"ip": "10.0.0.1/8"}
    assert shape_of({"delay": "100us", "jitter": "1ms", "max_queue_size": 50}, "l") == Shape(
        delay_ms=0.1, jitter_ms=1, queue_pkts=50)


def test_precedence_is_mininets_custom_over_link_over_params1():
    fwd, _ = direction({"delay": "2ms"}, {"bw": 5}, {"delay": "9ms", "bw": 1}, "l")
    assert fwd == Shape(bw_mbit=5, delay_ms=2)


@pytest.mark.parametrize("params, key", [
    ({"use_hfsc": True}, "use_hfsc"), ({"use_tbf": True}, "use_tbf"), ({"enable_ecn": True}, "enable_ecn"),
    ({"dealy": "5ms"}, "dealy"), ({"delay": 5}, "delay"), ({"loss": 150}, "loss"), ({"txo": True}, "txo"),
    ({"jitter": "1ms"}, "jitter")])
def test_what_cannot_be_honoured_is_refused_by_name(params, key):
    with pytest.raises(SpecError) as err:
        direction(params, {}, {}, "link h1-s1")
    assert f"link h1-s1.{key}" in str(err.value)


def test_split_keeps_interface_options():
    assert split({"ip": "1.2.3.4/8", "mac": "00:00:00:00:00:01", "port": 3}, "x") == (
        {}, {"ip": "1.2.3.4/8", "mac": "00:00:00:00:00:01", "port": 3})


def test_unwrap_reads_partials_and_mininet_custom():
    assert unwrap(functools.partial(MininetTCIntf, bw=10)) == (MininetTCIntf, {"bw": 10})
    assert unwrap(mininet_custom(MininetTCIntf, bw=10, delay="1ms")) == (MininetTCIntf, {"bw": 10, "delay": "1ms"})
    assert compat_link.intf_preset(mininet_custom(MininetTCIntf, bw=7), "x") == {"bw": 7}


def test_mininet_link_classes_map_to_the_testbeds():
    assert compat_link.link_class(MininetTCLink, "x")[0] is compat_link.TCLink
    with pytest.raises(SpecError, match="OVSLink"):
        from mininet.link import OVSLink

        compat_link.link_class(OVSLink, "x")


def test_switch_and_controller_mapping():
    assert switch_factory(MininetOVSSwitch, "s") is OVSSwitch
    with pytest.raises(SpecError, match="UserSwitch"):
        switch_factory(UserSwitch, "Mininet.switch")
    if not any(__import__("shutil").which(n) for n in ("controller",)):
        with pytest.raises(SpecError, match="needs the program controller"):
            controller_factory(MininetController, "Mininet.controller")


def test_docker_kwargs_map_to_cpu_and_memory():
    opts = docker_options("d2", {"cpu_period": 50000, "cpu_quota": 25000, "mem_limit": "128m",
                                 "ip": "10.0.0.252", "ports": [9999, "7000/udp"], "dcmd": "/bin/bash"})
    assert (opts.cpu, opts.memory, opts.cpu_period) == (0.5, "128m", 50000)
    assert opts.ports == ("9999/tcp", "7000/udp") and opts.dcmd is None
    assert opts.host == {"ip": "10.0.0.252"}
    assert docker_options("d", {"cpus": 1.5}).cpu == 1.5
    assert docker_options("d", {"dcmd": "httpd -f"}).dcmd == ("/bin/sh", "-c", "httpd -f")
    assert cpu_of(-1, -1, None, "x") == (None, 100000)


@pytest.mark.parametrize("key, value", [("cpu_shares", 20), ("cpuset_cpus", "0"), ("port_bindings", {9999: 9999}),
                                        ("publish_all_ports", True), ("network_mode", "bridge"),
                                        ("privileged", True), ("frobnicate", 1), ("cap_add", ["sys_admin"])])
def test_docker_kwargs_that_cannot_work_are_refused_by_name(key, value):
    with pytest.raises(SpecError) as err:
        docker_options("d3", {key: value})
    assert f"addDocker d3.{key}" in str(err.value)


def test_tree_container_topo_has_docker_leaves():
    from testbed.compat import ContainerTreeTopo, Docker

    topo = ContainerTreeTopo(depth=2, fanout=2, dimage="testbed/echo")
    assert sorted(topo.switches()) == ["s1", "s2", "s3"] and len(topo.hosts()) == 4
    assert all(topo.nodeInfo(h)["cls"] is Docker and topo.nodeInfo(h)["dimage"] == "testbed/echo"
               for h in topo.hosts())


def test_examples_differ_from_the_originals_only_in_the_import():
    import re
    from pathlib import Path

    examples = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.py"))
    assert {p.name for p in examples} >= {"containernet_example.py", "dockerhosts.py", "simpleperf.py", "limit.py",
                                          "containernet_example_cmd_field.py", "controllers2.py"}
    for path in examples:
        text = path.read_text()
        assert not re.search(r"^\s*(from|import) mininet", text, re.M), path.name
        assert len(re.findall(r"^from testbed\.compat import", text, re.M)) == 1, path.name
