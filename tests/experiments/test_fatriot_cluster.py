"""Fatriot Fig. 11, shortened, with the backup host on another server (a namespace server over ssh):
after mec1 crashes its NIC moves the traffic across the WAN link to mec2 there, delivery stays
>= 0.95, the WAN self-check passes across, the manifest records placement and each server's facts,
and nothing of the run is left on either server. And the other way round: mec1 and its fail-safe
NIC on the other server (the NIC started there, controlled from here), the backup here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.cluster import harness
from testbed.testing import leftovers

ROOT = Path(__file__).resolve().parents[2]
EXP = ROOT / "experiments"
pytestmark = [pytest.mark.integration, pytest.mark.experiment]


def _experiment(tmp: Path, ns: harness.NamespaceServer, name: str = "fatriot-cluster") -> Path:
    """The shipped experiment `name` and its topology, with server `far` set to the namespace server."""
    s = ns.server
    topo = (EXP / "topologies" / f"{name}.yaml").read_text()
    old = "far: {address: 127.0.0.1}"
    assert old in topo
    (tmp / "topo.yaml").write_text(topo.replace(old, f"far: {{address: {s.address}, key: {s.key}, "
                                                     f"known_hosts: {s.known_hosts}}}"))
    exp = (EXP / f"{name}.yaml").read_text()
    assert f"topology: topologies/{name}.yaml" in exp
    path = tmp / f"{name}.yaml"
    path.write_text(exp.replace(f"topology: topologies/{name}.yaml", f"topology: {tmp / 'topo.yaml'}"))
    return path


def test_fig11_backup_on_the_other_server(experiment_runner, nsserver, tmp_path: Path) -> None:
    summary = experiment_runner(_experiment(tmp_path, nsserver))
    run = summary.flow("probe")["with-nic"]
    assert run.mean("delivered_ratio_after_fault") >= 0.95
    assert run.mean("failover_s") is not None and run.mean("failover_s") < 1.0
    out = tmp_path / "run"
    man = json.loads((out / "manifest.json").read_text())
    assert man["placement"] == {"lab": "localhost", "far": "far"}
    far = man["servers"]["far"]
    assert far["address"] == nsserver.server.address and "error" not in far, far
    assert all(far[k] for k in ("kernel", "python", "docker", "ovs")), far
    assert far["backends"]["hosts"] == "docker" and "ssh tunnel" in far["backends"]["wan_to_other_servers"]
    (check,) = [r for r in man["runs"][0]["selfcheck"] if r["wan_links"]]  # the site pair's (host rows beside it)
    assert check["path"] == ["lab", "far"] and check["measured"] is not None, check
    from testbed.experiment.metrics import read_packets

    answered = {p.answered_by for p in read_packets(out / "packets.csv") if p.rtt_ms is not None and p.seq > 55}
    assert answered == {"mec2"}, answered  # after the crash the backup on the other server answered
    for r in man["runs"]:
        assert nsserver.run_leftovers(r["rid"]) == [] and leftovers(r["rid"]) == []
    print(f"after the crash: delivered {run.mean('delivered_ratio_after_fault'):.3f}, failover "
          f"{run.mean('failover_s'):.3f} s; RTT across {check['measured']['avg']} ms; far: {far['kernel']}, "
          f"docker {far['docker']}")


def test_fig11_main_host_and_its_nic_on_the_other_server(experiment_runner, nsserver, tmp_path: Path) -> None:
    summary = experiment_runner(_experiment(tmp_path, nsserver, "fatriot-cluster-nic-far"))
    run = summary.flow("probe")["with-nic"]
    assert run.mean("delivered_ratio_after_fault") >= 0.95
    assert run.mean("failover_s") is not None and run.mean("failover_s") < 1.0
    out = tmp_path / "run"
    man = json.loads((out / "manifest.json").read_text())
    assert man["placement"] == {"lab": "localhost", "far": "far"}
    assert "python: mec1" in man["runs"][0]["backends"]["nic"], man["runs"][0]["backends"]
    from testbed.experiment.metrics import read_packets

    packets = read_packets(out / "packets.csv")
    answered = {p.answered_by for p in packets if p.rtt_ms is not None and p.seq > 55}
    assert answered == {"mec2"}, answered  # after the crash the backup here answered, sent by the NIC on far
    assert {p.answered_by for p in packets if p.rtt_ms is not None and p.seq < 45} == {"mec1"}
    events = (out / "events.csv").read_text()
    assert "mec1/" in events and "activate" in events, events[-2000:]  # the NIC's events, copied from far
    for r in man["runs"]:
        assert nsserver.run_leftovers(r["rid"]) == [] and leftovers(r["rid"]) == []
    print(f"mec1 + NIC on far, backup here: delivered after the crash {run.mean('delivered_ratio_after_fault'):.3f}, "
          f"failover {run.mean('failover_s'):.3f} s; NIC backend {man['runs'][0]['backends']['nic']}")
