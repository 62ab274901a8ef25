"""bench/switch_relay.py's bridge and namespaces as a plan: argument lists, no root."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("switch_relay", Path(__file__).parents[2] / "bench" / "switch_relay.py")
switch_relay = importlib.util.module_from_spec(spec)
spec.loader.exec_module(switch_relay)


def ports(plan: list[list[str]]) -> list[list[str]]:
    return [c for c in plan if c[:2] == ["ovs-vsctl", "add-port"]]


def test_system_ports_are_plain_add_port() -> None:
    added = ports(switch_relay.plan("tbzz", "ab01"))
    assert added == [["ovs-vsctl", "add-port", "tbzzbr", f"tbzz{k}o"] for k in switch_relay.HOSTS]


@pytest.mark.parametrize("kind", ["afxdp", "afxdp-nonpmd"])
def test_afxdp_ports_set_the_interface_type(kind: str) -> None:
    for cmd in ports(switch_relay.plan("tbzz", "ab01", kind)):
        assert cmd[4:] == ["--", "set", "interface", cmd[3], f"type={kind}"]


def test_the_bridge_is_userspace_and_labelled() -> None:
    (br,) = [c for c in switch_relay.plan("tbzz", "ab01") if c[:2] == ["ovs-vsctl", "add-br"]]
    assert "datapath_type=netdev" in br and any(a.endswith("=ab01") for a in br)
