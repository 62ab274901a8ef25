"""containerlab-style verbs from a shell, one after the other: deploy, inspect, exec, destroy; topo's pingall."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from testbed import ledger
from testbed.testing import leftovers, live_processes

ROOT = Path(__file__).resolve().parents[2]


def tb_cli(*args: str, input: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, input=input)


def test_deploy_inspect_exec_destroy(tmp_path):
    out = tmp_path / "run"
    done = tb_cli("deploy", "fatriot", "--out", str(out))
    assert done.returncode == 0, done.stderr
    rid = done.stdout.strip()
    try:
        assert ledger.valid_run_id(rid)
        owner = ledger.header(rid)["owner"]
        assert ledger.owner_alive(rid)  # detached: the run outlives the command that made it
        info = json.loads(tb_cli("inspect", rid, "--json").stdout)
        nodes = {n["name"]: n for n in info["nodes"]}
        assert nodes["mec1"]["ip"].startswith("10.0.0.11/") and nodes["mec1"]["nic"]["ip"].startswith("10.0.0.111/")
        assert nodes["mec1-nic"]["kind"] == "nic" and nodes["mec1-nic"]["ip"] is None
        assert info["controller"]["target"].startswith("tcp:127.0.0.1:") and info["backends"]["link"]
        assert info["owner"] == owner
        listed = json.loads(tb_cli("inspect", "--json").stdout)
        assert rid in [r["rid"] for r in listed]
        mec1 = nodes["mec1"]["ip"].split("/")[0]
        ping = tb_cli("exec", rid, "gen", "--", "ping", "-c1", "-W2", mec1)
        assert ping.returncode == 0 and "1 received" in ping.stdout, ping.stdout + ping.stderr
        assert tb_cli("exec", rid, "gen", "--", "false").returncode == 1  # the command's own status
    finally:
        gone = tb_cli("destroy", rid)
    assert gone.returncode == 0, gone.stderr
    assert f"run {rid}" in gone.stdout
    assert ledger.proc_start_time(owner) is None or not ledger.owner_alive(rid)
    assert leftovers(rid) == [] and live_processes(out) == []
    assert not Path(f"/run/testbed/{rid}").exists()
    assert tb_cli("inspect", rid).returncode == 2


def test_topo_pingall_skips_the_nic_nodes(tmp_path):
    out = tmp_path / "run"
    done = tb_cli("topo", "fatriot", "--no-selfcheck", "--out", str(out), input="pingall\nnet\n", timeout=300)
    assert done.returncode == 0, done.stderr
    cli = done.stdout + done.stderr
    assert "*** Results: 0% dropped (6/6 received)" in cli, cli
    assert "mec1-nic" in cli and "no IP: a bump in the wire" in cli
    rid = json.loads((out / "network.json").read_text())["rid"]
    assert leftovers(rid) == [] and live_processes(out) == []
    assert os.path.exists(out)
