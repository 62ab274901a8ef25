"""A site bigger than one terminal line of ovs-vsctl: 120 Docker hosts on one switch come up and answer pings.

Mininet would send the switch's `ovs-vsctl add-br … add-port …` (~4,095 characters hold ~43 ports)
through a shell and lose the rest; TestbedSwitch makes bridges and ports by argument lists.
"""

from __future__ import annotations

import re

from testbed import proc
from testbed.emulation.testbed import Testbed
from testbed.testing import leftovers, live_processes
from testbed.topology.api import MecTopo

HOSTS = 120
IMAGE = "testbed/base"  # no service to wait for: the test is about the switch


def one_big_site():
    t = MecTopo("scale120", subnet="10.88.0.0/24")
    t.addSite("edge")
    for i in range(HOSTS):
        t.addDocker(f"d{i + 1}", site="edge", dimage=IMAGE, ip=f"10.88.0.{10 + i}")
    return t.build()


def received(pid: int, ip: str) -> int:
    """Echo replies out of 3 from the namespace of `pid` to `ip` (one warm-up ping first, not counted)."""
    proc.run(["nsenter", f"--target={pid}", "--net", "ping", "-n", "-c", "1", "-W", "2", ip], check=False)
    out = proc.run(["nsenter", f"--target={pid}", "--net", "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", ip],
                   check=False).stdout
    m = re.search(r"(\d+) received", out)
    return int(m.group(1)) if m else 0


def test_one_site_with_120_docker_hosts(tmp_path):
    topo = one_big_site()
    tb = Testbed(topo, tmp_path / "run", nics=False)
    with tb:
        bridge = tb.switch_of["edge"]
        ports = proc.run(["ovs-vsctl", "list-ports", bridge]).stdout.split()
        assert len(ports) == HOSTS, f"{bridge} has {len(ports)} ports"
        hosts = [h.name for h in topo.hosts()]
        sample = [(hosts[0], hosts[-1]), (hosts[-1], hosts[0]), (hosts[43], hosts[44]), (hosts[90], hosts[7]),
                  (hosts[60], hosts[119])]
        for src, dst in sample:
            got = received(tb.node(src).pid, topo.host(dst).ip.split("/")[0])
            assert got >= 2, f"{src} -> {dst}: {got} of 3 replies"
    assert leftovers(tb.rid) == []
    assert live_processes(tb.run_dir) == []
