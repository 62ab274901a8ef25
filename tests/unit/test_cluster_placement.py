"""Unit tests for placement as data: the `servers:` section, a site's `server:`, block, round-robin and cpu placement."""

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


def _cpu_topo(cpus: dict[str, object], sites: dict[str, list[float | None]]) -> dict:
    """Docker-host sites with the given CPU limits (None: no limit) over servers with `cpus:`."""
    servers = {name: {"address": f"10.255.0.{4 * i + 2}", **({} if c is None else {"cpus": c})}
               for i, (name, c) in enumerate(cpus.items())}
    body = {s: {"hosts": {f"{s}h{j}": {"image": "testbed/echo", **({} if c is None else {"cpu": c})}
                          for j, c in enumerate(limits)}} for s, limits in sites.items()}
    return {"name": "t", "servers": servers, "placement": "cpu", "sites": body}


def test_cpu_placement_largest_site_first_on_the_server_with_most_cores_left(monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    data = _cpu_topo({"b": 5, "c": 2.5}, {"s0": [0.5], "s1": [2, 2], "s2": [None, 1.5], "s3": [1]})
    t = parse_topology(data, "x.yaml")
    # s1 (4) -> b (5 left: 1); s2 (2.5, a host without a limit counts 1) -> localhost (3 left: 0.5)
    # s3 (1) -> c (2.5 left: 1.5); s0 (0.5) -> c (1.5 is the most left)
    assert {s.name: s.server for s in t.sites} == {"s0": "c", "s1": "b", "s2": "localhost", "s3": "c"}
    assert t.server("c").cpus == 2.5


def test_cpu_placement_counts_explicit_sites_first(monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    data = _cpu_topo({"b": 4}, {"s0": [3], "s1": [1.5]})
    data["sites"]["s0"]["server"] = "b"  # b keeps 1 core: s1 goes to localhost
    t = parse_topology(data, "x.yaml")
    assert [s.server for s in t.sites] == ["b", "localhost"]


@pytest.mark.parametrize("cpus,sites,path,message", [
    ({"b": None}, {"s0": [1]}, "servers.b.cpus", "needs every server's cores"),
    ({"b": 0}, {"s0": [1]}, "servers.b.cpus", "number of cores > 0"),
    ({"b": "many"}, {"s0": [1]}, "servers.b.cpus", "number of cores"),
    ({"b": 1.5}, {"s0": [1], "s1": [1.25, 1.25]}, "placement", "site 's1' needs 2.5 cores"),
])
def test_cpu_placement_errors(monkeypatch, cpus, sites, path, message) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    with pytest.raises(SpecError) as err:
        parse_topology(_cpu_topo(cpus, sites), "x.yaml")
    assert err.value.path == path and message in str(err.value), str(err.value)
