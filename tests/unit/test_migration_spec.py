"""`migrations:` entries: parsed into the fault schedule, every mistake one error at its path, live refused here."""

from __future__ import annotations

import copy

import pytest

from testbed import checkpoint
from testbed.errors import SpecError
from testbed.experiment.spec import parse_experiment, shortened
from testbed.migration.spec import MigrationSpec
from testbed.migration.transfer import agent_argv, lines_of, migration_ip
from testbed.topology.api import MecTopo


def topo():
    t = MecTopo("mig")
    t.addSite("edge1")
    t.addSite("edge2")
    t.addSite("edge3")
    t.addHost("cli", site="edge1", ip="10.0.0.1")
    t.addDocker("m1", site="edge1", dimage="testbed/counter", ip="10.0.0.50", anycast=True)
    t.addDocker("m2", site="edge2", dimage="testbed/counter", ip="10.0.0.50", anycast=True)
    t.addDocker("m3", site="edge3", dimage="testbed/counter", ip="10.0.0.50", anycast=True)
    t.addDocker("e1", site="edge1", dimage="testbed/echo", ip="10.0.0.60", anycast=True)
    t.addDocker("e2", site="edge2", dimage="testbed/echo", ip="10.0.0.60", anycast=True)
    t.addDocker("solo", site="edge2", dimage="testbed/counter", ip="10.0.0.70")
    t.addWan("edge1", "edge2")
    t.addWan("edge2", "edge3")
    return t.build()


GOOD = {
    "name": "mig", "topology": "mig",
    "services": [{"host": "m1", "name": "counter"}],
    "traffic": [{"name": "probe", "from": "cli", "to": "m1", "port": 7100, "rate": 10, "count": 200}],
    "migrations": [{"kind": "place", "service": "counter", "host": "m1", "at": "0s"},
                   {"kind": "migrate", "mode": "state-transfer", "service": "counter", "from": "m1", "to": "m2",
                    "wan_rate": 10, "at": "packet 50"},
                   {"kind": "migrate", "mode": "cold", "service": "counter", "from": "m2", "to": "m3",
                    "at": "packet 120"}],
}


def parse(data):
    return parse_experiment(data, "mig.yaml", load_topology=lambda ref: topo())


def test_entries_join_the_fault_schedule():
    spec = parse(GOOD)
    moves = [f for f in spec.faults if isinstance(f, MigrationSpec)]
    assert [(m.kind, m.mode, m.src, m.dst, m.wan_rate_mbit) for m in moves] == [
        ("place", "steer", "", "m1", None), ("migrate", "state-transfer", "m1", "m2", 10.0),
        ("migrate", "cold", "m2", "m3", None)]
    assert moves[1].at.packet == 50 and not moves[1].has_undo
    assert shortened(spec).probes[0].count == 150  # the last migration's packet + the tail


@pytest.mark.parametrize("change, where, says", [
    ({"mode": "teleport"}, "migrations[1].mode", "teleport"),
    ({"to": "nowhere"}, "migrations[1].to", "no host 'nowhere'"),
    ({"to": "cli"}, "migrations[1].to", "not a Docker host"),
    ({"to": "solo"}, "migrations[1].to", "not marked anycast"),
    ({"to": "m1"}, "migrations[1].to", "same host"),
    ({"to": "e2"}, "migrations[1].to", "does not share"),
    ({"from": "m1", "to": "m3"}, "migrations[1].wan_rate", "no WAN link between edge1 and edge3"),
    ({"wan_rate": 0}, "migrations[1].wan_rate", ""),
    ({"at": "packet 500"}, "migrations[1].at", "beyond"),
    ({"speed": 1}, "migrations[1].speed", "unknown key"),
])
def test_bad_entries_name_their_place(change, where, says):
    data = copy.deepcopy(GOOD)
    data["migrations"][1].update(change)
    with pytest.raises(SpecError) as err:
        parse(data)
    assert err.value.path == where and says in err.value.message


def test_state_transfer_needs_a_state_dir():
    data = copy.deepcopy(GOOD)
    data["migrations"] = [{"kind": "migrate", "mode": "state-transfer", "service": "echo", "from": "e1",
                           "to": "e2", "at": "packet 5"}]
    with pytest.raises(SpecError) as err:
        parse(data)
    assert err.value.path == "migrations[0].service" and "state_dir" in err.value.message
    data["migrations"][0]["mode"] = "cold"  # a cold start needs no state
    assert parse(data).faults


def test_live_refused_with_the_trials_reason(monkeypatch):
    monkeypatch.setattr(checkpoint, "available",
                        lambda: checkpoint.Trial(False, "docker checkpoint create failed: criu: vdso: x"))
    data = copy.deepcopy(GOOD)
    data["migrations"][1]["mode"] = "live"
    with pytest.raises(SpecError) as err:
        parse(data)
    assert err.value.path == "migrations[1].mode"
    assert "checkpoint/restore" in err.value.message and "criu: vdso: x" in err.value.message


def test_migration_addresses_are_free_and_distinct():
    t = topo()
    ips = {h.name: migration_ip(t, h.name) for h in t.hosts()}
    assert len(set(ips.values())) == len(ips)
    assert not set(ips.values()) & {h.ip.split("/")[0] for h in t.hosts()}
    assert ips["cli"] == "10.0.0.254"  # counted down from the top of the subnet, by name


def test_agent_is_run_as_an_argument_list():
    argv = agent_argv("tbx-m1", ["send", "10.0.0.253", "10.0.0.252", 7790, "/srv/counter"])
    assert argv[:5] == ["docker", "exec", "tbx-m1", "python3", "-u"] and argv[-1] == "/srv/counter"
    assert lines_of('{"a": 1}\nnoise\n[1]\n{"b": 2}') == [{"a": 1}, {"b": 2}]


def test_standby_entries_are_undone_at_the_end():
    data = copy.deepcopy(GOOD)
    data["migrations"] = [{"kind": "standby", "service": "counter", "from": "m1", "to": "m2", "interval": "200ms",
                           "takeover": True, "at": "0s"}]
    (sb,) = [f for f in parse(data).faults if isinstance(f, MigrationSpec)]
    assert (sb.kind, sb.src, sb.dst, sb.interval_s, sb.detect, sb.takeover) == ("standby", "m1", "m2", 0.2, 3.0, True)
    assert sb.has_undo  # its agents stop and its record is written when the run ends


@pytest.mark.parametrize("change, where", [
    ({"interval": 100}, "migrations[0].interval"),       # a bare number: the unit is required
    ({"interval": None}, "migrations[0].interval"),
    ({"detect": 0.5}, "migrations[0].detect"),
    ({"to": "solo"}, "migrations[0].to"),
    ({"takeover": "yes"}, "migrations[0].takeover"),
])
def test_bad_standby_entries(change, where):
    data = copy.deepcopy(GOOD)
    entry = {"kind": "standby", "service": "counter", "from": "m1", "to": "m2", "interval": "200ms", "at": "0s"}
    entry.update(change)
    data["migrations"] = [{k: v for k, v in entry.items() if v is not None}]
    with pytest.raises(SpecError) as err:
        parse(data)
    assert err.value.path == where
