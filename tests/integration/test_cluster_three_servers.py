"""A WAN link between two sites on two other servers (two namespace servers, neither this machine):
Cluster Edition's SSH tunnel link started on the first server to the second, its first end through
the first server's own link emulator, so the self-check RTT across is near the configured one and
the link goes down and up as a local one; after teardown, and after a SIGKILL of the owner and
`testbed clean --run`, nothing of the run is left on any of the three (the tunnel's ssh on the first
server included)."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

from testbed import ledger, proc
from testbed.cluster import harness
from testbed.emulation.testbed import Testbed
from testbed.testing import leftovers, live_processes, start_owner, unrecorded
from testbed.topology.loader import load_topology

pytestmark = pytest.mark.integration
TESTBED = [sys.executable, "-m", "testbed.cli"]
DELAY_MS = 5.0


@pytest.fixture
def nsservers():
    rid = ledger.new_run_id()
    book = ledger.Ledger(rid)
    one = harness.start(book, "far1", ovs=True)
    try:
        two = harness.start(book, "far2", ovs=True, index=1)
    except BaseException:
        one.stop()
        raise
    try:
        harness.join(one, two)
        yield one, two
    finally:
        two.stop()
        one.stop()
    assert one.leftovers() == [] and two.leftovers() == [] and leftovers(rid) == []
    ledger.forget(rid)


def _topology(tmp: Path, one: harness.NamespaceServer, two: harness.NamespaceServer) -> Path:
    path = tmp / "cluster-three.yaml"
    s1, s2 = one.server, two.server
    path.write_text(f"""name: cluster-three
servers:
  far1: {{address: {s1.address}, key: {s1.key}, known_hosts: {s1.known_hosts}}}
  far2: {{address: {s2.address}, key: {s2.key}, known_hosts: {s2.known_hosts}}}
sites:
  a: {{hosts: {{h1: {{ip: 10.0.0.1}}}}}}
  b: {{server: far1, hosts: {{h2: {{ip: 10.0.0.2}}}}}}
  c: {{server: far2, hosts: {{h3: {{ip: 10.0.0.3}}}}}}
wan:
  - {{between: [a, b]}}
  - {{between: [b, c], delay: {DELAY_MS:g}ms}}
""")
    return path


def _ping(tb: Testbed, src: str, dst: str, count: int = 3) -> str:
    return proc.run_in(tb.node(src), ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "1", dst],
                       timeout=20, check=False).stdout


def test_wan_between_two_other_servers_shaped_on_the_first_and_nothing_left(nsservers, tmp_path: Path) -> None:
    one, two = nsservers
    tb = Testbed(load_topology(_topology(tmp_path, one, two)), tmp_path / "run", link_backend="userspace")
    with tb:
        assert (tb.door("h1").local, tb.door("h2").name, tb.door("h3").name) == (True, "far1", "far2")
        rows = {tuple(r["path"]): r for r in tb.selfcheck(count=10) if r["wan_links"]}
        row = rows[("b", "c")]
        assert row["configured_rtt_ms"] == 2 * DELAY_MS and row["measured"] is not None, row
        assert row["measured"]["avg"] >= 2 * DELAY_MS - 0.5 and row["measured"]["min"] <= 2 * DELAY_MS + 3.0, row  # load only adds delay: the fastest bounds it
        link = tb.wan_link_id("b", "c")
        emu = tb.cluster.remote_emulators["far1"]
        assert "far2" not in tb.cluster.remote_emulators
        stats = emu.request("stats", link_id=link)[link]
        assert stats["forward"]["shape"]["delay_ms"] == DELAY_MS, stats
        assert " 0% packet loss" in _ping(tb, "h1", "10.0.0.3")  # here -> far1 -> far2
        tb.links.set_up(link, False)
        cut = _ping(tb, "h2", "10.0.0.3")
        assert " 100% packet loss" in cut, cut
        tb.links.set_up(link, True)
        back = _ping(tb, "h3", "10.0.0.2", 5)
        assert " 0% packet loss" in back, back
        print(f"WAN far1-far2 through far1's emulator: configured RTT {row['configured_rtt_ms']} ms, measured "
              f"{row['measured']} ms; down: 100% loss; up: {back.strip().splitlines()[-1]}")
    assert leftovers(tb.rid) == [] and one.run_leftovers(tb.rid) == [] and two.run_leftovers(tb.rid) == []
    assert tb.rid not in ledger.known_runs()


def test_sigkill_then_clean_leaves_nothing_on_any_server(nsservers, tmp_path: Path) -> None:
    one, two = nsservers
    topo_file = _topology(tmp_path, one, two)
    owner, rid = start_owner(topo_file, tmp_path / "run", link_backend="userspace")
    records = [json.loads(x) for x in (tmp_path / "run" / "resources.jsonl").read_text().splitlines()]
    tunnel = [r for r in records if r.get("kind") == "process" and r.get("server") == "far1"
              and "ssh tunnel" in r.get("what", "")]
    assert len(tunnel) == 1, records  # the tunnel's ssh to far2, started on far1
    remote_pids = [r["name"] for r in records if r.get("kind") == "process" and r.get("server") in ("far1", "far2")]
    assert one.run_leftovers(rid) and two.run_leftovers(rid)
    owner.send_signal(signal.SIGKILL)
    owner.wait(10)
    res = proc.run([*TESTBED, "clean", "--run", rid, "--json"], timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    removed = json.loads(res.stdout)["removed"]
    assert any("on far1" in r for r in removed) and any("on far2" in r for r in removed), removed
    assert leftovers(rid) == [] and one.run_leftovers(rid) == [] and two.run_leftovers(rid) == []
    assert live_processes(tmp_path / "run") == []
    alive = one.server.run(["sh", "-c", 'for p; do [ -d /proc/$p ] && echo $p; done; true', "sh", *remote_pids])
    assert alive.stdout.split() == []  # one PID namespace here: far1 sees far2's processes too
    assert unrecorded(rid, [str(one.server.key), str(two.server.key)]) == []
    assert rid not in ledger.known_runs()
