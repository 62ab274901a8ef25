"""The emulation core on real Mininet, OVS, Docker and the os-ken controller."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from testbed.emulation.testbed import Testbed
from testbed.topology.api import MecTopo
from testbed.emulation.dockerhost import DockerHost
from testbed.emulation.selfcheck import site_path
from testbed.topology.loader import load_topology, shipped_topologies
from testbed.topology.model import Shape

from testbed.testing import leftovers, live_processes


def rtt_avg(node, ip: str, count: int = 5) -> float | None:
    """Average ping RTT in ms from `node` to `ip`, None when nothing came back."""
    out = node.cmd("ping", "-c", str(count), "-i", "0.2", "-q", "-W", "2", ip)
    m = re.search(r"= [\d.]+/([\d.]+)/", out)
    return float(m.group(1)) if m else None


def lossy(topo, a: str, b: str) -> bool:
    """Whether the path between hosts `a` and `b` has a link configured to lose packets."""
    site = {h.name: s.name for s in topo.sites for h in s.hosts}
    shapes = [topo.host(a).access, topo.host(b).access]
    shapes += [x for w in site_path(topo, site[a], site[b]) for x in (w.forward, w.reverse)]
    return any(x.loss_pct > 0 for x in shapes)


def two_sites(delay: str = "25ms"):
    t = MecTopo("wan25", subnet="10.9.0.0/24")
    t.addSite("left")
    t.addSite("right")
    t.addHost("c1", site="left", ip="10.9.0.1")
    t.addDocker("d1", site="left", dimage="testbed/echo", ip="10.9.0.11", cpu=0.2)
    t.addDocker("d2", site="right", dimage="testbed/echo", ip="10.9.0.12")
    t.addHost("c2", site="right", ip="10.9.0.2")
    t.addWan("left", "right", delay=delay)
    return t.build()


@pytest.fixture
def wan_bed(tmp_path):
    tb = Testbed(two_sites(), tmp_path / "run", nics=False)
    with tb:
        yield tb
    assert leftovers(tb.rid) == []
    assert live_processes(tb.run_dir) == []


@pytest.mark.parametrize("name", shipped_topologies())
def test_shipped_topology_all_hosts_reach_each_other(tmp_path, name):
    topo = load_topology(name)
    fds = len(os.listdir("/proc/self/fd"))
    tb = Testbed(topo, tmp_path / "run")  # with the fail-safe NICs the topology declares
    with tb:
        hosts = [tb.node(h.name) for h in topo.hosts()]  # not the NICs: they have no kernel address
        assert all(isinstance(h, DockerHost) for h in hosts if topo.host(h.name).is_docker)
        tb.net.ping(hosts, timeout="2")  # the first round also learns MACs and installs flows
        # then every pair answers, except that a path with a lossy link (mec-sites' edge3 WAN, 0.1 % each
        # way) may lose a single ping: such a pair must answer one of three more
        for src, dst, (sent, received, *_) in tb.net.pingFull(hosts, timeout="2"):
            if received < sent:
                assert lossy(topo, src.name, dst.name), f"{src.name} -> {dst.name} lost on a loss-free path"
                assert " 0 received" not in src.cmd("ping", "-c", "3", "-i", "0.2", "-W", "2", dst.IP())
        rows = tb.selfcheck(count=3)
        with_hosts = sum(1 for s in topo.sites if s.hosts)
        pairs = [r for r in rows if r["path"][0] != r["path"][1]]
        assert len(pairs) == with_hosts * (with_hosts - 1) // 2  # every pair of sites with hosts
        inside = sorted(r["dst"] for r in rows if r["path"][0] == r["path"][1])
        assert inside == sorted(h.name for s in topo.sites for h in s.hosts[1:])  # and every other host of a site
        for row in rows:
            assert row["measured"] is not None, row
            # load only adds delay: the average bounds the emulated delay from below, the fastest
            # ping from above (CI: a 0 ms path in fatriot averaged 3.3 ms over 3 parallel pings)
            tolerance = 3.0 + 0.05 * row["configured_rtt_ms"]
            assert row["error_ms"] > -tolerance, row
            assert row["measured"]["min"] - row["configured_rtt_ms"] < tolerance, row
        # the controller installed learned flows next to its table-miss entry
        edge = tb.switch_of[topo.sites[0].name]
        flows = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", edge],
                               capture_output=True, text=True, check=True).stdout
        assert "actions=CONTROLLER" in flows
        assert "dl_dst=" in flows
    assert leftovers(tb.rid) == []
    assert live_processes(tb.run_dir) == []
    assert len(os.listdir("/proc/self/fd")) <= fds + 2  # no engine connections or shells kept (was ~25 a run)


def test_wan_delay_change_and_link_down_up(wan_bed):
    c1 = wan_bed.node("c1")
    assert c1.cmd("ping", "-c", "1", "-W", "2", "10.9.0.2")  # warm up ARP and flows
    rtt = rtt_avg(c1, "10.9.0.2")
    assert rtt is not None and 49.0 <= rtt <= 54.0, rtt
    link = wan_bed.wan_link_id("left", "right")
    wan_bed.links.shape(link, forward=Shape(delay_ms=5), reverse=Shape(delay_ms=5))
    rtt = rtt_avg(c1, "10.9.0.2")
    assert rtt is not None and 9.0 <= rtt <= 13.0, rtt
    wan_bed.links.set_up(link, False)
    assert rtt_avg(c1, "10.9.0.2", count=3) is None
    wan_bed.links.set_up(link, True)
    deadline = time.monotonic() + 15
    while rtt_avg(c1, "10.9.0.2", count=1) is None and time.monotonic() < deadline:
        pass  # the first replies after the link is back also pay for ARP and flow re-learning
    rtt = rtt_avg(c1, "10.9.0.2")
    assert rtt is not None and 9.0 <= rtt <= 13.0, rtt


LOOP = "import time\nt=time.time()+2\nn=0\nwhile time.time()<t: n+=1\nprint(n)"


def spins(node) -> int:
    """Loop iterations a CPU-bound Python loop makes in two seconds inside `node`."""
    out = node.popen(["python3", "-c", LOOP]).communicate(timeout=30)[0]
    return int(out.split()[-1])


def test_cpu_limit_takes_effect_and_changes_at_run_time(wan_bed):
    limited, free = wan_bed.node("d1"), wan_bed.node("d2")
    slow, fast = spins(limited), spins(free)
    assert 0.1 <= slow / fast <= 0.35, (slow, fast)
    limited.update_resources(cpu=1.0)
    assert spins(limited) / fast >= 0.6


def test_docker_host_is_isolated_and_labelled(wan_bed):
    d1 = wan_bed.container("d1")
    d1.reload()
    hc = d1.attrs["HostConfig"]
    assert hc["NetworkMode"] == "none"  # no network of Docker's: the testbed's links only
    assert wan_bed.node("d1").holder is None  # one container per host until one must outlive its service
    assert not hc["Privileged"] and "NET_ADMIN" in hc["CapAdd"]
    assert d1.labels["testbed.run"] == wan_bed.rid
    assert not d1.attrs["NetworkSettings"]["Ports"]
    intfs = wan_bed.node("d1").cmd("ip", "-o", "link")
    assert "d1-eth0" in intfs
    # the main command started after the interfaces were up: the echo service answers
    ask = ("import socket;s=socket.socket(2,2);s.settimeout(2);"
           "s.sendto(b'REQ 1',('10.9.0.11',7000));print(s.recv(99))")
    out = wan_bed.node("c1").popen(["python3", "-c", ask]).communicate(timeout=10)[0].decode()
    assert "@d1" in out
