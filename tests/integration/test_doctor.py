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


def _independent_checkpoint_trial() -> bool:
    """Checkpoint and restore a sleeping container with the docker CLI alone; True when both steps worked."""
    run = subprocess.run(["docker", "run", "-d", "--label", "testbed.doctor=test", "--network", "none",
                          "testbed/base", "sleep", "300"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    cid = run.stdout.strip()
    try:
        made = subprocess.run(["docker", "checkpoint", "create", cid, "indep"], capture_output=True, timeout=60)
        if made.returncode != 0:
            return False
        back = subprocess.run(["docker", "start", "--checkpoint", "indep", cid], capture_output=True, timeout=60)
        state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", cid], capture_output=True,
                               text=True, timeout=30)
        return back.returncode == 0 and state.stdout.strip() == "true"
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, timeout=60)


def test_doctor_checkpoint_restore_matches_an_independent_trial():
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "doctor", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)["checkpoint_restore"]
    assert isinstance(found["ok"], bool) and found["reason"]
    assert found["ok"] == _independent_checkpoint_trial(), found
    if not found["ok"]:  # the reason names the step that failed, not a guess
        assert "--experimental" in found["reason"] or "failed" in found["reason"] or "criu" in found["reason"]
    left = subprocess.run(["docker", "ps", "-aq", "--filter", "label=testbed.doctor"], capture_output=True,
                          text=True, timeout=30)
    assert left.stdout.strip() == "", "the doctor's trial container was left behind"
