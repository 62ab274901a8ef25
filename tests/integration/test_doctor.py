"""`testbed doctor --json` tells the truth about this machine, checked by independent means."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import docker


def test_doctor_json_matches_the_machine():
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "doctor", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for key in ("netem", "ovs_datapath", "link_backend", "docker", "criu"):
        assert key in report
    assert isinstance(report["netem"], bool) and isinstance(report["criu"], bool)
    assert report["link_backend"] == ("netem" if report["netem"] else "userspace")
    # the kernel datapath needs the openvswitch module; without it OVS runs in userspace
    assert report["ovs_datapath"] == ("kernel" if os.path.isdir("/sys/module/openvswitch") else "userspace")
    assert report["docker"] == docker.from_env().version()["Version"]
    criu = subprocess.run(["criu", "check"], capture_output=True)
    assert report["criu"] == (criu.returncode == 0)
    sch_netem = subprocess.run(["unshare", "--net", "sh", "-c",
                                "ip link add a type veth peer name b && tc qdisc add dev a root netem delay 1ms"],
                               capture_output=True)
    assert report["netem"] == (sch_netem.returncode == 0)
