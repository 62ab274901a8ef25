"""A service handover's interruption on synthetic packets: T_q - T_p between the old and the new replica,
on the followed device's flows only."""

from __future__ import annotations

from testbed.experiment.metrics import PacketRow
from testbed.experiment.mobility_metrics import handover_gap


def rows(flow: str, n: int, who) -> list[PacketRow]:
    """n requests at 100/s from t=0, 2 ms RTT; who(i) names the answering host ('' = lost)."""
    return [PacketRow("v", 0, i + 1, i / 100, 2.0 if who(i) else None, who(i), flow) for i in range(n)]


PROBES = [{"name": "probe", "src": "ue"}, {"name": "other", "src": "cli"}]


def test_a_frozen_old_replica_shows_as_the_gap_between_its_last_reply_and_the_new_ones_first() -> None:
    # r1 answers 0..39; frozen while the state is moved: 40..89 lost; r2 answers from 90
    probe = rows("probe", 120, lambda i: "r1" if i < 40 else ("" if i < 90 else "r2"))
    other = rows("other", 120, lambda i: "")  # another device's flow: not the user's interruption
    rec = {"from": "r1", "to": "r2", "device": "ue", "started": 0.3}
    assert handover_gap(rec, {"probe": probe, "other": other}, PROBES) == {"interruption_ms": 510.0, "lost": 50}


def test_a_ready_replica_takes_over_without_a_gap() -> None:
    probe = rows("probe", 120, lambda i: "r1" if i < 60 else "r2")
    rec = {"from": "r1", "to": "r2", "device": "ue", "started": 0.3}
    assert handover_gap(rec, {"probe": probe}, PROBES) == {"interruption_ms": 10.0, "lost": 0}


def test_no_reply_from_the_new_replica_gives_no_number() -> None:
    probe = rows("probe", 50, lambda i: "r1")
    rec = {"from": "r1", "to": "r2", "device": "ue", "started": 0.3}
    assert handover_gap(rec, {"probe": probe}, PROBES) == {"interruption_ms": None, "lost": None}
