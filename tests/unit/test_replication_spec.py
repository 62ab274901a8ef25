"""`replicas:` on a service entry: one ServiceRun per replica, the replica set, and every mistake at its path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from testbed.errors import SpecError
from testbed.experiment.spec import load_experiment, parse_experiment
from testbed.topology.api import MecTopo

ROOT = Path(__file__).resolve().parents[2]


def topo():
    t = MecTopo("walk")
    for s in ("edge1", "edge2", "edge3"):
        t.addSite(s)
    t.addHost("ue", site="edge1", ip="10.0.0.1", device=True)
    for n in (1, 2, 3):
        t.addDocker(f"r{n}", site=f"edge{n}", dimage="testbed/echo", ip="10.0.0.50", anycast=True)
    t.addDocker("other", site="edge1", dimage="testbed/echo", ip="10.0.0.9")
    t.addWan("edge1", "edge2")
    t.addWan("edge2", "edge3")
    return t.build()


GOOD = {
    "name": "walk", "topology": "walk",
    "services": [{"name": "echo", "state_dir": "/srv/state", "sync": {"period": "1s"}, "follow": "ue",
                  "replicas": [{"host": "r1", "role": "primary"}, {"host": "r2", "role": "secondary"},
                               {"host": "r3", "role": "backup"}]}],
    "traffic": [{"name": "probe", "from": "ue", "to": "r1", "rate": 10, "count": 100}],
    "variants": [{"name": "p", "nic": False}, {"name": "r", "nic": False, "replication": "reactive"}],
}


def parse(data: dict):
    return parse_experiment(data, "walk.yaml", load_topology=lambda ref: topo())


def test_replicas_expand_to_one_service_each() -> None:
    spec = parse(GOOD)
    assert [(s.host, s.name, s.state_dir) for s in spec.services] == [
        ("r1", "echo", "/srv/state"), ("r2", "echo", "/srv/state"), ("r3", "echo", "/srv/state")]
    (rset,) = spec.replica_sets
    assert (rset.name, rset.ip, rset.primary, rset.period_s, rset.follow, rset.migration) == (
        "echo", "10.0.0.50", "r1", 1.0, "ue", "proactive")
    assert spec.variants[1].replication == "reactive"


def bad(mutate) -> dict:
    data = copy.deepcopy(GOOD)
    mutate(data["services"][0])
    return data


def role(i: int, value: str):
    return lambda s: s["replicas"][i].__setitem__("role", value)


@pytest.mark.parametrize("data, where, message", [
    (bad(role(1, "primary")), "services[0].replicas", "exactly one primary, got 2 (r1, r2)"),
    (bad(role(0, "backup")), "services[0].replicas", "exactly one primary, got 0"),
    (bad(role(0, "leader")), "services[0].replicas[0].role", "expected one of"),
    (bad(lambda s: s["replicas"][2].__setitem__("host", "r9")), "services[0].replicas[2].host", "no host 'r9'"),
    (bad(lambda s: s["replicas"][2].__setitem__("host", "r1")), "services[0].replicas[2].host", "has a replica already"),
    (bad(lambda s: s["replicas"][2].__setitem__("host", "other")), "services[0].replicas[2].host", "anycast"),
    (bad(lambda s: s.__setitem__("host", "r1")), "services[0].host", "under `replicas`"),
    (bad(lambda s: s.__setitem__("follow", "r2")), "services[0].follow", "not an end device"),
    (bad(lambda s: s.pop("state_dir")), "services[0].sync", "needs a state_dir"),
    (bad(lambda s: s.__setitem__("sync", {"period": 1})), "services[0].sync.period", "unit"),
    (bad(lambda s: s.__setitem__("migration", "teleport")), "services[0].migration", "expected one of"),
])
def test_bad_replicas_name_their_path(data: dict, where: str, message: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse(data)
    assert exc.value.path == where and message in str(exc.value), str(exc.value)


def test_bad_variant_replication_mode() -> None:
    data = copy.deepcopy(GOOD)
    data["variants"][1]["replication"] = "sometimes"
    with pytest.raises(SpecError) as exc:
        parse(data)
    assert exc.value.path == "variants[1].replication"


def test_the_shipped_replication_experiment_validates() -> None:
    spec = load_experiment(ROOT / "experiments" / "farris-replication.yaml", check_images=False)
    assert spec.replica_sets[0].follow == "ue" and len(spec.schedule) == 2
