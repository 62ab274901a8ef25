"""The emulator's timing compensation as logic: the running median, and where it applies."""

import random
import time

from testbed.linkemu import hopcost
from testbed.linkemu.engine import HOT_GAP, Engine, RunningMedian


def test_running_median_finds_the_median_of_a_skewed_stream():
    rng = random.Random(7)
    m = RunningMedian(0.0, step=2e-6)
    samples = [100e-6 + rng.expovariate(1 / 60e-6) for _ in range(4000)]  # wake-ups: a floor and a long tail
    seen = []
    for s in samples:
        m.observe(s)
        seen.append(m.value)
    true = sorted(samples)[len(samples) // 2]
    late = seen[2000:]  # after it has settled: it wobbles a few steps around the median
    assert abs(sum(late) / len(late) - true) < 10e-6
    assert max(abs(v - true) for v in late) < 40e-6
    assert m.value < sum(samples) / len(samples)  # the median, not the mean the tail drags up


def test_running_median_stays_within_bounds():
    m = RunningMedian(5e-6, step=10e-6, high=50e-6)
    for _ in range(10):
        m.observe(-1.0)
    assert m.value == 0.0
    for _ in range(100):
        m.observe(1.0)
    assert m.value == 50e-6


def test_a_fake_clock_turns_kernel_timestamps_off_and_no_bridge_is_measured_outside_the_testbed():
    eng = Engine(seed=1, clock=lambda: 0.0)
    try:
        assert eng.timestamps is False
        assert eng._calibration is None and eng.hop_cost is None  # not in a netns called <prefix>-le
    finally:
        eng.close()


def test_hop_compensation_is_smaller_than_the_hot_gap_and_frames_are_tagged():
    assert 0 < HOT_GAP <= 0.001
    frame = hopcost._frame(3)
    assert len(frame) >= 60 and frame[12:14] == bytes.fromhex("88b5") and frame[14:18] == (3).to_bytes(4, "big")


def test_own_netns_name_is_none_outside_a_named_namespace(tmp_path, monkeypatch):
    monkeypatch.setattr(hopcost, "NETNS_DIR", tmp_path)
    assert hopcost.own_netns_name() is None
    t0 = time.monotonic()
    assert hopcost.ovs_pid() is None or hopcost.ovs_pid() > 0
    assert time.monotonic() - t0 < 1
