"""Two servers (this machine and a namespace server over ssh), one site each, built with Cluster Edition's
remote classes and an SSH tunnel WAN link, a Docker host on the other server made by its engine and a
shaped access link there (that server's own link emulator): it
comes up, the WAN self-check passes across, the remote Docker host crashes and recovers, and after a
SIGKILL of the owner `testbed clean --run` leaves nothing on either server (containers removed there)."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path


from testbed import ledger, proc
from testbed.cluster import harness
from testbed.emulation.testbed import Testbed
from testbed.testing import leftovers, live_processes, start_owner, unrecorded
from testbed.topology.loader import load_topology

TESTBED = [sys.executable, "-m", "testbed.cli"]


def _topology(tmp: Path, ns: harness.NamespaceServer) -> Path:
    s = ns.server
    path = tmp / "cluster-two.yaml"
    path.write_text(f"""name: cluster-two
servers:
  far: {{address: {s.address}, key: {s.key}, known_hosts: {s.known_hosts}}}
sites:
  a: {{hosts: {{h1: {{ip: 10.0.0.1}}, h3: {{ip: 10.0.0.3}}}}}}
  b: {{server: far, hosts: {{h2: {{ip: 10.0.0.2}}, h4: {{ip: 10.0.0.4, access: {{delay: 1ms}}}},
                            d2: {{ip: 10.0.0.12, image: testbed/echo}}}}}}
wan:
  - between: [a, b]
""")
    return path


def _remote_leftovers(ns: harness.NamespaceServer, rid: str) -> list[str]:
    return ns.run_leftovers(rid)


def test_two_servers_up_selfcheck_across_and_nothing_left(nsserver, tmp_path: Path) -> None:
    topo = load_topology(_topology(tmp_path, nsserver))
    t0 = time.monotonic()
    tb = Testbed(topo, tmp_path / "run")
    with tb:
        up_s = time.monotonic() - t0
        assert tb.door("h2").name == "far" and tb.door("h1").local
        bridges = nsserver.server.run(["ovs-vsctl", "list-br"]).stdout.split()
        # the site's, and maybe the throwaway bridge on which far's link emulator measures a switch hop
        assert tb.switch_of["b"] in bridges and set(bridges) <= {tb.switch_of["b"], f"{tb.ledger.prefix}r0hc"}, bridges
        rows = [r for r in tb.selfcheck(count=5) if r["wan_links"]]  # the site pair's row (host rows beside it)
        assert len(rows) == 1 and rows[0]["measured"] is not None, rows
        ping = proc.run_in(tb.node("h4"), ["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.0.3"], timeout=20)
        assert " 0% packet loss" in ping.stdout
        d2 = tb.node("d2")
        assert tb.door("d2").name == "far" and d2.door.run(["docker", "inspect", d2.cname]).ok
        for step in ("up", "crash", "recover"):
            if step == "crash":
                d2.crash()
            elif step == "recover":
                d2.recover()
            ping = proc.run_in(tb.node("h1"), ["ping", "-c", "3", "-i", "0.2", "-W", "1", "10.0.0.12"],
                               timeout=20, check=False)
            assert (" 0% packet loss" in ping.stdout) == (step != "crash"), (step, ping.stdout)
        print(f"two servers up in {up_s:.1f} s; RTT across {rows[0]['measured']['avg']} ms")
    assert leftovers(tb.rid) == [] and _remote_leftovers(nsserver, tb.rid) == []
    assert tb.rid not in ledger.known_runs()


def _status(alive: list[str]) -> list[str]:
    """State, parent and command line of each process `live_processes` named (for the failure message)."""
    out = []
    for item in alive:
        pid = item.split()[1]
        try:
            status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            out.append(f"{pid}: {status['State'].strip()}, ppid {status['PPid'].strip()}: {cmd[:200]}")
        except OSError as exc:
            out.append(f"{pid}: {exc}")
    return out


def test_sigkill_then_clean_leaves_nothing_on_either_server(nsserver, tmp_path: Path) -> None:
    topo_file = _topology(tmp_path, nsserver)
    owner, rid = start_owner(topo_file, tmp_path / "run")
    assert _remote_leftovers(nsserver, rid), "the run made nothing on the other server"
    remote_pids = [json.loads(x)["name"] for x in (tmp_path / "run" / "resources.jsonl").read_text().splitlines()
                   if '"server": "far"' in x and '"kind": "process"' in x]
    assert remote_pids
    book = (tmp_path / "run" / "resources.jsonl").read_text()
    assert '"what": "link emulator"' in book  # far's own emulator, for h4's shaped access link
    owner.send_signal(signal.SIGKILL)
    owner.wait(10)
    res = proc.run([*TESTBED, "clean", "--run", rid, "--json"], timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    removed = json.loads(res.stdout)["removed"]
    assert any("on far" in r for r in removed), removed
    assert sum(r.startswith("container ") and r.endswith(" on far") for r in removed) == 1, removed  # d2 (never crashed: no holder)
    assert leftovers(rid) == [] and _remote_leftovers(nsserver, rid) == []
    assert live_processes(tmp_path / "run") == [], (removed, res.stderr[-3000:], _status(live_processes(tmp_path / "run")))
    alive = nsserver.server.run(["sh", "-c", 'for p; do [ -d /proc/$p ] && echo $p; done; true', "sh", *remote_pids])
    assert alive.stdout.split() == []
    assert unrecorded(rid, [str(nsserver.server.key)]) == []  # nor anything the ledger missed: shells of the run, ssh to the server
    assert rid not in ledger.known_runs()
