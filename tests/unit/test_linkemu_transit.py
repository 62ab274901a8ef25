"""Switch-hop accounting along a path: frames in transit between links, real hop samples, scheduling."""

import os
import struct

import pytest

from testbed.linkemu import __main__ as cli
from testbed.linkemu.engine import HOT_GAP, RecentFrames, TransitHops, hop_compensation


def test_each_switch_hop_is_compensated_once_along_a_path():
    hop = 80e-6
    # first link of a path: the hop from the host before it and the one after it
    assert hop_compensation(hop, out_ovs=True, in_ovs=True, in_transit=False) == pytest.approx(2 * hop)
    # a later link: the hop before was the previous link's to compensate
    assert hop_compensation(hop, out_ovs=True, in_ovs=True, in_transit=True) == pytest.approx(hop)
    # a link into a host's namespace (shaped access link) after a switch: only the hop before, if fresh
    assert hop_compensation(hop, out_ovs=False, in_ovs=True, in_transit=False) == pytest.approx(hop)
    assert hop_compensation(hop, out_ovs=False, in_ovs=True, in_transit=True) == 0.0
    # namespace to namespace, no switch (the links part of the benchmark): nothing
    assert hop_compensation(hop, out_ovs=False, in_ovs=False, in_transit=False) == 0.0


def test_recent_frames_tells_a_frame_in_transit_and_forgets_it_after_the_window():
    r = RecentFrames(window=0.05, limit=100)
    a, b = b"\x01" * 64, b"\x02" * 64
    r.add(a, 10.0)
    assert r.released(a, 10.001) == pytest.approx(10.0)
    assert r.released(b, 10.001) is None  # never sent into a switch: fresh from a host
    assert r.released(a, 10.051) is None and len(r) == 0


def test_recent_frames_keeps_the_latest_release_of_a_frame_sent_twice_and_is_bounded():
    r = RecentFrames(window=0.05, limit=3)
    a = b"\x01" * 64
    r.add(a, 1.0)
    r.add(a, 1.04)
    assert r.released(a, 1.06) == pytest.approx(1.04)  # the first entry's expiry does not drop the second
    for i in range(10):
        r.add(bytes([i]) * 64, 2.0)
    assert len(r) <= 3 and r.released(bytes([9]) * 64, 2.0) == pytest.approx(2.0)


def test_transit_hops_median_needs_enough_fresh_samples_and_is_clamped():
    t = TransitHops(size=5, least=3, max_age=5.0, high=HOT_GAP)
    t.observe(1.0, 50e-6)
    t.observe(1.1, 70e-6)
    assert t.current(1.2) is None  # too few
    t.observe(1.2, 1.0)  # a frame held up for seconds counts as HOT_GAP, not as a second
    assert t.current(1.3) == pytest.approx(70e-6)
    for _ in range(5):
        t.observe(2.0, 90e-6)
    assert t.current(2.0) == pytest.approx(90e-6) and len(t) == 5  # only the last `size` count
    assert t.current(7.01) is None  # stale: the meter's figure again
    t.observe(8.0, -1e-6)  # released late: a negative hop counts as 0
    assert t.current(8.0) == pytest.approx(90e-6)


def test_sched_attr_is_the_kernel_struct_for_sched_other_with_a_slice():
    raw = cli.sched_attr(-10, 100_000)
    assert len(raw) == 56  # SCHED_ATTR_SIZE_VER1
    size, policy, flags, nice, prio, runtime = struct.unpack_from("IIQiIQ", raw)
    assert (size, policy, flags, nice, prio, runtime) == (56, 0, 0, -10, 0, 100_000)


def test_raise_priority_falls_back_to_nice_then_to_ordinary(monkeypatch):
    calls = []

    def refuse(*_a):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(cli.platform, "machine", lambda: "vax")  # no sched_setattr number: nice alone
    monkeypatch.setattr(os, "setpriority", lambda *a: calls.append(a))
    got = cli.raise_priority()
    assert got.startswith(f"nice {cli.NICE} (slice refused") and calls == [(os.PRIO_PROCESS, 0, cli.NICE)]
    monkeypatch.setattr(os, "setpriority", refuse)
    assert cli.raise_priority().startswith("ordinary")
