"""NicConfig: JSON round trip, from_spec resolution of backups and peers, and the heartbeat table."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.errors import SpecError
from testbed.failsafe.config import NicConfig, ServiceConfig, default_mac
from testbed.topology.model import CriticalService, HeartbeatSpec, HostSpec, NicSpec, SiteSpec, TopologySpec


def topo() -> TopologySpec:
    main = HostSpec("mec1", "edge1", "10.0.0.11/24", nic=NicSpec(
        ip="10.0.0.111/24", backups=("mec2",), interval_s=0.05, threshold=2.0, hysteresis=4,
        services=(CriticalService("echo", "udp", 5000, HeartbeatSpec("udp", payload=b"hb", expect=b"hb")),
                  CriticalService("web", "tcp", 80, HeartbeatSpec("tcp", interval_s=0.2), backups=("mec3:8080",)))))
    b1 = HostSpec("mec2", "edge1", "10.0.0.12/24", nic=NicSpec(ip="10.0.0.112/24", mac="02:aa:00:00:00:12"))
    b2 = HostSpec("mec3", "edge2", "10.0.0.13/24")
    return TopologySpec("t", (SiteSpec("edge1", hosts=(main, b1)), SiteSpec("edge2", hosts=(b2,))))


def test_from_spec_resolves_backups_and_peers(tmp_path: Path) -> None:
    t = topo()
    cfg = NicConfig.from_spec(t.host("mec1"), t, "ab12", tmp_path)
    assert cfg.host_ip == "10.0.0.11" and cfg.nic_ip == "10.0.0.111" and cfg.prefixlen == 24
    assert cfg.default_backups == (("10.0.0.12", 0),)
    assert cfg.services[0].backups == () and cfg.services[1].backups == (("10.0.0.13", 8080),)
    assert cfg.peers == ("10.0.0.112",)  # mec3 has no NIC: no discovery peer
    assert cfg.control_socket == "/run/testbed/ab12/nic-mec1.sock"
    assert cfg.events_path == str(tmp_path / "events-mec1.jsonl")
    assert cfg.nic_mac == default_mac("ab12", "mec1") and cfg.nic_mac.startswith("02:")
    assert cfg.interval_s == 0.05 and cfg.hysteresis == 4


def test_from_spec_errors_name_the_path(tmp_path: Path) -> None:
    t = topo()
    bad = HostSpec("x", "edge1", "10.0.0.20/24", nic=NicSpec(ip="10.0.0.120/24", backups=("nope",)))
    with pytest.raises(SpecError, match=r"hosts.x.nic.backups\[0\]"):
        NicConfig.from_spec(bad, t, "ab12", tmp_path)
    with pytest.raises(SpecError):
        NicConfig.from_spec(t.host("mec3"), t, "ab12", tmp_path)


def test_json_round_trip(tmp_path: Path) -> None:
    t = topo()
    cfg = NicConfig.from_spec(t.host("mec1"), t, "ab12", tmp_path)
    again = NicConfig.from_json(cfg.to_json())
    assert again == cfg
    assert again.services[0].payload == b"hb" and again.services[0].expect == b"hb"


def test_json_rejects_unknown_keys() -> None:
    cfg = NicConfig("n", "ab12", "10.0.0.11", "10.0.0.111", "02:00:00:00:00:01",
                    services=(ServiceConfig("s", "udp", 1),))
    text = cfg.to_json().replace('"node"', '"nodde"')
    with pytest.raises(SpecError, match="nodde"):
        NicConfig.from_json(text)
    with pytest.raises(SpecError):
        NicConfig("n", "ab12", "10.0.0.11", "10.0.0.111", "02:00:00:00:00:01", services=(ServiceConfig("s", "sctp", 1),))


def test_heartbeat_entries(tmp_path: Path) -> None:
    t = topo()
    entries = NicConfig.from_spec(t.host("mec1"), t, "ab12", tmp_path).heartbeat_entries()
    assert [(e.target, e.message) for e in entries] == [("platform", "icmp"), ("echo", "udp"), ("web", "tcp")]
    echo, web = entries[1], entries[2]
    assert echo.dst_ip == "10.0.0.11" and echo.dst_port == 5000 and echo.interval_s == 0.05 and echo.threshold == 2.0
    assert echo.payload == b"hb" and echo.expect == b"hb" and echo.hysteresis == 4
    assert web.interval_s == 0.2 and web.dst_port == 80
