"""The NIC lab's kernel relay (nic_bench's same-path baseline) as a plan: argument lists, no root."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.failsafe.labnet import BACKUP_IP, CLIENT_IP, MAIN_IP, NIC_IP, Lab
from testbed.ledger import Ledger


def lab(tmp_path: Path, nic: bool) -> Lab:
    return Lab("tbzz", Ledger("ab01", run_dir=tmp_path, state_dir=tmp_path / "state"), tmp_path, nic=nic)


def test_relay_routes_both_ways_through_the_nic_namespace(tmp_path: Path) -> None:
    plan = lab(tmp_path, nic=False).relay_plan()
    routes = {(c[2], c[5]) for c in plan if c[:2] == ["ip", "-n"] and c[3:5] == ["route", "add"]}
    assert routes == {("tbzzc", f"{BACKUP_IP}/32"), ("tbzzc", f"{MAIN_IP}/32"), ("tbzzb", f"{CLIENT_IP}/32")}
    assert all(c[-2:] == ["via", NIC_IP] for c in plan if "route" in c)
    assert ["ip", "-n", "tbzzn", "addr", "add", f"{NIC_IP}/24", "dev", "br0"] in plan


def test_relay_nat_rewrites_only_the_main_hosts_address(tmp_path: Path) -> None:
    rules = [c[c.index("-A") + 1:] for c in lab(tmp_path, nic=False).relay_plan() if "iptables" in c]
    assert ["PREROUTING", "-d", MAIN_IP, "-j", "DNAT", "--to-destination", BACKUP_IP] in rules
    (snat,) = [r for r in rules if r[0] == "POSTROUTING"]
    assert snat[-2:] == ["--to-source", NIC_IP] and "DNAT" in snat[:snat.index("-j")]  # forwarded traffic keeps its source


def test_relay_needs_the_bridge_lab(tmp_path: Path) -> None:
    with pytest.raises(AssertionError):
        lab(tmp_path, nic=True).relay_plan()
