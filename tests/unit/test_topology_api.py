"""Unit tests for the MecTopo Python builder: same result and same errors as the YAML path."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.errors import SpecError
from testbed.topology.api import MecTopo
from testbed.topology.loader import parse_topology
from testbed.topology.model import HeartbeatSpec, Shape


def _two_sites() -> MecTopo:
    t = MecTopo("demo")
    t.addSite("edge1")
    t.addSite("cloud", kind="cloud")
    return t


def test_builder_matches_the_brief_example() -> None:
    t = MecTopo("fatriot", subnet="10.0.0.0/24")
    assert t.addSite("edge1") == "edge1"
    t.addSite("cloud", kind="cloud")
    t.addHost("gen", site="edge1", ip="10.0.0.1")
    t.addDocker("mec1", site="edge1", dimage="testbed/echo", ip="10.0.0.11", cpu=1.0,
                nic=t.nic(ip="10.0.0.111", backups=["mec2"]))
    t.addDocker("mec2", site="cloud", dimage="testbed/echo")
    assert t.addWan("edge1", "cloud", bw=100, delay="10ms", jitter="1ms", loss=0.1, max_queue_size=100) == "edge1-cloud"
    spec = t.build()
    assert spec.host("mec1").cpu == 1.0 and spec.host("mec1").nic.backups == ("mec2",)  # type: ignore[union-attr]
    assert spec.host("mec2").ip == "10.0.0.2/24"
    assert spec.wan_link("cloud", "edge1").forward == Shape(bw_mbit=100.0, delay_ms=10.0, jitter_ms=1.0, loss_pct=0.1, queue_pkts=100)


def test_builder_and_yaml_dict_give_equal_specs() -> None:
    t = _two_sites()
    t.addDocker("m", site="edge1", dimage="img", memory="256m", env={"A": "1"}, volumes=("/a:/b",), command="run -x",
                access={"bw": "1Gbit"}, nic=t.nic(services=[t.service("s", "tcp", 80, heartbeat=t.heartbeat(interval="1s"))]))
    t.addWan("edge1", "cloud", delay="5ms", forward={"delay": "7ms"})
    data = {"name": "demo", "sites": {
        "edge1": {"kind": "mec", "hosts": {"m": {
            "image": "img", "memory": "256m", "env": {"A": "1"}, "volumes": ["/a:/b"], "command": "run -x",
            "access": {"bw": "1Gbit"}, "nic": {"services": [{"name": "s", "proto": "tcp", "port": 80, "heartbeat": {"interval": "1s"}}]}}}},
        "cloud": {"kind": "cloud", "hosts": {}}},
        "wan": [{"between": ["edge1", "cloud"], "delay": "5ms", "forward": {"delay": "7ms"}}]}
    assert t.to_dict() == data
    spec = t.build()
    assert spec == parse_topology(data, "yaml")
    assert spec.host("m").nic.services[0].heartbeat == HeartbeatSpec(message="tcp", interval_s=1.0)  # type: ignore[union-attr]


def test_builder_errors_name_the_yaml_path() -> None:
    t = _two_sites()
    t.addDocker("mec1", site="edge1", dimage="img", cpu="two")  # type: ignore[arg-type]
    with pytest.raises(SpecError) as err:
        t.build()
    assert str(err.value) == "MecTopo('demo'): sites.edge1.hosts.mec1.cpu: expected a number of cores, got 'two'"


def test_builder_rejects_duplicates_and_unknown_sites_at_once() -> None:
    t = _two_sites()
    t.addHost("h1", site="edge1")
    with pytest.raises(SpecError, match=r"sites\.edge1\.hosts\.h1: duplicate key"):
        t.addHost("h1", site="edge1")
    with pytest.raises(SpecError, match=r"sites\.edge1: duplicate key"):
        t.addSite("edge1")
    with pytest.raises(SpecError, match=r"sites\.edge9: no such site.*addSite\('edge9'\)"):
        t.addDocker("m", site="edge9", dimage="img")


def test_builder_cross_checks_run_too() -> None:
    t = _two_sites()
    t.addHost("h1", site="edge1")
    t.addHost("h1", site="cloud")
    with pytest.raises(SpecError, match=r"sites\.cloud\.hosts\.h1: host name 'h1' is already used in site edge1"):
        t.build()
    t = _two_sites()
    t.addWan("edge1", "cloud")
    t.addWan("cloud", "edge1")
    with pytest.raises(SpecError, match=r"wan\[1\]\.between: duplicate WAN link"):
        t.build()


def test_python_topology_file_is_imported_without_running_main(tmp_path: Path) -> None:
    from testbed.topology.loader import load_topology

    marker = tmp_path / "main-ran"
    f = tmp_path / "mine.py"
    f.write_text(
        "from testbed.topology.api import MecTopo\n"
        "def topology():\n"
        "    t = MecTopo('mine'); t.addSite('s'); t.addHost('h', site='s'); return t.build()\n"
        "if __name__ == '__main__':\n"
        f"    open({str(marker)!r}, 'w').write('x')\n")
    assert load_topology(f).host("h").ip == "10.0.0.1/24"
    assert not marker.exists()


@pytest.mark.parametrize("body, message", [
    ("x = 1\n", "must define a function topology()"),
    ("def topology():\n    return 42\n", "returned int, expected a TopologySpec"),
    ("def topology():\n    raise RuntimeError('boom')\n", "topology() failed: RuntimeError: boom"),
    ("import no_such_module_xyz\n", "ModuleNotFoundError"),
])
def test_broken_python_topology_files(tmp_path: Path, body: str, message: str) -> None:
    from testbed.topology.loader import load_topology

    f = tmp_path / "broken.py"
    f.write_text(body)
    with pytest.raises(SpecError) as err:
        load_topology(f)
    assert message in str(err.value)
    assert err.value.source == str(f)


def test_python_file_spec_error_keeps_its_path(tmp_path: Path) -> None:
    from testbed.topology.loader import load_topology

    f = tmp_path / "bad.py"
    f.write_text("from testbed.topology.api import MecTopo\n"
                 "def topology():\n"
                 "    t = MecTopo('b'); t.addSite('s'); t.addHost('h', site='s', ip='10.9.9.9'); return t.build()\n")
    with pytest.raises(SpecError) as err:
        load_topology(f)
    assert err.value.path == "sites.s.hosts.h.ip"
    assert "outside the subnet" in err.value.message
    assert err.value.source == str(f)


def test_builder_nic_takes_every_nic_key_of_the_yaml() -> None:
    t = _two_sites()
    t.addDocker("m", site="edge1", dimage="img", nic=t.nic(datapath="auto", carry_tcp=False, passive=False))
    nic = t.build().host("m").nic
    assert nic is not None and (nic.datapath, nic.carry_tcp, nic.passive) == ("auto", False, False)
    t.addDocker("n", site="edge1", dimage="img", nic=t.nic(datapath="xdp"))
    with pytest.raises(SpecError) as err:
        t.build()
    assert "sites.edge1.hosts.n.nic.datapath" in str(err.value)
