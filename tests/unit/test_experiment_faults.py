"""Fault scheduling (fake clock) and fault actions against a fake testbed; report regeneration from CSVs."""

from __future__ import annotations

import csv
import json
import math
import os

import pytest

from testbed.experiment.faults import make_fault
from testbed.experiment.metrics import EVENT_FIELDS, PACKET_FIELDS
from testbed.experiment.report import report_main
from testbed.experiment.schedule import Due, FaultSchedule
from testbed.errors import TestbedError
from testbed.experiment.spec import FaultSpec, ServiceRun
from testbed.experiment.values import Trigger
from testbed.topology.model import HostSpec, Shape, SiteSpec, TopologySpec, WanLinkSpec


def test_packet_triggers_apply_then_undo_once():
    f = FaultSpec("delay", "app", Trigger(packet=40), host="mec1", until=Trigger(packet=80), delay_ms=50)
    s = FaultSchedule([f], "probe")
    assert s.on_sent("probe", 39, 3.8) == []
    assert s.on_sent("probe", 40, 3.9) == [Due(0, "apply")]
    assert s.on_sent("probe", 41, 4.0) == []
    assert s.on_sent("probe", 80, 7.9) == [Due(0, "undo")]
    assert s.on_sent("probe", 81, 8.0) == [] and s.leftovers() == []


def test_time_triggers_and_for_duration_with_fake_clock():
    f = FaultSpec("service_down", "kill", Trigger(time_s=5.0), host="mec1", duration_s=3.0)
    s = FaultSchedule([f], None)
    assert s.next_deadline() == 5.0
    assert s.poll(4.99) == []
    assert s.poll(5.2) == [Due(0, "apply")]
    assert s.next_deadline() == pytest.approx(8.2)
    assert s.poll(8.1) == []
    assert s.poll(8.3) == [Due(0, "undo")]
    assert s.next_deadline() == math.inf


def test_faults_without_undo_are_never_undone_and_leftovers_are_undone_at_the_end():
    kill = FaultSpec("host_down", "kill", Trigger(packet=5), host="mec1")
    freeze = FaultSpec("host_down", "freeze", Trigger(packet=5), host="mec2", until=Trigger(packet=50))
    s = FaultSchedule([kill, freeze], "probe")
    assert s.on_sent("probe", 5, 0.5) == [Due(0, "apply"), Due(1, "apply")]
    assert s.on_sent("probe", 20, 2.0) == []  # the probe ended early (count 20)
    assert s.leftovers() == [Due(1, "undo")]


def test_packet_trigger_counts_its_own_probe():
    f = FaultSpec("host_down", "freeze", Trigger(packet=3), host="mec1", probe="tcp")
    s = FaultSchedule([f], "udp")
    assert s.on_sent("udp", 10, 1.0) == []
    assert s.on_sent("tcp", 3, 1.0) == [Due(0, "apply")]
    assert s.never_applied() == []


class FakeContainer:
    def __init__(self, log, name):
        self.log, self.name = log, name

    def kill(self):
        self.log.append(("kill", self.name))


class FakeLinks:
    def __init__(self, log):
        self.log = log

    def shape(self, link_id, forward=None, reverse=None):
        self.log.append(("shape", link_id, forward, reverse))

    def set_up(self, link_id, up):
        self.log.append(("set_up", link_id, up))


class FakeNode:
    """A Docker host's failure-mode API, logged; its container's file system is this process's."""

    def __init__(self, log, name):
        self.log, self.name = log, name
        self.cpid = self.pid = os.getpid()
        self.sidecars = {"web": FakeContainer(log, f"{name}-web")}

    def update_resources(self, cpu=None):
        self.log.append(("cpu", self.name, cpu))

    def freeze(self):
        self.log.append(("pause", self.name))

    def thaw(self):
        self.log.append(("unpause", self.name))

    def crash(self):
        self.log.append(("crash", self.name))

    def recover(self):
        self.log.append(("recover", self.name))

    def restart_sidecar(self, key):
        self.log.append(("restart", self.sidecars[key].name))


class FakeTestbed:
    """Just enough of the Testbed API for faults: records what was asked."""

    def __init__(self):
        self.log = []
        self.topo = TopologySpec("t", (
            SiteSpec("lab", hosts=(HostSpec("mec1", "lab", "10.0.0.11/24", image="testbed/echo", cpu=1.0),
                                   HostSpec("cli", "lab", "10.0.0.2/24"))),
            SiteSpec("cloud", hosts=())), wan=(WanLinkSpec("lab", "cloud", Shape(delay_ms=10), Shape(delay_ms=12)),))
        self.links = FakeLinks(self.log)
        self.nodes = {}

    def node(self, name):
        return self.nodes.setdefault(name, FakeNode(self.log, name))

    def set_interfaces(self, host, up):
        self.log.append(("ifaces", host, up))

    def wan_link_id(self, a, b):
        return "wan-lab-cloud"

    def access_link_id(self, host):
        return f"acc-{host}"


def test_fault_actions_on_fake_testbed():
    tb, restarted = FakeTestbed(), []
    at = Trigger(time_s=1.0)
    cases = [
        (FaultSpec("host_down", "freeze", at, host="mec1"), [("pause", "mec1")], [("unpause", "mec1")]),
        (FaultSpec("host_down", "isolate", at, host="cli"), [("ifaces", "cli", False)], [("ifaces", "cli", True)]),
        (FaultSpec("delay", "cpu", at, host="mec1", cpu=0.05), [("cpu", "mec1", 0.05)], [("cpu", "mec1", 1.0)]),
        (FaultSpec("network", "shape", at, link=("lab", "cloud"), down=True),
         [("set_up", "wan-lab-cloud", False)], [("set_up", "wan-lab-cloud", True)]),
        (FaultSpec("network", "shape", at, link=("lab", "cloud"), delay_ms=50, loss_pct=5),
         [("shape", "wan-lab-cloud", Shape(delay_ms=50, loss_pct=5), Shape(delay_ms=50, loss_pct=5))],
         [("shape", "wan-lab-cloud", Shape(delay_ms=10), Shape(delay_ms=12))]),
        (FaultSpec("delay", "link", at, host="mec1", delay_ms=20),
         [("shape", "acc-mec1", Shape(delay_ms=20), Shape(delay_ms=20))], [("shape", "acc-mec1", Shape(), Shape())]),
        (FaultSpec("host_down", "site", at, site="lab"),
         [("pause", "mec1"), ("ifaces", "cli", False), ("set_up", "wan-lab-cloud", False)],
         [("set_up", "wan-lab-cloud", True), ("unpause", "mec1"), ("ifaces", "cli", True)]),
    ]
    for spec, applied, undone in cases:
        fault = make_fault(spec, restarted.append)
        tb.log.clear()
        fault.apply(tb, 0.0)
        assert tb.log == applied, spec
        tb.log.clear()
        fault.undo(tb, 1.0)
        assert tb.log == undone, spec


def test_app_delay_service_down_and_kill(tmp_path):
    tb, restarted = FakeTestbed(), []
    control = tmp_path / "delay_ms"
    echo = ServiceRun("mec1", "echo", delay_control=str(control))
    delay = make_fault(FaultSpec("delay", "app", Trigger(packet=1), host="mec1", delay_ms=50), restarted.append, [echo])
    delay.apply(tb, 0)
    assert control.read_text() == "50\n"
    delay.undo(tb, 0)
    assert control.read_text() == "0\n"
    web = ServiceRun("mec1", "web", image="somebody/web")  # another image: a container of its own
    down = make_fault(FaultSpec("service_down", "kill", Trigger(packet=1), host="mec1", service="web"),
                      restarted.append, [echo, web])
    assert down.apply(tb, 0) == "container of web killed"
    assert tb.log[-1] == ("kill", "mec1-web")
    down.undo(tb, 0)
    assert tb.log[-1] == ("restart", "mec1-web")
    kill = make_fault(FaultSpec("host_down", "kill", Trigger(packet=1), host="mec1"), restarted.append)
    assert kill.can_undo
    kill.apply(tb, 0)
    assert tb.log[-1] == ("crash", "mec1")
    kill.undo(tb, 0)
    assert tb.log[-1] == ("recover", "mec1") and restarted == ["mec1"]


def test_delay_app_needs_a_declared_delay_control():
    tb = FakeTestbed()
    plain = ServiceRun("mec1", "web", image="somebody/web")
    delay = make_fault(FaultSpec("delay", "app", Trigger(packet=1), host="mec1", delay_ms=5, service="web"),
                       lambda h: None, [plain])
    with pytest.raises(TestbedError, match="declares no delay_control"):
        delay.apply(tb, 0)


def test_report_regenerates_from_csvs(tmp_path):
    with open(tmp_path / "packets.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(PACKET_FIELDS)
        for variant in ("with-nic", "without-nic"):
            for seq in range(1, 41):
                lost = variant == "without-nic" and seq > 20
                node = "mec1" if seq <= 20 else "mec2"
                w.writerow([variant, 0, seq, 100 + seq / 10, "" if lost else 1.0, "" if lost else node, "probe"])
    with open(tmp_path / "events.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(EVENT_FIELDS)
        for variant in ("with-nic", "without-nic"):
            w.writerow([102.05, variant, 0, "host_down", "apply", "mec1", "kill: docker kill"])
        w.writerow([102.2, "with-nic", 0, "nic", "activate", "mec1/echo-udp", "timeout"])
    (tmp_path / "manifest.json").write_text(json.dumps({
        "experiment": "t", "primaries": {"with-nic": "mec1", "without-nic": "mec1"},
        "spec": {"variants": [{"name": "with-nic", "nic": True}, {"name": "without-nic", "nic": False}],
                 "claims": ["the paper says so"], "faults": [], "traffic": []},
        "runs": [{"variant": "with-nic", "repetition": 0, "backends": {"link": "userspace", "ovs_datapath": "userspace"}}]}))
    report = report_main(tmp_path)
    text = report.read_text()
    assert "userspace link emulator" in text and "the paper says so" in text
    assert "| with-nic | 1 | 1.000 | 1.000 |" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["variants"]["without-nic"]["aggregate"]["delivered_ratio_after_fault"]["mean"] == 0.0
    for png in ("rtt.png", "delivery.png", "bars.png"):
        assert (tmp_path / png).stat().st_size > 1000
