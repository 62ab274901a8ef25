"""A `kind: chain` traffic entry: parsed into frozen data, every mistake one error naming its YAML path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from testbed import yamlio
from testbed.errors import SpecError
from testbed.experiment.spec import parse_experiment
from testbed.migration.chain import failure_times
from testbed.migration.chain_spec import ChainFlow, FailureSpec, VFSpec

ROOT = Path(__file__).resolve().parents[2]
EXP = ROOT / "experiments"


def doc(name: str = "tsakanikas-fig11a") -> dict:
    return yamlio.load_yaml(EXP / f"{name}.yaml")


def parse(data: dict):
    return parse_experiment(data, "x.yaml", base_dir=EXP)


def error(data: dict) -> str:
    with pytest.raises(SpecError) as err:
        parse(data)
    assert err.value.exit_code == 2 and err.value.source == "x.yaml"
    return f"{err.value.path}: {err.value.message}"


def test_the_shipped_chains_parse_with_their_variants():
    spec = parse(doc())
    flow = spec.traffic[0]
    assert isinstance(flow, ChainFlow) and flow.order == ("detect", "track") and flow.spares == ("n3", "n4", "n5")
    assert flow.vfs[0] == VFSpec("detect", "n1", 0.012, "track") and flow.vfs[1].next == "sink"
    assert flow.vfo.period_s == 0.5 and flow.vfo.predictor == "trend" and flow.count == 20 * 120
    assert [flow.healing(v) for v in spec.variants] == ["cold", "reset"]
    b = parse(doc("tsakanikas-fig11b")).traffic[0]
    assert b.stress[0].host == "n1" and b.stress[0].duration_s == 40 and dict(b.vfo.params)["window"] == 3


def test_next_reorders_the_chain():
    d = doc()
    vfs = d["traffic"][0]["vfs"]
    vfs[0]["next"], vfs[1]["next"] = "sink", "detect"
    vfs.reverse()  # track first, then detect
    assert parse(d).traffic[0].order == ("track", "detect")


@pytest.mark.parametrize("change, expected", [
    (lambda t: t["vfs"][1].update(next="detect"), "traffic[0].vfs[1].next: the chain has a loop: detect -> track -> detect"),
    (lambda t: t["vfs"][0].update(next="nope"), "traffic[0].vfs[0].next: no VF 'nope'"),
    (lambda t: t["vfs"][0].update(next="sink"), "traffic[0].vfs[1]: VF 'track' is never reached from the source"),
    (lambda t: t["vfs"][1].update(host="n9"), "traffic[0].vfs[1].host: no host 'n9'"),
    (lambda t: t["vfs"][1].update(host="n1"), "traffic[0].vfs[1].host: n1 already hosts VF detect"),
    (lambda t: t["vfs"][0].update(host="cam"), "traffic[0].vfs[0].host: cam already hosts the source"),
    (lambda t: t.update(spares=["n3", "n1"]), "traffic[0].spares[1]: n1 is already in the chain"),
    (lambda t: t.update(spares=["n3", "n3"]), "traffic[0].spares[1]: n3 is already in the chain"),
    (lambda t: t["vfs"][1].update(name="detect"), "traffic[0].vfs[1].name: duplicate or reserved name 'detect'"),
    (lambda t: t.update(vfs=[]), "traffic[0].vfs: needs at least one VF"),
    (lambda t: t["orchestrator"].update(predictor="lstm"), "traffic[0].orchestrator.predictor: no predictor 'lstm' (known: trend)"),
    (lambda t: t["orchestrator"].update(period="3600s"), "traffic[0].orchestrator.period: 3600s is not shorter"),
    (lambda t: t["orchestrator"].update(healing="warm"), "traffic[0].orchestrator.healing: expected one of cold"),
    (lambda t: t["orchestrator"].update(healing="live"), "traffic[0].orchestrator.healing: live migration"),
    (lambda t: t.update(stress=[{"host": "cam", "at": "1s", "for": "1s"}]), "traffic[0].stress[0].host: cam is not a VF node"),
    (lambda t: t.update(stress=[{"host": "n1", "at": "200s", "for": "1s"}]), "traffic[0].stress[0].at: 200s is after"),
    (lambda t: t.update(failures={"mean": 5}), "traffic[0].failures.mean: "),
    (lambda t: t.update(rate=0), "traffic[0].rate: must be greater than 0"),
    (lambda t: t.update(colour="red"), "traffic[0].colour: unknown key"),
])
def test_bad_chains_name_the_path(change, expected):
    d = doc()
    change(d["traffic"][0])
    assert expected in error(d)


def test_a_vf_node_must_run_the_vf_image():
    d = doc()
    d["topology"] = "fatriot"
    d["traffic"][0]["vfs"][0]["host"] = "mec1"
    assert "traffic[0].vfs[0].host: mec1 is not a Docker host of image testbed/vf" in error(d)


def test_live_healing_in_a_variant_is_refused_with_the_reason():
    d = doc()
    d["variants"][1]["healing"] = "live"
    msg = error(d)
    assert msg.startswith("variants[1].healing: live migration") and "state-transfer or cold" in msg


def test_faults_do_not_mix_with_a_chain():
    d = doc()
    d["faults"] = [{"kind": "host_down", "host": "n1", "at": "5s"}]
    assert error(d).startswith("faults: not with a chain (traffic[0])")


def flow(seed_mean: float = 10.0, duration: float = 300.0, start: float = 5.0) -> ChainFlow:
    return ChainFlow("frames", "cam", "cam", (VFSpec("a", "n1", 0.01, "b"), VFSpec("b", "n2", 0.01, "sink")),
                     ("n3",), 20, duration, failures=FailureSpec(seed_mean, start, 10.0))


def test_failures_come_from_the_seed():
    f = flow()
    first = failure_times(17, 0, f)
    assert first == failure_times(17, 0, copy.deepcopy(f))  # same seed, same times and VFs
    assert first != failure_times(18, 0, f) and first != failure_times(17, 1, f)
    assert all(5.0 < t < 300.0 for t, _ in first) and {i for _, i in first} == {0, 1}
    assert [round(t, 1) for t, _ in failure_times(17, 0, flow(10.0, 30.0, 3.0))] == [8.0, 20.4]  # what test_tsakanikas uses
    gaps = [b - a for (a, _), (b, _) in zip(first, first[1:])]
    assert 5.0 < sum(gaps) / len(gaps) < 20.0  # Poisson, mean gap 10 s
    assert failure_times(1, 0, ChainFlow("x", "cam", "cam", f.vfs, (), 20, 30.0)) == []  # no failures asked for


def test_the_readme_chain_example_validates():
    import re

    block = next(b for b in re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
                 if b.startswith("traffic:\n  - name: frames\n    kind: chain"))
    spec = parse({**yamlio.parse_yaml(block, "README.md"), "name": "readme", "topology": "topologies/tsakanikas.yaml"})
    assert spec.traffic[0].stress[0].host == "n1" and [v.healing for v in spec.variants] == ["cold", "reset"]


def test_short_runs_keep_30_s_of_a_chain():
    from testbed.experiment.spec import shortened

    short = shortened(parse(doc()))
    assert short.repetitions == 1 and short.traffic[0].duration_s == 30.0 and short.traffic[0].count == 600
