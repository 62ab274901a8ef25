"""Unit tests of the netem link backend: the tc/ip argument lists it plans, and what it runs where."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed import errors, proc
from testbed.ledger import Ledger
from testbed.links import netem
from testbed.links.base import LinkEnds
from testbed.links.netem import NetemBackend, create_cmds, in_netns, num, shape_cmds, tx_off_cmds
from testbed.topology.model import Shape

X = "tb1234x"
HTB_ROOT = ["tc", "qdisc", "add", "dev", X, "root", "handle", "5:", "htb", "default", "1"]
DEAD_PID = 99_999_999  # above the kernel's pid_max limit
DEL_ROOT = ["tc", "qdisc", "del", "dev", X, "root"]


def htb_class(verb: str, rate: str) -> list[str]:
    return ["tc", "class", verb, "dev", X, "parent", "5:", "classid", "5:1", "htb", "rate", rate]


def leaf(verb: str, *args: str) -> list[str]:
    return ["tc", "qdisc", verb, "dev", X, "parent", "5:1", "handle", "10:", *args]


def root_leaf(verb: str, *args: str) -> list[str]:
    return ["tc", "qdisc", verb, "dev", X, "root", "handle", "10:", *args]


@pytest.mark.parametrize("x,text", [(10, "10"), (0.5, "0.5"), (0.001, "0.001"), (1e-5, "0.00001"),
                                    (100.0, "100"), (0, "0")])
def test_num_has_no_exponent_or_trailing_zeros(x: float, text: str) -> None:
    assert num(x) == text


def test_delay_only() -> None:
    assert shape_cmds(X, Shape(delay_ms=10)) == [root_leaf("add", "netem", "delay", "10ms")]


def test_delay_and_jitter() -> None:
    assert shape_cmds(X, Shape(delay_ms=10, jitter_ms=1.5)) == [
        root_leaf("add", "netem", "delay", "10ms", "1.5ms")]


def test_jitter_without_delay() -> None:
    assert shape_cmds(X, Shape(jitter_ms=2)) == [root_leaf("add", "netem", "delay", "0ms", "2ms")]


def test_loss_only() -> None:
    assert shape_cmds(X, Shape(loss_pct=0.1)) == [
        root_leaf("add", "netem", "delay", "0ms", "loss", "0.1%")]


def test_rate_only() -> None:
    assert shape_cmds(X, Shape(bw_mbit=100)) == [HTB_ROOT, htb_class("add", "100mbit")]


def test_rate_and_delay_puts_netem_under_htb() -> None:
    assert shape_cmds(X, Shape(bw_mbit=20, delay_ms=5, loss_pct=1)) == [
        HTB_ROOT, htb_class("add", "20mbit"),
        leaf("add", "netem", "delay", "5ms", "loss", "1%")]


def test_queue_limit_with_netem() -> None:
    assert shape_cmds(X, Shape(delay_ms=5, queue_pkts=50)) == [
        root_leaf("add", "netem", "delay", "5ms", "limit", "50")]


def test_queue_limit_with_rate_only_uses_pfifo() -> None:
    assert shape_cmds(X, Shape(bw_mbit=10, queue_pkts=30)) == [
        HTB_ROOT, htb_class("add", "10mbit"), leaf("add", "pfifo", "limit", "30")]


def test_queue_limit_alone_uses_root_pfifo() -> None:
    assert shape_cmds(X, Shape(queue_pkts=30)) == [root_leaf("add", "pfifo", "limit", "30")]


def test_unshaped_fresh_link_needs_nothing() -> None:
    assert shape_cmds(X, Shape()) == []


def test_change_same_structure_in_place() -> None:
    old = Shape(bw_mbit=20, delay_ms=5)
    assert shape_cmds(X, Shape(bw_mbit=50, delay_ms=7, jitter_ms=1), previous=old) == [
        htb_class("change", "50mbit"), leaf("change", "netem", "delay", "7ms", "1ms")]


def test_change_netem_at_root_in_place() -> None:
    assert shape_cmds(X, Shape(delay_ms=20, loss_pct=5), previous=Shape(delay_ms=10)) == [
        root_leaf("change", "netem", "delay", "20ms", "loss", "5%")]


def test_change_rate_only_in_place() -> None:
    assert shape_cmds(X, Shape(bw_mbit=1), previous=Shape(bw_mbit=100)) == [
        htb_class("change", "1mbit")]


def test_change_of_structure_rebuilds() -> None:
    assert shape_cmds(X, Shape(delay_ms=10), previous=Shape(bw_mbit=10)) == [
        DEL_ROOT, root_leaf("add", "netem", "delay", "10ms")]
    assert shape_cmds(X, Shape(bw_mbit=10, delay_ms=1), previous=Shape(bw_mbit=10)) == [
        DEL_ROOT, HTB_ROOT, htb_class("add", "10mbit"), leaf("add", "netem", "delay", "1ms")]


def test_zero_shape_removes_qdiscs() -> None:
    assert shape_cmds(X, Shape(), previous=Shape(bw_mbit=10, delay_ms=1)) == [DEL_ROOT]
    assert shape_cmds(X, Shape(), previous=Shape(delay_ms=1)) == [DEL_ROOT]
    assert shape_cmds(X, Shape(), previous=Shape()) == []


def test_in_netns() -> None:
    assert in_netns(None, ["ip", "a"]) == ["ip", "a"]
    assert in_netns(42, ["ip", "a"]) == ["nsenter", "-t", "42", "-n", "--", "ip", "a"]


def test_create_moves_namespaced_ends_under_temporary_names() -> None:
    ends = LinkEnds("l1", "eth0", 100, "s1-eth1", None)
    assert create_cmds(ends, "tmpa", "tmpb") == [
        ["ip", "link", "add", "tmpa", "type", "veth", "peer", "name", "s1-eth1"],
        ["ip", "link", "set", "dev", "tmpa", "netns", "100", "name", "eth0"],
        ["nsenter", "-t", "100", "-n", "--", "ip", "link", "set", "dev", "eth0", "up"],
        ["ip", "link", "set", "dev", "s1-eth1", "up"],
    ]


def test_tx_off_runs_in_each_ends_namespace() -> None:
    assert tx_off_cmds(LinkEnds("l", "eth0", 9, "s1-eth1", None)) == [
        ["nsenter", "-t", "9", "-n", "--", "ethtool", "-K", "eth0", "tx", "off"],
        ["ethtool", "-K", "s1-eth1", "tx", "off"],
    ]


class Recorder:
    """Stands in for proc.run: records commands, fails none."""

    def __init__(self) -> None:
        self.cmds: list[list[str]] = []

    def __call__(self, args, **kwargs) -> proc.Result:
        self.cmds.append(list(args))
        return proc.Result(list(args), 0, "", "")


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rec = Recorder()
    monkeypatch.setattr(netem.proc, "run", rec)
    ledger = Ledger("1234", tmp_path / "run", state_dir=tmp_path)
    return NetemBackend(ledger), rec, ledger


def records(ledger: Ledger) -> list[dict]:
    return [json.loads(l) for l in (ledger.run_dir / "resources.jsonl").read_text().splitlines()]


def test_backend_create_records_then_runs_in_the_right_namespaces(backend) -> None:
    b, rec, ledger = backend
    ends = LinkEnds("a-b", "tb1234a", 11, "tb1234b", 22)
    b.create(ends, Shape(delay_ms=10), Shape(bw_mbit=5))
    assert rec.cmds[0] == ["ip", "link", "add", "tb1234n0a", "type", "veth", "peer", "name",
                           "tb1234n0b"]
    assert ["nsenter", "-t", "22", "-n", "--", "ethtool", "-K", "tb1234b", "tx", "off"] in rec.cmds
    assert ["nsenter", "-t", "11", "-n", "--", "tc", "qdisc", "add", "dev", "tb1234a", "root",
            "handle", "10:", "netem", "delay", "10ms"] in rec.cmds
    assert ["nsenter", "-t", "22", "-n", "--", "tc", "class", "add", "dev", "tb1234b", "parent",
            "5:", "classid", "5:1", "htb", "rate", "5mbit"] in rec.cmds
    kinds = [(r["kind"], r["name"]) for r in records(ledger)]
    assert kinds == [("interface", "tb1234a"), ("interface", "tb1234b"),
                     ("qdisc", "tb1234a"), ("qdisc", "tb1234b")]


def test_backend_shape_changes_only_given_direction(backend) -> None:
    b, rec, _ = backend
    b.create(LinkEnds("l", "tb1234a", None, "tb1234b", None), Shape(delay_ms=10), Shape())
    rec.cmds.clear()
    b.shape("l", forward=Shape(delay_ms=30))
    assert rec.cmds == [["tc", "qdisc", "change", "dev", "tb1234a", "root", "handle", "10:",
                         "netem", "delay", "30ms"]]
    rec.cmds.clear()
    b.shape("l", reverse=Shape(bw_mbit=1))
    assert rec.cmds == [HTB_ROOT[:4] + ["tb1234b"] + HTB_ROOT[5:],
                        ["tc", "class", "add", "dev", "tb1234b", "parent", "5:", "classid", "5:1",
                         "htb", "rate", "1mbit"]]
    rec.cmds.clear()
    b.shape("l", forward=Shape(), reverse=Shape())
    assert rec.cmds == [["tc", "qdisc", "del", "dev", "tb1234a", "root"],
                        ["tc", "qdisc", "del", "dev", "tb1234b", "root"]]


def test_backend_set_up_delete_close(backend) -> None:
    b, rec, _ = backend
    b.create(LinkEnds("l", "tb1234a", DEAD_PID, "tb1234b", None), Shape(), Shape())
    b.create(LinkEnds("m", "tb1234c", None, "tb1234d", None), Shape(), Shape())
    rec.cmds.clear()
    b.set_up("l", False)
    assert rec.cmds == [["nsenter", "-t", str(DEAD_PID), "-n", "--", "ip", "link", "set", "dev", "tb1234a",
                         "down"], ["ip", "link", "set", "dev", "tb1234b", "down"]]
    rec.cmds.clear()
    b.delete("m")
    assert rec.cmds == [["ip", "link", "del", "dev", "tb1234c"]]
    rec.cmds.clear()
    b.close()  # link "l": no process DEAD_PID, so its namespace and the veth pair are gone already
    assert b.links == {} and rec.cmds == []
    with pytest.raises(errors.TestbedError):
        b.shape("l", forward=Shape(delay_ms=1))


def test_backend_rejects_duplicate_and_bad_names(backend) -> None:
    b, _, _ = backend
    b.create(LinkEnds("l", "tb1234a", None, "tb1234b", None), Shape(), Shape())
    with pytest.raises(errors.TestbedError, match="exists"):
        b.create(LinkEnds("l", "tb1234c", None, "tb1234d", None), Shape(), Shape())
    with pytest.raises(errors.TestbedError, match="bad interface name"):
        b.create(LinkEnds("x", "a" * 16, None, "tb1234d", None), Shape(), Shape())


def test_temporary_names_are_not_reused_after_delete(backend) -> None:
    b, rec, _ = backend
    b.create(LinkEnds("l", "eth0", 5, "tb1234b", None), Shape(), Shape())
    b.delete("l")
    rec.cmds.clear()
    b.create(LinkEnds("l2", "eth0", 5, "tb1234c", None), Shape(), Shape())
    assert rec.cmds[0][3] == "tb1234n1a"


def test_tx_offload_kept_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setattr(netem.proc, "run", rec)
    b = NetemBackend(Ledger("1234", tmp_path / "run", state_dir=tmp_path), tx_offload=True)
    b.create(LinkEnds("l", "tb1234a", None, "tb1234b", None), Shape(), Shape())
    assert rec.cmds and not any("ethtool" in c for c in rec.cmds)
