"""Integration: a user's own OpenFlow 1.3 app (the Ryu-style controllers/simple_switch_13.py) runs shipped topologies."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from testbed import proc
from testbed.emulation.testbed import Testbed
from testbed.errors import TestbedError
from testbed.testing import leftovers, live_processes
from testbed.topology.loader import SHIPPED_DIR, load_topology

ROOT = Path(__file__).resolve().parents[2]
APP = "controllers/simple_switch_13.py"


def test_simple_switch_13_from_the_topology_key_reaches_every_host(tmp_path: Path) -> None:
    data = yaml.safe_load((SHIPPED_DIR / "mec-sites.yaml").read_text())
    data["controller"] = {"app": APP, "config": {"idle_timeout": 60}}
    path = tmp_path / "mec-sites-ss13.yaml"
    path.write_text(yaml.safe_dump(data))
    topo = load_topology(path)
    assert topo.controller.app == str(ROOT / APP)
    tb = Testbed(topo, tmp_path / "run")  # with the topology's fail-safe NICs
    with tb:
        assert tb.controller.commands() == ["ping"]
        hosts = [tb.node(h.name) for h in topo.hosts()]
        tb.net.ping(hosts, timeout="2")  # the first round learns
        # edge3-cloud loses 0.1 % per direction by design: a lost single ping gets one more round
        assert tb.net.ping(hosts, timeout="2") == 0.0 or tb.net.ping(hosts, timeout="2") == 0.0
        flows = proc.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", tb.switch_of["cloud"]]).stdout
        assert "idle_timeout=60" in flows and "priority=1,in_port=" in flows, flows  # its flows, its config
        assert "cookie=0x1ea4" not in flows  # and not the learning app's
        with pytest.raises(TestbedError, match="no northbound steer"):
            tb.steer("10.0.0.11", "mec1")
    assert leftovers(tb.rid) == []
    assert live_processes(tb.run_dir) == []


def test_topo_command_takes_the_controller_option(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = proc.run([sys.executable, "-m", "testbed.cli", "topo", "fatriot", "--controller", APP,
                     "--no-nic", "--no-selfcheck", "--out", out], input="pingall\n", timeout=300, check=False)
    cli = done.stdout + done.stderr  # Mininet writes its output to stderr
    assert done.returncode == 0, cli
    assert "Results: 0% dropped" in cli, cli
    assert "SimpleSwitch13" in (out / "controller.log").read_text()
    rid = json.loads((out / "network.json").read_text())["rid"]
    assert leftovers(rid) == [] and live_processes(out) == []
