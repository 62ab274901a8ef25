"""The VF orchestrator's decisions with a fake clock: no answer -> cold migration, a rising trend -> pre-emptive."""

from __future__ import annotations

import pytest

from testbed.migration.orchestrator import NodeState, Orchestrator, TrendPredictor, make_predictor


def s(t, cpu, ram=0.1):
    return NodeState(t, cpu, ram)


def test_no_answer_cold_migrates_to_the_least_loaded_node():
    orch = Orchestrator(period_s=30)
    placement = {"vf1": "n1", "vf2": "n2", "vf3": "n1"}
    assert orch.poll_due(0)
    out = orch.step(0, {"n1": None, "n2": s(0, 0.5), "n3": s(0, 0.2), "n4": s(0, 0.3)}, placement)
    assert [(d.kind, d.vf, d.src, d.dst) for d in out] == [("cold", "vf1", "n1", "n3"), ("cold", "vf3", "n1", "n4")]
    assert placement == {"vf1": "n3", "vf2": "n2", "vf3": "n4"}
    assert not orch.poll_due(29.9) and orch.poll_due(30)


def test_rising_load_migrates_before_the_overload_and_steady_load_does_not():
    orch = Orchestrator(k=0.9, period_s=10)
    placement = {"vf1": "n1"}
    for t, cpu in ((0, 0.3), (10, 0.3), (20, 0.3)):
        assert orch.step(t, {"n1": s(t, cpu), "n2": s(t, 0.1)}, placement) == []
    out = []
    for t, cpu in ((30, 0.5), (40, 0.7)):  # +0.02/s: 0.9 expected within the next period
        out += orch.step(t, {"n1": s(t, cpu), "n2": s(t, 0.1)}, placement)
    assert [(d.kind, d.vf, d.src, d.dst) for d in out] == [("pre-emptive", "vf1", "n1", "n2")]
    assert "p_fail 1.00" in out[0].reason and placement == {"vf1": "n2"}


def test_nowhere_to_go_leaves_the_vf():
    assert Orchestrator().step(0, {"n1": None}, {"vf1": "n1"}) == []


def test_trend_predictor_and_the_registry():
    p = TrendPredictor(threshold=0.8, window=2)
    assert p([s(0, 0.2), s(10, 0.4)], 10) == pytest.approx(0.6)
    assert p([s(0, 0.4), s(10, 0.6)], 10) == 1.0
    assert p([s(0, 0.6), s(10, 0.2)], 10) == pytest.approx(0.2)  # a falling trend predicts nothing worse
    assert p([], 10) == 0.0
    assert make_predictor("trend", threshold=0.5)([s(0, 0.5)], 1) == 1.0
    with pytest.raises(ValueError, match="no predictor 'lstm' \\(known: trend\\)"):
        make_predictor("lstm")
