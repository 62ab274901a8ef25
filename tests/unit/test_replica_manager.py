"""The replica manager's logic with a fake clock: roles, switches on command and on a move, failover, syncs."""

from __future__ import annotations

import pytest

from testbed.replication.manager import Action, ReplicaManager

SITES = {"r1": "edge1", "r2": "edge2", "r3": "edge3"}


def manager(period: float | None = 1.0) -> ReplicaManager:
    return ReplicaManager("echo", {"r1": "primary", "r2": "secondary", "r3": "backup"}, SITES, period, now=10.0)


def test_exactly_one_primary_and_known_roles() -> None:
    with pytest.raises(ValueError, match="exactly one primary, got 2"):
        ReplicaManager("s", {"a": "primary", "b": "primary"}, {})
    with pytest.raises(ValueError, match="exactly one primary, got 0"):
        ReplicaManager("s", {"a": "backup"}, {})
    with pytest.raises(ValueError, match="unknown role"):
        ReplicaManager("s", {"a": "primary", "b": "spare"}, {})


def test_switch_syncs_first_then_steers_then_swaps_roles() -> None:
    m = manager()
    actions = m.switch_to("r2", now=12.0)
    assert [a.kind for a in actions] == ["sync", "steer", "role", "role"]
    assert actions[0] == Action("sync", "r2", src="r1", reason="command")
    assert m.roles == {"r1": "secondary", "r2": "primary", "r3": "backup"}
    assert m.switch_to("r2", now=13.0) == []  # already primary
    m.switch_to("r3", now=14.0)  # the backup becomes primary: the old primary is now the backup
    assert m.roles == {"r1": "secondary", "r2": "backup", "r3": "primary"}
    with pytest.raises(ValueError, match="no replica on r9"):
        m.switch_to("r9", now=15.0)


def test_a_move_makes_the_replica_at_the_new_site_primary() -> None:
    m = manager()
    assert m.on_move("ue1", "edge1", now=11.0) == []  # the primary is there already
    assert m.on_move("ue1", "cloud", now=11.0) == []  # no replica there: nothing changes
    actions = m.on_move("ue1", "edge2", now=12.0)
    assert m.primary == "r2" and actions[0].reason == "ue1 moved to edge2"


def test_losing_the_primary_promotes_the_backup_and_relabels_a_secondary() -> None:
    m = manager()
    actions = m.on_primary_lost(now=20.0)
    assert [(a.kind, a.dst, a.role) for a in actions] == [
        ("steer", "r3", None), ("role", "r3", "primary"), ("role", "r1", "lost"), ("role", "r2", "backup")]
    assert m.live() == ["r3", "r2"]
    with pytest.raises(ValueError, match="is lost"):
        m.switch_to("r1", now=21.0)
    m.on_primary_lost(now=22.0)
    assert m.primary == "r2"
    with pytest.raises(ValueError, match="no replica left"):
        m.on_primary_lost(now=23.0)


def test_periodic_syncs_from_the_primary_to_every_live_replica() -> None:
    m = manager(period=1.0)
    assert m.due(10.5) == []
    assert m.due(11.0) == [Action("sync", "r2", src="r1", reason="period"), Action("sync", "r3", src="r1", reason="period")]
    assert m.due(11.5) == []
    assert len(m.due(14.2)) == 2 and m.next_sync == 15.0  # late: one round, the schedule catches up
    m.switch_to("r2", now=14.5)
    assert [(a.src, a.dst) for a in m.due(15.0)] == [("r2", "r1"), ("r2", "r3")]
    assert manager(period=None).due(100.0) == []
    assert len(m.history) == 4 + 4 + 2  # every action, with its time
