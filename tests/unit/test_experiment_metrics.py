"""Metrics over synthetic packets/events: delivery, detection, failover, recovery, aggregation, CSV round trip."""

from __future__ import annotations

import csv

import pytest

from testbed.experiment.metrics import (EVENT_FIELDS, PACKET_FIELDS, EventRow, PacketRow, Summary, aggregate,
                                        percentile, read_events, read_packets, run_metrics, summarize)


def _packets(variant: str, answer, rep: int = 0, count: int = 100, rate: float = 10.0) -> list[PacketRow]:
    """`answer(seq) -> (rtt_ms | None, node)` for requests sent at t = (seq-1)/rate."""
    rows = []
    for seq in range(1, count + 1):
        rtt, node = answer(seq)
        rows.append(PacketRow(variant, rep, seq, (seq - 1) / rate, rtt, node if rtt is not None else ""))
    return rows


FAULT_T = 4.95  # right after request 50 was sent


def _crash_events(variant: str, activation: float | None, rep: int = 0) -> list[EventRow]:
    events = [EventRow(FAULT_T, variant, rep, "host_down", "apply", "mec1", "docker kill")]
    if activation is not None:
        events.append(EventRow(activation, variant, rep, "nic", "activate", "mec1/echo-udp", "timeout"))
    return events


def test_percentile_interpolates():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 99) == 5
    assert percentile(list(range(101)), 99) == 99


def test_crash_with_nic_fails_over_without_loss():
    rows = _packets("with", lambda s: (1.0, "mec1") if s <= 50 else (1.5, "mec2"))
    m = run_metrics(rows, _crash_events("with", 5.15), primary="mec1")
    assert m.sent == 100 and m.received == 100 and m.delivered_ratio == 1.0
    assert m.delivered_ratio_after_fault == 1.0
    assert m.detection_s == pytest.approx(0.2)
    assert m.failover_s == pytest.approx(5.0 + 0.0015 - FAULT_T)
    assert m.lost_during_failover == 0
    assert m.recovery_s is None  # not a delay fault


def test_crash_with_nic_counts_requests_lost_before_failover():
    rows = _packets("with", lambda s: (1.0, "mec1") if s <= 50 else ((None, "") if s <= 53 else (1.5, "mec2")))
    m = run_metrics(rows, _crash_events("with", 5.3), primary="mec1")
    assert m.lost_during_failover == 3
    assert m.delivered_ratio_after_fault == pytest.approx(47 / 50)
    assert m.failover_s == pytest.approx(5.3 + 0.0015 - FAULT_T)


def test_crash_without_nic_delivers_nothing_after():
    rows = _packets("without", lambda s: (1.0, "mec1") if s <= 50 else (None, ""))
    m = run_metrics(rows, _crash_events("without", None), primary="mec1")
    assert m.delivered_ratio_after_fault == 0.0
    assert m.detection_s is None and m.failover_s is None
    assert m.lost_during_failover == 50
    assert m.delivered_ratio == 0.5


def _delay_events(variant: str) -> list[EventRow]:
    return [EventRow(3.95, variant, 0, "delay", "apply", "mec1", "app 50ms"),
            EventRow(7.95, variant, 0, "delay", "undo", "mec1", "app 0ms")]


def test_delay_recovery_with_nic_is_fast():
    def answer(seq):
        if seq <= 40 or seq > 80:
            return 1.0, "mec1"
        return (51.0, "mec1") if seq <= 44 else (2.0, "mec2")
    m = run_metrics(_packets("with", answer), _delay_events("with"), primary="mec1")
    assert m.baseline_rtt_ms == 1.0
    assert m.recovery_s == pytest.approx(4.4 + 0.002 - 3.95)


def test_delay_recovery_without_nic_waits_for_the_delay_to_end():
    m = run_metrics(_packets("without", lambda s: (51.0 if 40 < s <= 80 else 1.0, "mec1")),
                    _delay_events("without"), primary="mec1")
    assert m.recovery_s == pytest.approx(8.0 + 0.001 - 3.95)


def test_run_without_faults_has_only_basic_numbers():
    m = run_metrics(_packets("x", lambda s: (float(s), "mec1"), count=10), [])
    assert m.rtt_p50_ms == 5.5 and m.rtt_max_ms == 10 and m.fault_time is None and m.detection_s is None


def test_aggregate_mean_and_spread_over_repetitions():
    runs = [run_metrics(_packets("with", lambda s: (1.0, "mec1") if s <= 50 else (1.5, "mec2"), rep=rep),
                        _crash_events("with", act, rep=rep), primary="mec1")
            for rep, act in enumerate((5.05, 5.15, 5.25))]
    stats = aggregate(runs)
    assert stats["detection_s"].mean == pytest.approx(0.2)
    assert stats["detection_s"].std == pytest.approx(0.1)
    assert stats["detection_s"].min == pytest.approx(0.1) and stats["detection_s"].n == 3
    assert "recovery_s" not in stats


def test_csv_round_trip_and_summary(tmp_path):
    rows = (_packets("with", lambda s: (1.0, "mec1") if s <= 50 else (1.5, "mec2"))
            + _packets("without", lambda s: (1.0, "mec1") if s <= 50 else (None, "")))
    events = _crash_events("with", 5.15) + _crash_events("without", None)
    with open(tmp_path / "packets.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(PACKET_FIELDS)
        for r in rows:
            w.writerow([r.variant, r.repetition, r.seq, r.send_time, "" if r.rtt_ms is None else r.rtt_ms,
                        r.answered_by, r.flow])
    with open(tmp_path / "events.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(EVENT_FIELDS)
        for e in events:
            w.writerow([e.time, e.variant, e.repetition, e.kind, e.action, e.target, e.detail])
    assert read_packets(tmp_path / "packets.csv") == rows
    assert read_events(tmp_path / "events.csv") == events
    summary = summarize("t", rows, events, primaries={"with": "mec1", "without": "mec1"},
                        throughput={("with", 0): {"bulk": 90.0}}, variant_order=["with", "without"])
    assert list(summary.variants) == ["with", "without"]
    assert summary["with"].mean("delivered_ratio_after_fault") == 1.0
    assert summary["without"].mean("delivered_ratio_after_fault") == 0.0
    assert summary["with"].mean("throughput_mbps.bulk") == 90.0
    again = Summary.from_dict(summary.to_dict())
    assert again == summary
