"""Unit tests for cleaning a run on its other servers: ledger records split by server, commands through the door."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from testbed import ledger, proc
from testbed.cluster import cleanup
from testbed.cluster.server import Server, record_server
from testbed.ledger import Ledger

B = Server("b", "127.0.0.2", key="/k", port=2222)


def test_split_by_server(tmp_path: Path) -> None:
    book = Ledger("beef", state_dir=tmp_path)
    record_server(book, B)
    book.record("ovs_bridge", "tbbeefs1")
    book.record("ovs_bridge", "tbbeefs2", server="b")
    book.record("process", "42", start=7, server="b")
    local, remote, servers = cleanup.split(list(ledger.read("beef", tmp_path)))
    assert [r.name for r in local] == ["tbbeefs1"]
    assert [r.name for r in remote["b"]] == ["tbbeefs2", "42"]
    assert servers["b"] == B


def test_clean_server_removes_only_what_is_the_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ran: list[list[str]] = []
    answers = {
        "docker": "c0ffee\n",
        "ovs-vsctl": "br-user\ntbbeefs2\nother\n",
        "ip netns list": "tbbeefh1 (id: 3)\nsomeone\n",
        "ip -o link": "1: lo: <LOOPBACK> mtu\n7: tbbeefs2-eth1@if8: <UP> mtu\n9: eth0: <UP> mtu\n",
        "python3": "killed\n",
    }

    def fake(argv, **kw):
        assert argv[0] == "ssh" and "BatchMode=yes" in argv
        remote = shlex.split(argv[-1])
        ran.append(remote)
        text = " ".join(remote)
        out = next((v for k, v in answers.items() if text.startswith(k) and ("list" in text or "-aq" in text
                    or "-o" in text or k == "python3")), "")
        return proc.Result(argv, 0, out, "")

    monkeypatch.setattr(proc, "run", fake)
    book = Ledger("beef", state_dir=tmp_path)
    book.record("process", "42", start=7, server="b")
    removed: list[str] = []
    failed: list[str] = []
    cleanup.clean_server("beef", B, list(ledger.read("beef", tmp_path)), removed, failed)
    assert not failed
    deleted = [r for r in ran if r[:2] in (["docker", "rm"], ["ip", "link"], ["ip", "netns"]) or "del-br" in r]
    assert ["docker", "rm", "-f", "c0ffee"] in deleted
    assert ["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", "tbbeefs2"] in deleted
    assert ["ip", "netns", "del", "tbbeefh1"] in deleted and ["ip", "link", "del", "tbbeefs2-eth1"] in deleted
    assert not any("br-user" in r or "someone" in r or "eth0" in r for r in deleted)
    assert ["python3", "-c", cleanup.KILL, "42", "7"] in ran
    assert "process 42 on b" in removed


def test_unreachable_server_is_a_failure_and_keeps_the_ledger(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from testbed.errors import CommandError

    def fake(argv, **kw):
        raise CommandError(argv, 255, "ssh: connect to host 127.0.0.2 port 2222: Connection refused")

    monkeypatch.setattr(proc, "run", fake)
    failed: list[str] = []
    cleanup.clean_server("beef", B, [], [], failed)
    assert len(failed) == 1 and "Connection refused" in failed[0]
