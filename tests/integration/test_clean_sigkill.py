"""`testbed clean` after the owning process was SIGKILLed removes the run and nothing else."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from testbed.testing import leftovers, live_processes

TESTBED = [sys.executable, "-m", "testbed.cli"]


@pytest.fixture
def outsiders():
    """A container, an OVS bridge and a veth pair the testbed did not create."""
    tag = secrets.token_hex(3)
    client = docker.from_env()
    box = client.containers.run("testbed/base", ["sleep", "600"], name=f"outsider-{tag}",
                                detach=True, network_mode="none")
    bridge, veth = f"outbr{tag}", f"outv{tag}"
    subprocess.run(["ovs-vsctl", "add-br", bridge, "--", "set", "bridge", bridge,
                    "datapath_type=netdev"], check=True)
    subprocess.run(["ip", "link", "add", f"{veth}a", "type", "veth", "peer", "name", f"{veth}b"],
                   check=True)
    yield {"container": box, "bridge": bridge, "veth": veth}
    box.remove(force=True)
    subprocess.run(["ovs-vsctl", "--if-exists", "del-br", bridge])
    subprocess.run(["ip", "link", "del", f"{veth}a"])


def test_clean_after_sigkill_removes_only_the_run(tmp_path: Path, outsiders):
    run_dir = tmp_path / "run"
    owner = subprocess.Popen([*TESTBED, "topo", "mec-sites", "--no-cli", "--no-selfcheck",
                              "--hold", "300", "--out", str(run_dir)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not (run_dir / "network.json").exists():
        assert owner.poll() is None, owner.stderr.read().decode()
        assert time.monotonic() < deadline, "the topology did not come up"
        time.sleep(0.2)
    rid = json.loads((run_dir / "network.json").read_text())["rid"]
    assert leftovers(rid), "the run should have resources while it is up"
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    assert leftovers(rid), "SIGKILL leaves the run's resources behind until clean"

    done = subprocess.run([*TESTBED, "clean"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert leftovers(rid) == []
    assert live_processes(run_dir) == []

    outsiders["container"].reload()
    assert outsiders["container"].status == "running"
    brs = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout.split()
    assert outsiders["bridge"] in brs
    links = os.listdir("/sys/class/net")
    assert f"{outsiders['veth']}a" in links and f"{outsiders['veth']}b" in links
