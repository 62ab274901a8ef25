"""A BPF NIC behind an emulated access link: the link emulator's namespace never sees the host's frames as its own.

With the access link emulated, nic-h's veth peer is the link emulator's inner end, not the host's
interface. Frames redirected into that peer typed PACKET_HOST (bpf_redirect_peer) would each go up
the emulator namespace's IP stack, to be dropped there after a route lookup (IpExtInNoRoutes).
"""

from __future__ import annotations

import json
import os

import pytest

from testbed import proc
from testbed.emulation.testbed import Testbed
from testbed.failsafe.control import call
from testbed.testing import leftovers, live_processes
from testbed.topology.api import MecTopo

pytestmark = pytest.mark.integration


def ip_in(netns: str) -> int:
    """IPv4 datagrams the IP stack of `netns` has received."""
    out = proc.run(["nstat", "-asz", "-j", "IpInReceives"], netns=netns, timeout=10).stdout
    return int(json.loads(out)["kernel"].get("IpInReceives", 0))


def test_emulated_access_link_keeps_the_host_frames_out_of_the_emulators_stack(tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    t = MecTopo("emuaccess", subnet="10.0.0.0/24")
    t.addSite("lab")
    t.addDocker("gen", site="lab", dimage="testbed/probe", ip="10.0.0.1")
    t.addDocker("mec1", site="lab", dimage="testbed/echo", ip="10.0.0.11", access={"delay": "0.3ms"},
                nic=t.nic(ip="10.0.0.111", backups=["mec2"], services=[t.service("echo-udp", "udp", 7000)],
                          datapath="bpf"))
    t.addDocker("mec2", site="lab", dimage="testbed/echo", ip="10.0.0.12")
    tb = Testbed(t.build(), tmp_path / "run")
    with tb:
        assert "bpf: mec1" in tb.backends()["nic"], tb.backends()
        assert call(tb.nic_socket("mec1"), "show")["config"]["host_is_peer"] is False
        netns = tb.links.netns  # type: ignore[union-attr]
        before = ip_in(netns)
        out = tb.node("gen").cmd("python3 /app/probe.py --target 10.0.0.11:7000 --rate 200 --count 400 --timeout 1")
        rows = [line.split(",") for line in out.splitlines() if line[:1].isdigit()]
        received = ip_in(netns) - before
    answered = [r for r in rows if r[4].strip() == "mec1"]
    assert len(rows) == 400 and len(answered) >= 396, out[-500:]
    # 400 requests went through the emulator to the host: none of them (nor the replies) up its IP stack
    assert received < 10, received
    assert leftovers(tb.rid) == []
    assert live_processes(tb.run_dir) == []
