"""Schedule entries (move, switch) in experiment files: parsed, and every mistake rejected at its path."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

from testbed import proc
from testbed.errors import SpecError
from testbed.experiment.mobility_spec import MoveSpec, SwitchSpec
from testbed.experiment.spec import load_experiment, parse_experiment, shortened
from testbed.topology.api import MecTopo

ROOT = Path(__file__).resolve().parents[2]


def topo():
    t = MecTopo("walk")
    for s in ("edge1", "edge2", "edge3"):
        t.addSite(s)
    t.addHost("ue1", site="edge1", ip="10.0.0.1", device=True)
    t.addHost("cli", site="edge1", ip="10.0.0.2")
    t.addDocker("ra", site="edge1", dimage="testbed/echo", ip="10.0.0.50", anycast=True)
    t.addDocker("rb", site="edge2", dimage="testbed/echo", ip="10.0.0.50", anycast=True)
    t.addWan("edge1", "edge2")
    t.addWan("edge2", "edge3")
    return t.build()


GOOD = {
    "name": "walk", "topology": "walk",
    "traffic": [{"name": "probe", "from": "ue1", "to": "ra", "rate": 10, "count": 200}],
    "schedule": [{"kind": "move", "host": "ue1", "to": "edge2", "at": "5s", "gap": "50ms"},
                 {"kind": "switch", "service_ip": "10.0.0.50", "from": "ra", "to": "rb", "at": "5s"},
                 {"kind": "move", "host": "ue1", "to": "edge3", "at": "packet 120"},
                 {"kind": "switch", "service_ip": "10.0.0.50", "to": "ra", "mode": "break-before-make",
                  "at": "15s"}],
    "variants": [{"name": "mbb", "nic": False}, {"name": "bbm", "nic": False, "switch": "break-before-make"}],
}


def parse(data: dict):
    return parse_experiment(data, "walk.yaml", load_topology=lambda ref: topo())


def test_a_route_and_switches_parse() -> None:
    spec = parse(GOOD)
    m1, s1, m2, s2 = spec.schedule
    assert isinstance(m1, MoveSpec) and (m1.src, m1.to, m1.gap_s, m1.at.time_s) == ("edge1", "edge2", 0.05, 5.0)
    assert (m2.src, m2.to, m2.at.packet, m2.gap_s) == ("edge2", "edge3", 120, 0.0)
    assert isinstance(s1, SwitchSpec) and (s1.src, s1.to, s1.mode, s1.first) == ("ra", "rb", "make-before-break", True)
    assert (s2.src, s2.to, s2.mode, s2.first) == ("rb", "ra", "break-before-make", False)
    assert spec.variants[1].switch == "break-before-make" and spec.variants[0].switch is None
    assert not m1.has_undo and m1.target == "ue1" and s1.target == "10.0.0.50"
    assert shortened(spec, tail=10).probes[0].count == 160  # the last entry (15 s = request 150) + 10


def bad(path: list, value: object = None, delete: bool = False) -> dict:
    data = copy.deepcopy(GOOD)
    where = data
    for key in path[:-1]:
        where = where[key]
    if delete:
        del where[path[-1]]
    else:
        where[path[-1]] = value
    return data


@pytest.mark.parametrize("data, where, message", [
    (bad(["schedule", 0, "to"], "edge9"), "schedule[0].to", "no site 'edge9'"),
    (bad(["schedule", 0, "host"], "cli"), "schedule[0].host", "not an end device"),
    (bad(["schedule", 0, "host"], "nobody"), "schedule[0].host", "no host 'nobody'"),
    (bad(["schedule", 0, "to"], "edge1"), "schedule[0].to", "at edge1 already"),
    (bad(["schedule", 0, "gap"], 50), "schedule[0].gap", "unit"),
    (bad(["schedule", 0, "at"], "99s"), "schedule[0].at", "after the traffic ends"),
    (bad(["schedule", 0, "speed"], 3), "schedule[0].speed", "unknown key"),
    (bad(["schedule", 0, "kind"], "teleport"), "schedule[0].kind", "expected one of"),
    (bad(["schedule", 1, "service_ip"], "10.0.0.2"), "schedule[1].service_ip", "not shared by two anycast"),
    (bad(["schedule", 1, "service_ip"], "ten"), "schedule[1].service_ip", "IPv4"),
    (bad(["schedule", 1, "to"], "cli"), "schedule[1].to", "does not serve 10.0.0.50"),
    (bad(["schedule", 1, "from"], None, delete=True), "schedule[1].from", "required on the first switch"),
    (bad(["schedule", 1, "to"], "ra"), "schedule[1].to", "goes to ra already"),
    (bad(["schedule", 1, "mode"], "teleport"), "schedule[1].mode", "expected one of"),
    (bad(["schedule", 3, "from"], "ra"), "schedule[3].from", "goes to rb at this point"),
    (bad(["variants", 1, "switch"], "fast"), "variants[1].switch", "expected one of"),
])
def test_bad_schedule_entries_name_their_path(data: dict, where: str, message: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse(data)
    assert exc.value.path == where and message in str(exc.value), str(exc.value)


def test_the_shipped_mobility_experiments_validate() -> None:
    for name in ("han-mbb",):
        spec = load_experiment(ROOT / "experiments" / f"{name}.yaml", check_images=False)
        assert spec.schedule, name


def test_validate_exits_2_naming_the_path_and_creates_nothing(tmp_path: Path) -> None:
    text = (ROOT / "experiments" / "han-mbb.yaml").read_text().replace("to: mecb, at: 4s", "to: ue, at: 4s")
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace("topology: topologies/han-mbb.yaml",
                                 f"topology: {ROOT / 'experiments' / 'topologies' / 'han-mbb.yaml'}"))
    before = set(tmp_path.iterdir())
    res = proc.run([sys.executable, "-m", "testbed.cli", "validate", str(path)], check=False, timeout=60)
    assert res.returncode == 2, res
    lines = [l for l in res.stderr.strip().splitlines() if l]
    assert len(lines) == 1 and "schedule[0].to" in lines[0] and "bad.yaml" in lines[0], res.stderr
    assert set(tmp_path.iterdir()) == before
