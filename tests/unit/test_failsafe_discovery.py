"""Neighbour discovery: announcements, balancing, failed and silent backups, garbage."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from testbed.failsafe.discovery import DISCOVERY_PORT, MAX_DATAGRAM, Discovery

A, B, C = ("10.0.0.12", 5000), ("10.0.0.13", 5000), ("10.0.0.14", 5000)
NIC_A, NIC_B = "10.0.0.112", "10.0.0.113"


def pair(now: float = 0.0) -> tuple[Discovery, Discovery]:
    """The main host's NIC (peers: the backups' NICs) and backup A's NIC."""
    main = Discovery("10.0.0.111", [NIC_A, NIC_B], now, interval_s=0.2, dead_after_s=1.0)
    backup_a = Discovery(NIC_A, ["10.0.0.111"], now, interval_s=0.2, dead_after_s=1.0)
    return main, backup_a


def deliver(sender: Discovery, receiver: Discovery, now: float, services: dict) -> None:
    for dst, payload in sender.announce(now, services):
        if dst == receiver.nic_ip:
            receiver.on_message(sender.nic_ip, payload, now)


def test_port_is_the_agreed_one() -> None:
    assert DISCOVERY_PORT == 7946


@pytest.mark.parametrize("backups", [[A, B], [A, B, C]])
def test_flows_spread_evenly_over_healthy_backups(backups: list) -> None:
    main, _ = pair()
    chosen = Counter(main.choose(backups, ("flow", i), 0.0) for i in range(301))
    assert set(chosen) == set(backups)
    assert max(chosen.values()) - min(chosen.values()) <= 1
    # releasing unevenly, then adding flows: new flows fill the emptier backups first
    released = [i for i in range(301) if main.choose(backups, ("flow", i), 0.0) == backups[0]]
    for i in released[:80]:
        main.release(backups[0], ("flow", i))
    for i in range(1000, 1000 + 80):
        assert main.choose(backups, ("flow", i), 0.0) == backups[0]
    load = main.status(0.0)["_flows"]
    assert max(load.values()) - min(load.values()) <= 1


def test_choice_is_sticky_and_deterministic() -> None:
    main, _ = pair()
    first = main.choose([A, B, C], "f1", 0.0)
    for _ in range(5):
        assert main.choose([A, B, C], "f1", 0.1) == first
    again, _ = pair()
    assert again.choose([C, B, A], "f1", 0.0) == first  # same NIC, same inputs: same answer


def test_a_backup_announced_failed_is_never_chosen() -> None:
    main, backup_a = pair()
    deliver(backup_a, main, 0.0, {f"{A[0]}:{A[1]}": {"state": "failsafe", "capacity": 10}})
    assert not main.healthy(A, 0.1)
    picks = {main.choose([A, B], i, 0.1) for i in range(20)}
    assert picks == {B}
    assert main.choose([A], "only-a", 0.1) is None


def test_a_flow_moves_when_its_backup_fails_and_whole_host_state_counts() -> None:
    main, backup_a = pair()
    deliver(backup_a, main, 0.0, {f"{A[0]}:{A[1]}": {"state": "normal", "capacity": 10}})
    flows = [f for f in range(10) if main.choose([A, B], f, 0.0) == A]
    assert flows
    # the host behind NIC A fails: "ip:*" covers every port, and the change is sent at once
    deliver(backup_a, main, 0.05, {f"{A[0]}:*": {"state": "failsafe", "capacity": 0}})
    assert not main.healthy((A[0], 6000), 0.06)
    assert all(main.choose([A, B], f, 0.06) == B for f in flows)


def test_capacity_zero_is_not_chosen() -> None:
    main, backup_a = pair()
    deliver(backup_a, main, 0.0, {f"{A[0]}:{A[1]}": {"state": "normal", "capacity": 0}})
    assert {main.choose([A, B], i, 0.0) for i in range(5)} == {B}


def test_silent_peer_is_skipped_then_readmitted_when_it_speaks_again() -> None:
    main, backup_a = pair()
    services = {f"{A[0]}:{A[1]}": {"state": "normal", "capacity": 10}}
    deliver(backup_a, main, 0.0, services)
    assert main.healthy(A, 0.5)
    assert main.healthy(A, 1.0)
    assert not main.healthy(A, 1.01)  # silent for more than dead_after_s
    assert {main.choose([A, B], i, 1.5) for i in range(6)} == {B}
    deliver(backup_a, main, 2.0, services)  # due again: it speaks
    assert main.healthy(A, 2.0)
    assert main.choose([A, B], "new", 2.0) == A  # B is loaded, A is healthy again


def test_backups_without_a_nic_count_as_healthy() -> None:
    main, _ = pair()
    assert main.healthy(C, 100.0)
    assert main.choose([C], "x", 100.0) == C


def test_announce_when_due_or_changed() -> None:
    _, backup_a = pair()
    s1 = {"10.0.0.12:5000": {"state": "normal", "capacity": 5}}
    out = backup_a.announce(0.0, s1)
    assert [dst for dst, _ in out] == ["10.0.0.111"]
    msg = json.loads(out[0][1])
    assert msg["v"] == 1 and msg["nic_ip"] == NIC_A and msg["seq"] == 0
    assert msg["services"] == {"10.0.0.12:5000": {"state": "normal", "capacity": 5}}
    assert backup_a.announce(0.1, s1) == []
    assert backup_a.next_deadline() == pytest.approx(0.2)
    assert len(backup_a.announce(0.2, s1)) == 1
    s2 = {"10.0.0.12:5000": {"state": "failsafe", "capacity": 5}}
    assert len(backup_a.announce(0.25, s2)) == 1  # changed: sent at once


def test_many_services_are_split_into_bounded_datagrams() -> None:
    _, backup_a = pair()
    services = {f"10.0.{i // 250}.{i % 250}:{5000 + i}": {"state": "normal", "capacity": i} for i in range(300)}
    out = backup_a.announce(0.0, services)
    assert len(out) > 1
    assert all(len(p) <= MAX_DATAGRAM for _, p in out)
    main = Discovery("10.0.0.111", [NIC_A], 0.0)
    for _, payload in out:
        main.on_message(NIC_A, payload, 0.0)
    assert len(main.status(0.0)[NIC_A]["services"]) == 300


def test_garbage_is_ignored() -> None:
    main, backup_a = pair()
    good = backup_a.announce(0.0, {f"{A[0]}:{A[1]}": {"state": "failsafe", "capacity": 1}})[0][1]
    rng = random.Random(7)
    print("seed 7")
    junk = [b"", b"\x00" * 50, b"{", b"[]", b"null", b'{"v": 2}', b"9" * 5000, b"[" * 10000,
            json.dumps({"v": 1, "nic_ip": NIC_A, "seq": "x", "boot": 1, "services": {}}).encode(),
            json.dumps({"v": 1, "nic_ip": NIC_A, "seq": 1, "boot": 1, "services": []}).encode(),
            json.dumps({"v": 1, "nic_ip": NIC_A, "seq": 1, "boot": 1,
                        "services": {"nonsense": 1, "1.2.3.4:99999": {"state": "failsafe"},
                                     "1.2.3.4:80": {"state": "broken"}}}).encode()]
    for _ in range(2000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 5)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        junk.append(bytes(data))
    for payload in junk:
        main.on_message(NIC_A, payload, 0.0)
    main.on_message("10.9.9.9", good, 0.0)  # not a peer
    main.on_message(NIC_B, good, 0.0)  # claims to be NIC A from NIC B's address
    assert main.garbage > 0
    assert not main.status(0.0)[NIC_B]["services"]
    assert main.healthy(("1.2.3.4", 80), 0.0)
    # the real message still works afterwards
    fresh, _ = pair()
    fresh.on_message(NIC_A, good, 0.0)
    assert not fresh.healthy(A, 0.0)


def test_reordered_datagram_is_ignored_and_restart_is_accepted() -> None:
    main, backup_a = pair()
    old = backup_a.announce(0.0, {f"{A[0]}:{A[1]}": {"state": "failsafe", "capacity": 1}})[0][1]
    new = backup_a.announce(0.1, {f"{A[0]}:{A[1]}": {"state": "normal", "capacity": 1}})[0][1]
    main.on_message(NIC_A, new, 0.1)
    main.on_message(NIC_A, old, 0.11)  # arrives late: ignored
    assert main.healthy(A, 0.12)
    restarted = Discovery(NIC_A, ["10.0.0.111"], 0.2)  # new boot id, seq starts at 0 again
    main.on_message(NIC_A, restarted.announce(0.2, {f"{A[0]}:{A[1]}": {"state": "failsafe"}})[0][1], 0.2)
    assert not main.healthy(A, 0.21)
