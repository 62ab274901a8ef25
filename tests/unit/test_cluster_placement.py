"""Unit tests for placement as data: the `servers:` section, a site's `server:`, block and round-robin placement."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.errors import SpecError
from testbed.topology.loader import load_topology, parse_topology
from testbed.topology.model import LOCAL_SERVER, ServerSpec


def _topo(n_sites: int, **top: object) -> dict:
    sites = {f"s{i}": {"hosts": {f"h{i}": {"ip": f"10.0.0.{i + 1}"}}} for i in range(n_sites)}
    return {"name": "t", "sites": sites, **top}


def test_default_is_localhost_and_no_servers() -> None:
    t = parse_topology(_topo(2), "x.yaml")
    assert t.servers == () and [s.server for s in t.sites] == [LOCAL_SERVER] * 2
    assert t == load_topology("fatriot").__class__(**{**t.__dict__})  # still a plain frozen spec


def test_servers_and_explicit_site_server(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("k")
    data = _topo(2, servers={"b": {"address": "10.255.0.2", "user": "tb", "key": str(key), "port": 2222}})
    data["sites"]["s1"]["server"] = "b"
    t = parse_topology(data, "x.yaml")
    assert t.servers == (ServerSpec("b", "10.255.0.2", user="tb", key=str(key.resolve()), port=2222),)
    assert [s.server for s in t.sites] == [LOCAL_SERVER, "b"]
    assert t.server("b") == t.servers[0] and t.server(LOCAL_SERVER) is None


@pytest.mark.parametrize("policy,want", [
    ("block", ["localhost", "localhost", "localhost", "b", "b", "c", "c"]),
    ("round-robin", ["localhost", "b", "c", "localhost", "b", "c", "localhost"]),
])
def test_placement_policies(policy: str, want: list[str]) -> None:
    servers = {"b": {"address": "10.255.0.2"}, "c": {"address": "host-c.example"}}
    t = parse_topology(_topo(7, servers=servers, placement=policy), "x.yaml")
    assert [s.server for s in t.sites] == want


def test_explicit_server_wins_over_policy() -> None:
    data = _topo(3, servers={"b": {"address": "10.255.0.2"}}, placement="round-robin")
    data["sites"]["s0"]["server"] = "b"
    t = parse_topology(data, "x.yaml")
    assert [s.server for s in t.sites] == ["b", "localhost", "b"]


@pytest.mark.parametrize("servers,path,message", [
    ({"b": {"address": "10.255.0.2"}, "c": {"address": "10.255.0.2"}}, "servers.c.address", "already server 'b'"),
    ({"b": {}}, "servers.b.address", "missing"),
    ({"b": {"address": "10.255.0.2", "user": "bad user"}}, "servers.b.user", "expected a user name"),
    ({"b": {"address": "10.255.0.2", "port": 0}}, "servers.b.port", "port number"),
    ({"b": {"address": "999.1.1.1"}}, "servers.b.address", "IP address or host name"),
    ({"b": {"address": "10.255.0.2", "ssh": 1}}, "servers.b.ssh", "unknown key"),
])
def test_bad_servers_name_their_path(servers: dict, path: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_topology(_topo(1, servers=servers), "x.yaml")
    assert err.value.path == path and message in err.value.message, str(err.value)
