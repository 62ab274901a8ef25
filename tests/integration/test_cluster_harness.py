"""A second server on this machine (sshd in a namespace of ours): ssh through the door, preflight, doctor --server,
an unreachable server refused with exit 2 before anything is made, and nothing of the server left after."""

from __future__ import annotations

import json
import sys
from pathlib import Path


from testbed import ledger, proc
from testbed.cluster import harness
from testbed.cluster.preflight import preflight
from testbed.topology.loader import load_topology

TESTBED = [sys.executable, "-m", "testbed.cli"]


def _topology(tmp: Path, ns: harness.NamespaceServer, port: int = 22) -> Path:
    s = ns.server
    path = tmp / "cluster-two.yaml"
    path.write_text(f"""name: cluster-two
servers:
  far: {{address: {s.address}, port: {port}, key: {s.key}, known_hosts: {s.known_hosts}}}
sites:
  a: {{hosts: {{h1: {{ip: 10.0.0.1}}}}}}
  b: {{server: far, hosts: {{h2: {{ip: 10.0.0.2}}}}}}
wan:
  - between: [a, b]
""")
    return path


def test_door_runs_argv_in_the_servers_namespace(nsserver) -> None:
    res = nsserver.server.run(["sh", "-c", 'printf "%s|" "$@"; ip -o -4 addr show', "sh", "a b", "c'd"])
    assert res.stdout.startswith("a b|c'd|")
    assert nsserver.server.address in res.stdout and f"{nsserver.veth[:-1]}1" in res.stdout
    bad = nsserver.server.run(["sh", "-c", "echo oops >&2; exit 3"], check=False)
    assert (bad.returncode, bad.stderr.strip()) == (3, "oops")
    assert "tb" not in nsserver.server.run(["ovs-vsctl", "list-br"]).stdout  # its own, empty OVS


def test_preflight_and_doctor_server(nsserver, tmp_path: Path) -> None:
    topo_file = _topology(tmp_path, nsserver)
    checks = preflight(load_topology(topo_file))["far"]
    assert all(c.ok for c in checks if c.required), checks
    res = proc.run([*TESTBED, "doctor", "--server", "far", "--topology", str(topo_file), "--json"], check=False)
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert res.returncode == 0 and {r["name"] for r in rows} >= {"ssh", "ovs-vsctl", "mnexec", "ovs running"}


def test_unreachable_server_exit_2_nothing_created(nsserver, tmp_path: Path) -> None:
    topo_file = _topology(tmp_path, nsserver, port=2)  # nothing listens there
    runs_before = set(ledger.known_runs())
    out = tmp_path / "run"
    res = proc.run([*TESTBED, "topo", str(topo_file), "--no-cli", "--out", str(out)], check=False, timeout=60)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and "servers.far" in lines[0] and "Connection refused" in lines[0], lines
    assert not out.exists() and set(ledger.known_runs()) == runs_before
