"""`testbed topo` opens the Mininet CLI on Docker hosts; a Python topology file is also a script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from testbed.testing import leftovers, live_processes

ROOT = Path(__file__).resolve().parents[2]


def test_topo_opens_the_mininet_cli_and_tears_down(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "topo", "fatriot", "--no-selfcheck",
                           "--out", str(out)], input="mec1 ping -c1 -W2 mec2\nnodes\n",
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    cli = done.stdout + done.stderr  # Mininet writes its output to stderr
    assert "1 received" in cli and "mec1-nic" in cli
    assert "10.0.0.111" in done.stdout  # the table of what is where
    rid = json.loads((out / "network.json").read_text())["rid"]
    assert leftovers(rid) == [] and live_processes(out) == []


def test_python_topology_runs_as_a_script(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "topologies/mec-sites.py", "--no-cli", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "self-check" in done.stdout and "edge3-cloud" in done.stdout
    rid = json.loads((out / "network.json").read_text())["rid"]
    assert leftovers(rid) == [] and live_processes(out) == []
