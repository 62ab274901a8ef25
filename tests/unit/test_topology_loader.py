"""Unit tests for topology loading: shipped topologies, YAML/Python equality, the broken-file corpus, defaults."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
import yaml

from testbed.errors import SpecError
from testbed.topology.loader import SHIPPED_DIR, load_topology, parse_topology, shipped_topologies, validate_file
from testbed.topology.model import HeartbeatSpec, Shape

BAD_DIR = Path(__file__).parent / "data" / "bad_topologies"
BAD_FILES = sorted(BAD_DIR.glob("*.yaml"))


def _expected(path: Path) -> tuple[str, str]:
    """The `# path:` and `# message:` header lines of a corpus file."""
    header = dict(line[2:].split(": ", 1) if ": " in line else (line[2:].rstrip(":"), "")
                  for line in path.read_text().splitlines()[:2])
    return header["path"].strip(), header["message"].strip()


def test_shipped_topologies_are_listed() -> None:
    assert {"fatriot", "mec-sites"} <= set(shipped_topologies())


@pytest.mark.parametrize("name", ["fatriot", "mec-sites"])
def test_shipped_yaml_and_python_are_equal(name: str) -> None:
    from_yaml = load_topology(name)
    from_python = load_topology(SHIPPED_DIR / f"{name}.py")
    assert from_yaml == from_python
    assert from_yaml.name == name
    assert validate_file(SHIPPED_DIR / f"{name}.yaml") == from_yaml


def test_every_shipped_file_loads() -> None:
    files = sorted(SHIPPED_DIR.glob("*.yaml")) + sorted(SHIPPED_DIR.glob("*.py"))
    assert len(files) >= 4
    for f in files:
        assert load_topology(f).hosts()


def test_fatriot_matches_the_paper_setup() -> None:
    t = load_topology("fatriot")
    assert [h.name for h in t.hosts()] == ["gen", "mec1", "mec2"]
    assert t.host("gen").image == "testbed/probe" and t.host("gen").ip == "10.0.0.1/24"
    mec1, mec2 = t.host("mec1"), t.host("mec2")
    assert mec1.nic is not None and mec2.nic is not None
    assert (mec1.nic.ip, mec1.nic.backups) == ("10.0.0.111/24", ("mec2",))
    assert (mec2.nic.ip, mec2.nic.backups) == ("10.0.0.112/24", ("mec1",))
    assert [(s.name, s.proto, s.port) for s in mec1.nic.services] == [("echo-udp", "udp", 7000), ("echo-tcp", "tcp", 7001)]
    assert mec1.nic.services == mec2.nic.services
    assert mec1.nic.services[0].heartbeat == HeartbeatSpec(message="udp", payload=b"ping")
    assert mec1.nic.services[1].heartbeat == HeartbeatSpec(message="tcp")


def test_mec_sites_is_a_star_with_different_shapes() -> None:
    t = load_topology("mec-sites")
    assert [s.name for s in t.sites] == ["edge1", "edge2", "edge3", "cloud"]
    assert t.site("cloud").kind == "cloud"
    shapes = [t.wan_link(e, "cloud").forward for e in ("edge1", "edge2", "edge3")]
    assert len(set(shapes)) == 3
    assert shapes[2] == Shape(bw_mbit=20.0, delay_ms=35.0, loss_pct=0.1, queue_pkts=100)
    assert all(link.forward == link.reverse for link in t.wan)
    for site in t.sites[:3]:
        assert sorted(h.is_docker for h in site.hosts) == [False, True]


def test_corpus_is_big_enough() -> None:
    assert len(BAD_FILES) >= 20


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda p: p.stem)
def test_bad_topology_raises_spec_error_at_its_path(path: Path) -> None:
    want_path, want_message = _expected(path)
    with pytest.raises(SpecError) as err:
        load_topology(path)
    assert err.value.path == want_path, str(err.value)
    assert want_message in err.value.message, str(err.value)
    assert err.value.source == str(path)
    assert str(err.value).startswith(f"{path}: ")


def test_missing_file_and_unknown_name() -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_topology("/nonexistent/topo.yaml")
    with pytest.raises(SpecError, match="no shipped topology 'nope'.*fatriot"):
        load_topology("nope")


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "empty.yaml"
    f.write_text("# nothing\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_topology(f)


MINIMAL = {"name": "t", "sites": {"e": {"hosts": {
    "a": {}, "mec1": {"image": "x", "nic": True}, "b": {"ip": "10.0.0.1"}, "mec2": {"image": "x", "nic": {"ip": "10.0.0.3"}},
}}}}


def test_addresses_are_allocated_in_declaration_order_skipping_taken_ones() -> None:
    t = parse_topology(MINIMAL, "test")
    assert t.host("b").ip == "10.0.0.1/24"
    assert t.host("a").ip == "10.0.0.2/24"
    assert t.host("mec1").ip == "10.0.0.4/24"
    assert t.host("mec1").nic.ip == "10.0.0.5/24"  # type: ignore[union-attr]
    assert t.host("mec2").ip == "10.0.0.6/24"
    assert t.host("mec2").nic.ip == "10.0.0.3/24"  # type: ignore[union-attr]
    assert all(h.mac is None for h in t.hosts())


def test_other_subnet_and_explicit_prefix() -> None:
    t = parse_topology({"name": "t", "subnet": "192.168.7.0/28", "sites": {"e": {"hosts": {"a": {"ip": "192.168.7.9/28"}, "b": {}}}}}, "s")
    assert (t.subnet, t.host("a").ip, t.host("b").ip) == ("192.168.7.0/28", "192.168.7.9/28", "192.168.7.1/28")


def test_nic_defaults_and_overrides() -> None:
    data = copy.deepcopy(MINIMAL)
    data["sites"]["e"]["hosts"]["mec1"]["nic"] = {
        "interval": "50ms", "threshold": 2, "hysteresis": 5, "learn": 20, "min_rtt": "250us",
        "platform": {"interval": "1s", "threshold": 3.0},
        "services": [{"name": "s", "proto": "udp", "port": 9, "heartbeat": {"payload": "hb", "expect": "ok"}, "backups": ["mec2:9"]}],
    }
    nic = parse_topology(data, "t").host("mec1").nic
    assert nic is not None
    assert (nic.interval_s, nic.threshold, nic.hysteresis, nic.learn, nic.min_rtt_ms) == (0.05, 2.0, 5, 20, 0.25)
    assert nic.platform == HeartbeatSpec(message="icmp", interval_s=1.0, threshold=3.0)
    assert nic.services[0].heartbeat == HeartbeatSpec(message="udp", payload=b"hb", expect=b"ok")
    assert nic.services[0].backups == ("mec2:9",)
    assert parse_topology(MINIMAL, "t").host("mec1").nic.backups == ()  # type: ignore[union-attr]


def test_wan_overrides_per_direction() -> None:
    data = {"name": "t", "sites": {"a": {}, "b": {}}, "wan": [
        {"between": ["a", "b"], "bw": "1Gbit", "delay": "10ms", "forward": {"delay": "20ms"}, "reverse": {"bw": 50}}]}
    link = parse_topology(data, "t").wan_link("b", "a")
    assert link.forward == Shape(bw_mbit=1000.0, delay_ms=20.0)
    assert link.reverse == Shape(bw_mbit=50.0, delay_ms=10.0)


def test_docker_options_are_kept() -> None:
    data = {"name": "t", "sites": {"e": {"hosts": {"m": {
        "image": "img", "cpu": 1.5, "memory": "256m", "env": {"A": "x", "PORT": 7000},
        "volumes": ["/src:/dst:ro"], "command": "python3 -u '/app/my echo.py'", "access": {"bw": 1000, "delay": "1ms"}}}}}}
    h = parse_topology(data, "t").host("m")
    assert (h.cpu, h.memory, h.env, h.volumes) == (1.5, "256m", (("A", "x"), ("PORT", "7000")), ("/src:/dst:ro",))
    assert h.command == ("python3", "-u", "/app/my echo.py")
    assert h.access == Shape(bw_mbit=1000.0, delay_ms=1.0)


def test_error_names_source_and_path() -> None:
    with pytest.raises(SpecError) as err:
        parse_topology({"name": "t", "sites": {"edge1": {"hosts": {"mec1": {"image": "x", "cpu": "two"}}}}}, "my.yaml")
    assert str(err.value) == "my.yaml: sites.edge1.hosts.mec1.cpu: expected a number of cores, got 'two'"
    assert err.value.exit_code == 2


def _mutations(value: object, rng: random.Random) -> object:
    """`value` with one random node replaced by a value of a wrong or odd type."""
    odd = [None, True, -1, 0, 1.5, "x", "", [], {}, ["a"], {"k": 1}, "10.0.0.300", "99999ms"]
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        return {**value, key: _mutations(value[key], rng)}
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        return value[:i] + [_mutations(value[i], rng)] + value[i + 1:]
    return rng.choice(odd)


@pytest.mark.parametrize("name", ["fatriot", "mec-sites"])
def test_random_corruptions_only_ever_raise_spec_error(name: str) -> None:
    seed = 20240611
    rng = random.Random(seed)
    data = yaml.safe_load((SHIPPED_DIR / f"{name}.yaml").read_text())
    errors = 0
    for _ in range(400):
        try:
            parse_topology(_mutations(data, rng), "fuzz")
        except SpecError:
            errors += 1
    assert errors > 200, f"seed {seed}: only {errors} corruptions were rejected"


def test_disconnected_sites_are_allowed_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    data = {"name": "t", "sites": {"a": {}, "b": {}, "c": {}}, "wan": [{"between": ["a", "b"]}]}
    with caplog.at_level("WARNING", logger="testbed.topology.checks"):
        assert len(parse_topology(data, "t").sites) == 3
    assert "a, b | c" in caplog.text


def test_the_format_documented_in_the_loader_docstring_loads() -> None:
    import textwrap

    from testbed.topology import loader

    block = loader.__doc__.split(".. code-block:: yaml\n\n")[1].split("\n\nA service")[0]  # type: ignore[union-attr]
    t = parse_topology(yaml.safe_load(textwrap.dedent(block)), "docstring")
    mec1 = t.host("mec1")
    assert (mec1.cpu, mec1.memory, mec1.command) == (1.0, "256m", ("python3", "/app/echo.py"))
    assert mec1.nic is not None and mec1.nic.mac == "00:00:00:00:01:11"
    assert mec1.nic.services[0].heartbeat == HeartbeatSpec(message="udp", interval_s=0.1, threshold=1.5,
                                                           payload=b"hb", expect=b"hb")
    assert t.wan_link("edge1", "cloud").forward.delay_ms == 20.0
    assert t.wan_link("edge1", "cloud").reverse == Shape(bw_mbit=50.0, delay_ms=10.0, jitter_ms=1.0,
                                                         loss_pct=0.1, queue_pkts=100)


def test_nic_datapath_passive_and_a_tcp_heartbeat_with_payload() -> None:
    data = copy.deepcopy(MINIMAL)
    data["sites"]["e"]["hosts"]["mec1"]["nic"] = {
        "datapath": "bpf", "passive": False,
        "services": [{"name": "web", "proto": "tcp", "port": 80,
                      "heartbeat": {"payload": "GET / HTTP/1.0\r\n\r\n", "expect": "200"}}]}
    nic = parse_topology(data, "test").host("mec1").nic
    assert nic is not None and nic.datapath == "bpf" and nic.passive is False
    assert nic.services[0].heartbeat.payload.startswith(b"GET") and nic.services[0].heartbeat.expect == b"200"
    assert parse_topology(MINIMAL, "test").host("mec1").nic.datapath == "python"  # type: ignore[union-attr]
    assert nic.carry_tcp is True  # the default
    data["sites"]["e"]["hosts"]["mec1"]["nic"]["carry_tcp"] = False
    assert parse_topology(data, "test").host("mec1").nic.carry_tcp is False  # type: ignore[union-attr]
    for key, value in (("datapath", "ebpf"), ("passive", "no"), ("carry_tcp", "yes")):
        bad = copy.deepcopy(MINIMAL)
        bad["sites"]["e"]["hosts"]["mec1"]["nic"] = {key: value}
        with pytest.raises(SpecError) as err:
            parse_topology(bad, "test")
        assert err.value.path == f"sites.e.hosts.mec1.nic.{key}"
