"""Unit tests for the manifest's placement section: site -> server, each server's facts asked through its door."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import proc
from testbed.cluster import facts
from testbed.cluster.server import Server
from testbed.errors import CommandError
from testbed.topology.loader import load_topology

ROOT = Path(__file__).resolve().parents[2]


def test_placement_and_facts_of_each_server_through_its_door(monkeypatch: pytest.MonkeyPatch) -> None:
    facts.server_facts.cache_clear()
    asked = []

    def run(self, args, **kw):
        asked.append(self.name)
        if not self.local:
            raise CommandError(self.argv(args), 255, "ssh: connect to host 127.0.0.1 port 22: Connection refused")
        return proc.Result(list(args), 0, "6.1.0\n3.11.2\n24.0.5\novs-vsctl (Open vSwitch) 3.1.0\n[netdev]\n", "")

    monkeypatch.setattr(Server, "run", run)
    topo = load_topology(ROOT / "experiments" / "topologies" / "fatriot-cluster.yaml")
    out = facts.placement_section(topo, [{"backends": {"link": "userspace", "ovs_datapath": "userspace"}}])
    assert out["placement"] == {"lab": "localhost", "far": "far"}
    here, far = out["servers"]["localhost"], out["servers"]["far"]
    assert (here["kernel"], here["docker"], here["ovs_datapath_types"]) == ("6.1.0", "24.0.5", "[netdev]")
    assert "Connection refused" in far["error"] and "kernel" not in far  # not guessed
    assert far["backends"]["hosts"] == "docker" and "ssh tunnel" in far["backends"]["wan_to_other_servers"]
    assert here["backends"]["links"] == "userspace"
    facts.placement_section(topo, [])
    assert sorted(asked) == ["far", "localhost"]  # once per server and process
    facts.server_facts.cache_clear()
