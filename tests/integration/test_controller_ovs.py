"""Integration test: the launched os-ken learning switch drives two userspace OVS bridges."""

from __future__ import annotations

import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed import proc
from testbed.controller import Controller
from testbed.ledger import Ledger, new_run_id

pytestmark = pytest.mark.integration

H1_IP, H2_IP = "10.77.0.1", "10.77.0.2"


@dataclass
class Net:
    """The two bridges and two namespaces this test made."""

    tag: str
    bridges: list[str]
    netns: list[str]
    host_ports: list[str]  # root-side veth ends, one per bridge

    def exists(self) -> list[str]:
        """The names of this test's bridges, namespaces and interfaces that still exist."""
        left = [b for b in self.bridges
                if proc.run(["ovs-vsctl", "br-exists", b], check=False).returncode == 0]
        left += [n for n in self.netns if Path(f"/run/netns/{n}").exists()]
        left += [i for i in self.host_ports if Path(f"/sys/class/net/{i}").exists()]
        return left


def _needs() -> str | None:
    """Why this test cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ovs-vsctl", "ovs-ofctl", "ip", "ethtool", "ping"):
        if proc.which(tool) is None:
            return f"{tool} not installed"
    if proc.run(["ovs-vsctl", "--timeout=5", "show"], check=False).returncode != 0:
        return "ovsdb-server/ovs-vswitchd not running"
    return None


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(new_run_id(tmp_path), tmp_path / "run", state_dir=tmp_path)


@pytest.fixture
def net(ledger: Ledger):
    """ns1 - br1 = patch = br2 - ns2, userspace datapath, secure fail mode; always removed."""
    why = _needs()
    if why:
        pytest.skip(why)
    tag = "tcctl" + secrets.token_hex(2)
    n = Net(tag, [f"{tag}b1", f"{tag}b2"], [f"{tag}n1", f"{tag}n2"], [f"{tag}h1", f"{tag}h2"])
    try:
        for i, (br, ns, hport) in enumerate(zip(n.bridges, n.netns, n.host_ports), start=1):
            ledger.record("ovs_bridge", br)
            proc.run(["ovs-vsctl", "add-br", br, "--", "set", "bridge", br,
                      "datapath_type=netdev", "protocols=OpenFlow13", "fail_mode=secure"])
            ledger.record("netns", ns)
            proc.run(["ip", "netns", "add", ns])
            ledger.record("interface", hport)
            proc.run(["ip", "link", "add", hport, "type", "veth", "peer", "name", f"{tag}e{i}"])
            proc.run(["ip", "link", "set", f"{tag}e{i}", "netns", ns, "name", "eth0"])
            proc.run(["ip", "addr", "add", f"10.77.0.{i}/24", "dev", "eth0"], netns=ns)
            proc.run(["ip", "link", "set", "eth0", "up"], netns=ns)
            proc.run(["ethtool", "-K", "eth0", "tx", "off"], netns=ns)
            proc.run(["ip", "link", "set", hport, "up"])
            proc.run(["ovs-vsctl", "add-port", br, hport, "--", "set", "interface", hport,
                      "ofport_request=1"])
        p1, p2 = f"{tag}p1", f"{tag}p2"
        proc.run(["ovs-vsctl", "add-port", n.bridges[0], p1, "--", "set", "interface", p1,
                  "type=patch", f"options:peer={p2}", "ofport_request=2"])
        proc.run(["ovs-vsctl", "add-port", n.bridges[1], p2, "--", "set", "interface", p2,
                  "type=patch", f"options:peer={p1}", "ofport_request=2"])
        yield n
    finally:
        for br in n.bridges:
            proc.run(["ovs-vsctl", "--if-exists", "del-br", br], check=False)
        for ns in n.netns:
            proc.run(["ip", "netns", "del", ns], check=False)
        for hport in n.host_ports:
            if Path(f"/sys/class/net/{hport}").exists():
                proc.run(["ip", "link", "del", hport], check=False)
        assert n.exists() == [], "test resources left behind"


@pytest.fixture
def controller(ledger: Ledger):
    """A launched controller, always stopped."""
    ctl = Controller()
    try:
        yield ctl
    finally:
        pid = ctl.pid
        ctl.stop()
        if pid is not None:
            assert not Path(f"/proc/{pid}").exists() or "Z" in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def learnt_flows(bridge: str) -> list[str]:
    """The flow lines of `bridge` that the learning switch installed (its cookie)."""
    out = proc.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge]).stdout
    return [line for line in out.splitlines() if "cookie=0x1ea4" in line]


def mac_of(ns: str) -> str:
    return proc.run(["cat", "/sys/class/net/eth0/address"], netns=ns).stdout.strip()


def test_learning_switch_forwards_and_installs_flows(net: Net, controller: Controller,
                                                     ledger: Ledger) -> None:
    port = controller.start(ledger.run_dir, ledger)
    records = (ledger.run_dir / "resources.jsonl").read_text()
    assert f'"name": "{controller.pid}"' in records and '"what": "controller"' in records
    assert controller.target == f"tcp:127.0.0.1:{port}"
    assert {"ping", "steer", "topology", "unsteer", "steers"} <= set(controller.commands())
    for br in net.bridges:
        proc.run(["ovs-vsctl", "set-controller", br, controller.target])
    controller.wait_connected(net.bridges, timeout=15)

    result = proc.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", H2_IP], netns=net.netns[0],
                      check=False)
    assert result.ok, result.stdout + result.stderr
    mac1, mac2 = mac_of(net.netns[0]), mac_of(net.netns[1])
    for br in net.bridges:
        flows = learnt_flows(br)
        assert any(f"dl_dst={mac1}" in f for f in flows), flows
        assert any(f"dl_dst={mac2}" in f for f in flows), flows
        assert any(f"dl_src={mac1}" in f and "goto_table:1" in f for f in flows), flows
    # br2: h2 is on port 1: its source flow (table 0) carries the timeouts, its destination flow (table 1) outputs there.
    (from_h2,) = [f for f in learnt_flows(net.bridges[1]) if f"dl_src={mac2}" in f]
    assert "table=0" in from_h2 and "in_port=1" in from_h2, from_h2
    assert re.search(r"idle_timeout=30\b", from_h2) and re.search(r"hard_timeout=300\b", from_h2), from_h2
    (to_h2,) = [f for f in learnt_flows(net.bridges[1]) if f"dl_dst={mac2}" in f]
    assert "table=1" in to_h2 and "actions=output:1" in to_h2, to_h2

    # A host port going down deletes the flows towards it (failover relearns).
    proc.run(["ip", "link", "set", net.host_ports[1], "down"])
    deadline = time.monotonic() + 5
    while any(f"dl_dst={mac2}" in f for f in learnt_flows(net.bridges[1])):
        assert time.monotonic() < deadline, learnt_flows(net.bridges[1])
        time.sleep(0.05)
    proc.run(["ip", "link", "set", net.host_ports[1], "up"])
    result = proc.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", H2_IP], netns=net.netns[0],
                      check=False)
    assert result.ok, result.stdout + result.stderr

    controller.stop()
    assert not controller.alive()


def test_wait_connected_names_unconnected_bridges(net: Net) -> None:
    from testbed.controller import free_port, wait_connected
    from testbed.errors import TestbedError

    proc.run(["ovs-vsctl", "set-controller", net.bridges[0], f"tcp:127.0.0.1:{free_port()}"])
    with pytest.raises(TestbedError, match=net.bridges[0]) as err:
        wait_connected(net.bridges, timeout=0.5)
    assert net.bridges[1] in str(err.value)  # no controller at all: also not connected


def test_start_retries_when_its_port_is_taken(controller: Controller, ledger: Ledger,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from testbed import controller as ctl_mod

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = iter([busy, ctl_mod.free_port()])
        monkeypatch.setattr(ctl_mod, "free_port", lambda host="127.0.0.1": next(ports))
        port = controller.start(ledger.run_dir, ledger)
        assert port != busy and controller.alive()
        assert "is in use" in (ledger.run_dir / "controller.log").read_text()
    lines = (ledger.run_dir / "resources.jsonl").read_text().splitlines()
    recorded = [l for l in lines if '"kind": "process"' in l and '"what": "controller"' in l]
    assert len(recorded) == 2  # the attempt that found its port taken was recorded too


def test_an_idle_source_is_forgotten_with_the_flow_towards_it(net: Net, controller: Controller,
                                                              ledger: Ledger) -> None:
    controller.start(ledger.run_dir, ledger, config={"idle_timeout": 1})
    for br in net.bridges:
        proc.run(["ovs-vsctl", "set-controller", br, controller.target])
    controller.wait_connected(net.bridges, timeout=15)
    result = proc.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", H2_IP], netns=net.netns[0], check=False)
    assert result.ok, result.stdout + result.stderr
    mac2 = mac_of(net.netns[1])
    assert [f for f in learnt_flows(net.bridges[1]) if f"dl_dst={mac2}" in f]
    # h2 falls silent: the switch expires its source flow and the controller, told so, deletes the one towards it.
    deadline = time.monotonic() + 10
    while any(mac2 in f for f in learnt_flows(net.bridges[1])):
        assert time.monotonic() < deadline, learnt_flows(net.bridges[1])
        time.sleep(0.1)
    result = proc.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", H2_IP], netns=net.netns[0], check=False)
    assert result.ok, result.stdout + result.stderr  # learnt afresh


def test_a_user_ryu_style_app_with_its_config(net: Net, controller: Controller, ledger: Ledger) -> None:
    controller.start(ledger.run_dir, ledger, app="controllers/simple_switch_13.py",
                     config={"idle_timeout": 40})
    assert controller.commands() == ["ping"]  # no northbound commands of its own; ready by ping + OpenFlow
    assert '"idle_timeout": 40' in (ledger.run_dir / "controller-config.json").read_text()
    for br in net.bridges:
        proc.run(["ovs-vsctl", "set-controller", br, controller.target])
    controller.wait_connected(net.bridges, timeout=15)
    result = proc.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", H2_IP], netns=net.netns[0], check=False)
    assert result.ok, result.stdout + result.stderr
    flows = proc.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", net.bridges[1]]).stdout
    assert "idle_timeout=40" in flows and "dl_dst=" in flows, flows  # its flows, with the config's timeout
