"""Unit tests of one link direction's scheduling on a fake clock: delay, jitter, rate, queue, loss, order."""

from __future__ import annotations

import random
import statistics

import pytest

from testbed.linkemu.schedule import DEFAULT_LIMIT, Direction, ShapeParams, direction_rng, parse_shape


def make(**kw) -> Direction:
    return Direction(ShapeParams(**kw), random.Random(1))


def test_passthrough_releases_at_arrival():
    d = make()
    assert d.admit(100, 5.0) == 5.0
    assert d.counters.rx == 1 and d.counters.dropped_loss == 0


def test_constant_delay():
    d = make(delay_s=0.025)
    assert d.admit(100, 1.0) == pytest.approx(1.025)
    assert d.admit(100, 1.5) == pytest.approx(1.525)


def test_uniform_jitter_stays_within_bounds_and_is_centred():
    d = make(delay_s=0.010, jitter_s=0.002)
    # arrivals 1 s apart, so FIFO order never clamps a draw
    delays = [d.admit(64, float(i)) - i for i in range(2000)]
    assert min(delays) >= 0.008 - 1e-12 and max(delays) <= 0.012 + 1e-12
    assert statistics.mean(delays) == pytest.approx(0.010, abs=2e-4)
    assert statistics.pstdev(delays) > 0.0009  # uniform on ±2 ms: sd = 2/sqrt(3) ≈ 1.15 ms


def test_normal_jitter_never_negative():
    d = make(delay_s=0.001, jitter_s=0.005, jitter_dist="normal")
    delays = [d.admit(64, float(i)) - i for i in range(2000)]
    assert min(delays) >= 0.0
    assert statistics.pstdev(delays) > 0.002


def test_fifo_order_kept_when_jitter_exceeds_gap():
    d = make(delay_s=0.010, jitter_s=0.005)
    releases = [d.admit(64, i * 0.0001) for i in range(500)]  # 0.1 ms gap, ±5 ms jitter
    assert releases == sorted(releases)
    assert all(r >= i * 0.0001 + 0.005 - 1e-12 for i, r in enumerate(releases))


def test_rate_serialises_back_to_back_frames():
    d = make(rate_bps=8_000_000)  # 1 byte per microsecond
    r1 = d.admit(1000, 0.0)
    r2 = d.admit(1000, 0.0)
    r3 = d.admit(500, 0.0)
    assert (r1, r2, r3) == pytest.approx((0.001, 0.002, 0.0025))


def test_rate_idle_link_starts_from_now():
    d = make(rate_bps=8_000_000)
    d.admit(1000, 0.0)
    assert d.admit(1000, 1.0) == pytest.approx(1.001)


def test_rate_then_delay():
    d = make(rate_bps=8_000_000, delay_s=0.050)
    assert d.admit(1000, 0.0) == pytest.approx(0.051)
    assert d.admit(1000, 0.0) == pytest.approx(0.052)


def test_long_run_rate_matches_configuration():
    d = make(rate_bps=10e6, limit=10**6)
    last = 0.0
    for _ in range(10_000):
        last = d.admit(1514, 0.0)
    assert 10_000 * 1514 * 8 / last == pytest.approx(10e6, rel=1e-9)


def test_queue_limit_drops_and_counts():
    d = make(delay_s=1.0, limit=3)
    for i in range(5):
        r = d.admit(100, 0.0)
        if r >= 0:
            d.hold(r, b"x")
    assert len(d.queue) == 3
    assert d.counters.dropped_queue == 2 and d.counters.rx == 5
    assert d.due(1.0) == [b"x"] * 3
    assert d.admit(100, 1.0) >= 0  # room again once frames left


def test_default_limit_is_netems():
    assert ShapeParams().limit == DEFAULT_LIMIT == 1000


def test_dropped_frames_do_not_consume_rate():
    d = make(rate_bps=8_000_000, delay_s=0.0, limit=1)
    d.hold(d.admit(1000, 0.0), b"a")
    assert d.admit(1000, 0.0) < 0  # queue full
    d.due(0.001)
    assert d.admit(1000, 0.001) == pytest.approx(0.002)


def test_loss_is_reproducible_with_a_seed_and_near_the_rate():
    def run(seed):
        d = Direction(ShapeParams(loss=0.2), direction_rng(seed, "l1", "forward"))
        return [d.admit(64, 0.0) < 0 for _ in range(5000)], d

    a, da = run(42)
    b, _ = run(42)
    c, _ = run(43)
    assert a == b and a != c
    assert da.counters.dropped_loss == sum(a)
    assert sum(a) / len(a) == pytest.approx(0.2, abs=0.02)


def test_directions_have_independent_streams():
    f = direction_rng(7, "l1", "forward").random()
    r = direction_rng(7, "l1", "reverse").random()
    other = direction_rng(7, "l2", "forward").random()
    assert len({f, r, other}) == 3


def test_full_loss_drops_everything():
    d = make(loss=1.0)
    assert all(d.admit(64, 0.0) < 0 for _ in range(100))
    assert d.counters.dropped_loss == 100


def test_due_and_flush():
    d = make(delay_s=0.010)
    for i in range(3):
        d.hold(d.admit(64, i * 0.001), bytes([i]))
    assert d.next_release() == pytest.approx(0.010)
    assert d.due(0.0115) == [b"\x00", b"\x01"]
    assert d.flush() == 1
    assert d.counters.dropped_down == 1 and d.next_release() is None


def test_parse_shape_units_and_partial_update():
    p = parse_shape({"bw_mbit": 10, "delay_ms": 25, "jitter_ms": 1, "loss_pct": 5, "queue_pkts": 50})
    assert p == ShapeParams(rate_bps=10e6, delay_s=0.025, jitter_s=0.001, loss=0.05, limit=50)
    q = parse_shape({"delay_ms": 5}, p)
    assert q.delay_s == 0.005 and q.rate_bps == 10e6 and q.limit == 50
    assert parse_shape({"bw_mbit": None, "queue_pkts": None}, p).rate_bps is None
    assert parse_shape(p.to_wire()) == p


@pytest.mark.parametrize("bad", [
    {"delay_ms": -1}, {"delay_ms": "5"}, {"loss_pct": 101}, {"bw_mbit": -2}, {"queue_pkts": 0},
    {"queue_pkts": 1.5}, {"jitter_dist": "pareto"}, {"delay": 5}, {"delay_ms": float("nan")}, {"loss_pct": True},
])
def test_parse_shape_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        parse_shape(bad)
