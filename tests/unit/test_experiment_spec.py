"""Experiment files: the shipped ones load, broken ones are rejected with the path, shortening keeps faults."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.errors import SpecError
from testbed.experiment.spec import BulkFlow, ProbeFlow, load_experiment, parse_experiment, shortened
from testbed.experiment.values import Trigger
from testbed.topology.model import (CriticalService, HeartbeatSpec, HostSpec, NicSpec, Shape, SiteSpec,
                                    TopologySpec, WanLinkSpec)

ROOT = Path(__file__).resolve().parents[2]
BAD = Path(__file__).parent / "data" / "bad_experiments"


def _nic(ip: str, backup: str) -> NicSpec:
    services = (CriticalService("echo-udp", "udp", 7000, HeartbeatSpec("udp", payload=b"ping")),
                CriticalService("echo-tcp", "tcp", 7001, HeartbeatSpec("tcp")))
    return NicSpec(ip=ip, backups=(backup,), services=services)


TOPO = TopologySpec(
    name="fatriot",
    sites=(
        SiteSpec("lab", hosts=(
            HostSpec("gen", "lab", "10.0.0.1/24", image="testbed/probe"),
            HostSpec("mec1", "lab", "10.0.0.11/24", image="testbed/echo", nic=_nic("10.0.0.111/24", "mec2")),
            HostSpec("mec2", "lab", "10.0.0.12/24", image="testbed/echo", nic=_nic("10.0.0.112/24", "mec1")),
        )),
        SiteSpec("cloud", kind="cloud", hosts=(HostSpec("cli", "cloud", "10.0.0.21/24"),)),
    ),
    wan=(WanLinkSpec("lab", "cloud", Shape(delay_ms=5), Shape(delay_ms=5)),),
)


def fake_loader(ref: str) -> TopologySpec:
    return TOPO


GOOD = {
    "name": "t", "topology": "fatriot", "repetitions": 2,
    "services": [{"host": "mec1", "name": "echo", "critical": True}, {"host": "mec2", "name": "echo"}],
    "traffic": [{"name": "probe", "from": "gen", "to": "mec1", "rate": 10, "count": 100, "timeout": "500ms"},
                {"name": "bulk", "kind": "iperf3", "from": "gen", "to": "mec1", "server": "mec2", "duration": "10s"}],
    "faults": [{"kind": "delay", "mode": "app", "host": "mec1", "delay": "50ms", "at": "packet 40", "until": "packet 80"},
               {"kind": "network", "link": ["cloud", "lab"], "loss": 5, "delay": "20ms", "at": "2s", "for": "1s"},
               {"kind": "host_down", "mode": "site", "site": "cloud", "at": "3s"}],
    "variants": [{"name": "with-nic", "heartbeat_interval": "100ms", "threshold": 1.5},
                 {"name": "without-nic", "nic": False}],
}


def test_good_spec_is_typed():
    spec = parse_experiment(GOOD, "good.yaml", load_topology=fake_loader)
    probe, bulk = spec.traffic
    assert isinstance(probe, ProbeFlow) and probe.timeout_s == 0.5 and probe.port == 7000
    assert isinstance(bulk, BulkFlow) and bulk.server == "mec2" and bulk.duration_s == 10
    delay, net, site = spec.faults
    assert delay.at == Trigger(packet=40) and delay.until == Trigger(packet=80) and delay.delay_ms == 50
    assert net.link == ("cloud", "lab") and net.delay_ms == 20 and net.loss_pct == 5 and net.duration_s == 1
    assert site.site == "cloud" and not site.has_undo
    assert spec.variants[0].nic_overrides() == {"interval_s": 0.1, "threshold": 1.5}
    assert spec.variants[1].nic is False and spec.variants[1].nic_overrides() == {}
    assert spec.services[0].critical and spec.repetitions == 2


def test_shortened_keeps_fault_window():
    spec = shortened(parse_experiment(GOOD, "good.yaml", load_topology=fake_loader))
    assert spec.repetitions == 1
    assert spec.probes[0].count == 100  # until packet 80 + 30 tail is beyond 100
    assert spec.bulk[0].duration_s == 3.0
    crash = dict(GOOD, faults=[{"kind": "host_down", "mode": "kill", "host": "mec1", "at": "packet 20"}])
    assert shortened(parse_experiment(crash, "c.yaml", load_topology=fake_loader)).probes[0].count == 50


def _expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} lacks its '# expect:' line"
    return first[len("# expect: "):]


@pytest.mark.parametrize("path", sorted(BAD.glob("*.yaml")), ids=lambda p: p.stem)
def test_bad_experiment_rejected_with_path(path):
    with pytest.raises(SpecError) as err:
        load_experiment(path, load_topology=fake_loader)
    assert _expected(path) in str(err.value)
    assert err.value.source == str(path)
    assert err.value.exit_code == 2


def test_corpus_is_big_enough():
    assert len(list(BAD.glob("*.yaml"))) >= 20


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_experiments_load(path):
    try:
        from testbed.topology.loader import load_topology  # noqa: F401
    except ImportError:
        pytest.skip("testbed.topology.loader not there yet")
    spec = load_experiment(path)
    assert spec.variants and spec.traffic and spec.claims


def test_persistent_tcp_probe_and_carry_tcp_variant():
    data = dict(GOOD, traffic=[{"name": "loop", "from": "gen", "to": "mec1", "proto": "tcp", "persistent": True}],
                faults=[], variants=[{"name": "carry", "carry_tcp": True}, {"name": "reset", "carry_tcp": False}])
    spec = parse_experiment(data, "p.yaml", load_topology=fake_loader)
    assert spec.traffic[0].persistent and spec.traffic[0].port == 7001
    assert [v.nic_overrides() for v in spec.variants] == [{"carry_tcp": True}, {"carry_tcp": False}]
    from testbed.experiment.traffic import parse_probe_line, probe_argv

    assert probe_argv(spec.traffic[0], "10.0.0.11", True)[-1] == "--persistent"
    assert parse_probe_line("# reset 2").reset == 2 and parse_probe_line("# reset x") is None
    for bad, where in (({"proto": "udp", "persistent": True}, "traffic[0].persistent"),
                       ({"proto": "tcp", "persistent": "yes"}, "traffic[0].persistent")):
        flows = [{"name": "loop", "from": "gen", "to": "mec1", **bad}]
        with pytest.raises(SpecError, match=where.replace("[", r"\[").replace("]", r"\]")):
            parse_experiment(dict(GOOD, traffic=flows, faults=[]), "p.yaml", load_topology=fake_loader)
    with pytest.raises(SpecError, match=r"variants\[0\].carry_tcp"):
        parse_experiment(dict(GOOD, variants=[{"name": "x", "carry_tcp": 1}]), "p.yaml", load_topology=fake_loader)
