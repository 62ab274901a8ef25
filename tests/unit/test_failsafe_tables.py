"""P4-style tables, counters and registers; the classifier and service table built on them."""

from __future__ import annotations

import pytest

from testbed.failsafe.classifier import Classifier, target_key
from testbed.failsafe.packet import PROTO_TCP, PROTO_UDP, ip_bytes
from testbed.failsafe.service_table import ServiceTable, parse_backups
from testbed.failsafe.tables import CounterArray, KeyField, RegisterArray, Table, TableError

IP = lambda s: int.from_bytes(ip_bytes(s), "big")  # noqa: E731


def test_exact_table_hits_misses_and_default() -> None:
    t = Table("t", [KeyField("ip"), KeyField("port", width=16)], ["fwd"], default=("NoAction", ()))
    t.add("fwd", (IP("10.0.0.1"), 80), ("p1",))
    hit = t.lookup((IP("10.0.0.1"), 80))
    assert hit.hit and hit.name == "fwd" and hit.params == ("p1",)
    miss = t.lookup((IP("10.0.0.1"), 81))
    assert not miss.hit and miss.name == "NoAction"
    d = t.dump()
    assert d["entries"][0]["hits"] == 1 and d["misses"] == 1 and d["entries"][0]["match"] == ["10.0.0.1", "80"]


def test_lpm_prefers_longest_prefix() -> None:
    t = Table("routes", [KeyField("dst", "lpm")], ["via"])
    t.add("via", [(IP("10.0.0.0"), 8)], ("wide",))
    t.add("via", [(IP("10.1.0.0"), 16)], ("narrow",))
    t.add("via", [(0, 0)], ("default",))
    assert t.lookup([IP("10.1.2.3")]).params == ("narrow",)
    assert t.lookup([IP("10.2.2.3")]).params == ("wide",)
    assert t.lookup([IP("11.0.0.1")]).params == ("default",)


def test_ternary_uses_priority() -> None:
    t = Table("acl", [KeyField("port", "ternary", 16)], ["allow", "deny"])
    t.add("deny", [(0x0000, 0xFF00)], priority=1)
    t.add("allow", [(0x0050, 0xFFFF)], priority=10)
    assert t.lookup([0x0050]).name == "allow"
    assert t.lookup([0x0051]).name == "deny"
    assert not t.lookup([0x0150]).hit


def test_parse_match_text_forms() -> None:
    t = Table("x", [KeyField("ip"), KeyField("proto", width=8), KeyField("net", "lpm"), KeyField("m", "ternary", 16)], ["a"])
    assert t.parse_match(["10.0.0.1", "udp", "10.0.0.0/24", "0x50&&&0xff"]) == (IP("10.0.0.1"), 17, (IP("10.0.0.0"), 24), (0x50, 0xFF))
    with pytest.raises(TableError):
        t.parse_match(["10.0.0.1"])
    with pytest.raises(TableError):
        t.parse_match(["nonsense", "udp", "10.0.0.0/24", "1"])


def test_errors_unknown_action_full_and_missing_delete() -> None:
    t = Table("small", [KeyField("k", width=8)], ["a"], size=1)
    with pytest.raises(TableError):
        t.add("b", [1])
    t.add("a", [1])
    with pytest.raises(TableError):
        t.add("a", [2])
    t.add("a", [1], ("replaced",))  # replacing does not need room
    t.delete([1])
    with pytest.raises(TableError):
        t.delete([1])


def test_counters_and_registers() -> None:
    c = CounterArray("c", 4)
    c.count(2, 100)
    c.count(2, 50)
    assert c.read(2) == (2, 150) and c.read(0) == (0, 0)
    r = RegisterArray("r", 2, width=8)
    r.write(1, 0x1FF)
    assert r.read(1) == 0xFF


def test_classifier_fast_keys_follow_table_changes() -> None:
    c = Classifier()
    c.add("echo", "10.0.0.11", PROTO_UDP, 5000)
    key = target_key(ip_bytes("10.0.0.11"), PROTO_UDP, 5000)
    assert c.lookup(key) == "echo"
    assert c.lookup(target_key(ip_bytes("10.0.0.11"), PROTO_TCP, 5000)) is None
    assert ip_bytes("10.0.0.11") in c.ips
    c.table.add("set_service", c.table.parse_match(["10.0.0.11", "tcp", "80"]), ("web",))
    assert c.lookup(target_key(ip_bytes("10.0.0.11"), PROTO_TCP, 80)) == "web"
    c.table.delete(c.table.parse_match(["10.0.0.11", "udp", "5000"]))
    assert c.lookup(key) is None
    assert set(c.services()) == {"web"}


def test_service_table_default_and_same_port() -> None:
    st = ServiceTable(default=[("10.0.0.12", 0)])
    svc = ip_bytes("10.0.0.11")
    assert st.lookup(svc, 5000) == ((ip_bytes("10.0.0.12"), 5000),)
    st.add("10.0.0.11", 5000, [("10.0.0.13", 6000), ("10.0.0.14", 0)])
    assert st.lookup(svc, 5000) == ((ip_bytes("10.0.0.13"), 6000), (ip_bytes("10.0.0.14"), 5000))
    assert st.lookup(svc, 5001) == ((ip_bytes("10.0.0.12"), 5001),)
    assert st.backup_ips() == {ip_bytes("10.0.0.12"), ip_bytes("10.0.0.13"), ip_bytes("10.0.0.14")}
    st.set_default([])
    assert st.lookup(svc, 5001) == ()


def test_parse_backups() -> None:
    assert parse_backups(["10.0.0.1:80,10.0.0.2", "10.0.0.3:1"]) == (("10.0.0.1", 80), ("10.0.0.2", 0), ("10.0.0.3", 1))
    with pytest.raises(TableError):
        parse_backups(["host-b"])
