"""A Containernet-style script on TestbedNet: addDocker, a userspace OVS switch, ping, clean up."""

from __future__ import annotations

from functools import partial

from mininet.node import OVSSwitch

from testbed import clean
from testbed.emulation.net import TestbedNet
from testbed.ledger import Ledger, new_run_id
from testbed.testing import leftovers


def test_add_docker_like_containernet(tmp_path):
    ledger = Ledger(new_run_id(), tmp_path)
    net = TestbedNet(ledger=ledger, controller=None, autoSetMacs=True,
                     switch=partial(OVSSwitch, datapath="user", failMode="standalone"))
    try:
        d1 = net.addDocker("d1", dimage="testbed/echo", ip="10.7.0.1/24", cpu=0.5)
        h1 = net.addHost("h1", ip="10.7.0.2/24")
        s1 = net.addSwitch(f"{ledger.prefix}s1", dpid="1")
        net.addLink(d1, s1, intfName2=f"{ledger.prefix}s1-e1")
        net.addLink(h1, s1, intfName2=f"{ledger.prefix}s1-e2")
        net.start()
        h1.cmd("ethtool", "-K", "h1-eth0", "tx", "off")
        net.ping([d1, h1], timeout="2")
        assert net.ping([d1, h1], timeout="2") == 0.0
        assert d1.container.labels["testbed.run"] == ledger.rid
        # added while the network runs: attached to the switch and ready when addLink returns
        d2 = net.addDocker("d2", dimage="testbed/echo")
        net.addLink(d2, s1, intfName2=f"{ledger.prefix}s1-e3", params1={"ip": "10.7.0.3/24"})
        assert net.ping([h1], manualdestip="10.7.0.3", timeout="2") == 0.0
        net.removeDocker("d2")
        assert "d2" not in net and net.ping([h1], manualdestip="10.7.0.3", timeout="1") == 100.0
    finally:
        net.stop()
        clean.clean_run(ledger.rid)
    assert leftovers(ledger.rid) == []
