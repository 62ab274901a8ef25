"""A fail-safe NIC on another server (a namespace server over ssh): it runs there (its PID there in the
ledger with the server's name), answers here through its forwarded control socket (`testbed failsafe
NODE show` unchanged), and after a SIGKILL of the run's owner `testbed clean --run` ends it there and
leaves nothing of the run on either server."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

from testbed import ledger, proc
from testbed.testing import leftovers, live_processes, start_owner

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TESTBED = [sys.executable, "-m", "testbed.cli"]


def test_nic_on_the_other_server_answers_here_and_clean_ends_it_there(nsserver, tmp_path: Path) -> None:
    s = nsserver.server
    topo = (ROOT / "experiments" / "topologies" / "fatriot-cluster-nic-far.yaml").read_text()
    old = "far: {address: 127.0.0.1}"
    assert old in topo
    path = tmp_path / "topo.yaml"
    path.write_text(topo.replace(old, f"far: {{address: {s.address}, key: {s.key}, known_hosts: {s.known_hosts}}}"))
    owner, rid = start_owner(path, tmp_path / "run")
    records = [json.loads(x) for x in (tmp_path / "run" / "resources.jsonl").read_text().splitlines()]
    (nic,) = [r for r in records if r.get("kind") == "process" and r.get("what") == "fail-safe NIC mec1"]
    assert nic.get("server") == "far", nic
    there = nsserver.server.run(["cat", f"/proc/{nic['name']}/cmdline"]).stdout
    assert "testbed.failsafe.nic" in there, there
    show = proc.run([*TESTBED, "failsafe", "mec1", "--run", rid, "--json", "show"], timeout=30, check=False)
    assert show.returncode == 0, show.stdout + show.stderr
    assert json.loads(show.stdout)["datapath"] == "python", show.stdout  # through the forward, from far
    owner.send_signal(signal.SIGKILL)
    owner.wait(10)
    res = proc.run([*TESTBED, "clean", "--run", rid, "--json"], timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    removed = json.loads(res.stdout)["removed"]
    assert f"process {nic['name']} on far" in removed, removed
    assert leftovers(rid) == [] and nsserver.run_leftovers(rid) == []
    assert live_processes(tmp_path / "run") == []
    gone = nsserver.server.run(["sh", "-c", f"[ -d /proc/{nic['name']} ] && echo alive; true"]).stdout
    assert gone.strip() == "", gone
    assert rid not in ledger.known_runs()
    print(f"NIC of mec1 on far: pid {nic['name']} there, `testbed failsafe mec1 show` here answered; "
          f"after SIGKILL + clean: removed {len(removed)} resources, nothing left on either server")
