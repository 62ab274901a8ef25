"""The /proc helpers services use to act inside a container without `docker exec` (own process, no root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testbed.errors import TestbedError
from testbed.experiment.services import container_path as _in_container, host_pid


def test_host_pid_maps_a_pid_of_the_same_namespace_to_itself():
    assert host_pid(os.getpid(), os.getpid()) == os.getpid()


def test_host_pid_and_paths_of_a_gone_container_are_testbed_errors():
    with pytest.raises(TestbedError, match="gone"):
        host_pid(2**22 + 12345, 1)
    with pytest.raises(TestbedError, match="gone"):
        _in_container(2**22 + 12345, "/run/echo/pid")
    assert _in_container(os.getpid(), "/run/echo/pid") == Path(f"/proc/{os.getpid()}/root/run/echo/pid")


def test_site_down_does_every_step_even_when_one_host_fails():
    from types import SimpleNamespace

    from testbed.experiment.faults import make_fault
    from testbed.experiment.spec import FaultSpec
    from testbed.experiment.values import Trigger
    from testbed.topology.model import HostSpec, Shape, SiteSpec, TopologySpec, WanLinkSpec

    done = []

    def gone():
        raise RuntimeError("container is not running")

    boxes = {"dead": SimpleNamespace(freeze=gone, thaw=gone),
             "live": SimpleNamespace(freeze=lambda: done.append("pause live"), thaw=lambda: done.append("unpause live"))}
    topo = TopologySpec("t", (SiteSpec("lab", hosts=(HostSpec("dead", "lab", "10.0.0.1/24", image="i"),
                                                      HostSpec("live", "lab", "10.0.0.2/24", image="i"))),
                              SiteSpec("cloud", hosts=())),
                        wan=(WanLinkSpec("lab", "cloud", Shape(), Shape()),))
    tb = SimpleNamespace(topo=topo, node=boxes.__getitem__, wan_link_id=lambda a, b: "wan-lab-cloud",
                         links=SimpleNamespace(set_up=lambda link, up: done.append(f"{link} {up}")))
    site = make_fault(FaultSpec("host_down", "site", Trigger(time_s=0), site="lab"), lambda h: None)
    with pytest.raises(TestbedError, match="dead: container is not running"):
        site.apply(tb, 0.0)
    assert done == ["pause live", "wan-lab-cloud False"]
    with pytest.raises(TestbedError, match="dead"):
        site.undo(tb, 1.0)
    assert done[2:] == ["wan-lab-cloud True", "unpause live"]
