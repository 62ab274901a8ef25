"""Heartbeat manager with a fake clock: learning, activation, timeouts, hysteresis, platform."""

from __future__ import annotations

import math

import pytest

from testbed.failsafe.heartbeat import (
    EWMA_WEIGHT,
    MAX_OUTSTANDING,
    PLATFORM,
    HeartbeatEntry,
    HeartbeatManager,
    Transition,
)

RTT = 0.001  # 1 ms normal RTT, above the 0.5 ms floor


def entry(target: str = "svc", interval: float = 0.1, threshold: float = 1.5, **kw: object) -> HeartbeatEntry:
    return HeartbeatEntry(target, "udp", interval, threshold, **kw)  # type: ignore[arg-type]


class Clock:
    """Drives a manager: sends what is due and answers after a chosen RTT, collecting transitions."""

    def __init__(self, mgr: HeartbeatManager, now: float = 0.0) -> None:
        self.mgr = mgr
        self.now = now
        self.events: list[Transition] = []

    def beat(self, rtts: dict[str, float | None]) -> list[Transition]:
        """Advance to the next deadline that has sends, send, and reply per target (None: no reply)."""
        out: list[Transition] = []
        for _ in range(100):  # a deadline that never leads to a send is a bug, not a hang
            self.now = self.mgr.next_deadline()
            out += self.mgr.poll(self.now)
            sent = self.mgr.due(self.now)
            if sent:
                break
        else:
            raise AssertionError(f"next_deadline() stuck at {self.now} without a send")
        replies = sorted(
            ((self.now + rtts[e.target], e.target, seq) for e, seq in sent if rtts.get(e.target) is not None)
        )
        for at, target, seq in replies:
            out += self.mgr.poll(at)  # timeouts due before this reply come first
            out += self.mgr.on_reply(target, seq, at)
        # let the rest of the interval pass: unanswered heartbeats time out now
        out += self.mgr.poll(self.now + 0.9 * min(e.interval_s for e, _ in sent))
        self.events += out
        return out

    def learn(self, targets: list[str], n: int = 10) -> None:
        for _ in range(n):
            assert self.beat({t: RTT for t in targets}) == []


def test_learning_phase_produces_no_activations_even_for_slow_or_missing_replies() -> None:
    mgr = HeartbeatManager([entry(learn=10)], now=0.0)
    clock = Clock(mgr)
    rtts = [RTT, RTT * 20, None, RTT, RTT * 50, RTT, RTT, None, RTT, RTT, RTT, RTT]
    for rtt in rtts:
        assert clock.beat({"svc": rtt}) == []
    assert mgr.status()["svc"]["mode"] == "normal"  # 10 replies were received: learned
    assert not mgr.in_failsafe("svc")


def test_status_reports_learning_until_enough_replies() -> None:
    mgr = HeartbeatManager([entry(learn=5)], now=0.0)
    clock = Clock(mgr)
    for _ in range(4):
        clock.beat({"svc": RTT})
    assert mgr.status()["svc"]["mode"] == "learning"
    assert mgr.status()["svc"]["rtt_avg_ms"] is None
    clock.beat({"svc": RTT})
    st = mgr.status()["svc"]
    assert st["mode"] == "normal"
    assert st["rtt_avg_ms"] == pytest.approx(1.0)
    assert st["sent"] == 5 and st["received"] == 5


def test_activation_on_ratio() -> None:
    mgr = HeartbeatManager([entry()], now=0.0)
    clock = Clock(mgr)
    clock.learn(["svc"])
    assert clock.beat({"svc": RTT * 1.4}) == []  # ratio 1.4 <= 1.5
    # The reply arrives late but before anyone polled: on_reply judges it by its ratio.
    t0 = mgr.next_deadline()
    (sent,) = mgr.due(t0)
    out = mgr.on_reply("svc", sent[1], t0 + RTT * 3)
    assert len(out) == 1
    t = out[0]
    assert t.target == "svc" and t.active
    assert t.reason == "rtt 3.00 ms / avg 1.01 ms = 3.0 > 1.5", t.reason  # avg took in the 1.4 ms
    assert mgr.in_failsafe("svc")
    assert mgr.status()["svc"]["mode"] == "failsafe"


def test_activation_on_timeout_at_avg_times_threshold() -> None:
    mgr = HeartbeatManager([entry()], now=0.0)
    clock = Clock(mgr)
    clock.learn(["svc"])
    t0 = mgr.next_deadline()
    (sent,) = mgr.due(t0)
    limit = RTT * 1.5
    assert mgr.next_deadline() == pytest.approx(t0 + limit)
    assert mgr.poll(t0 + limit * 0.99) == []
    out = mgr.poll(t0 + limit)
    assert [(t.target, t.active) for t in out] == [("svc", True)]
    assert out[0].reason == "timeout after 1.50 ms"
    assert out[0].time == t0 + limit
    assert mgr.poll(t0 + limit * 2) == []  # one verdict per heartbeat
    assert mgr.status()["svc"]["timeouts"] == 1


def test_min_rtt_floor_sets_the_timeout_for_very_fast_targets() -> None:
    mgr = HeartbeatManager([entry(min_rtt_s=0.0005)], now=0.0)
    clock = Clock(mgr)
    for _ in range(10):
        clock.beat({"svc": 0.00005})  # 50 us: faster than the floor
    assert clock.beat({"svc": 0.0007}) == []  # 0.7 ms < 0.5 ms * 1.5
    out = clock.beat({"svc": None})
    assert out and out[0].reason == "timeout after 0.75 ms"


def test_deactivation_needs_hysteresis_consecutive_good_replies() -> None:
    mgr = HeartbeatManager([entry(hysteresis=3)], now=0.0)
    clock = Clock(mgr)
    clock.learn(["svc"])
    assert [t.active for t in clock.beat({"svc": None})] == [True]
    assert clock.beat({"svc": RTT}) == []
    assert clock.beat({"svc": RTT}) == []
    assert mgr.in_failsafe("svc")  # heartbeats keep going while in fail-safe
    out = clock.beat({"svc": RTT})
    assert [(t.active, t.reason) for t in out] == [(False, "rtt back under threshold for 3 heartbeats")]
    assert not mgr.in_failsafe("svc")


def test_alternating_good_and_bad_does_not_flap() -> None:
    mgr = HeartbeatManager([entry(hysteresis=3)], now=0.0)
    clock = Clock(mgr)
    clock.learn(["svc"])
    transitions: list[Transition] = []
    for i in range(40):
        transitions += clock.beat({"svc": RTT if i % 2 else RTT * 5})
        transitions += clock.beat({"svc": RTT}) if i % 3 == 0 else []
    assert [t.active for t in transitions] == [True]
    assert mgr.in_failsafe("svc")


def test_failed_period_is_not_learned_as_normal() -> None:
    mgr = HeartbeatManager([entry()], now=0.0)
    clock = Clock(mgr)
    clock.learn(["svc"])
    for _ in range(50):
        clock.beat({"svc": RTT * 4})
    assert mgr.status()["svc"]["rtt_avg_ms"] == pytest.approx(1.0)
    # healthy replies in normal mode do move the average, slowly
    clock.beat({"svc": RTT}), clock.beat({"svc": RTT}), clock.beat({"svc": RTT})
    assert not mgr.in_failsafe("svc")
    clock.beat({"svc": RTT * 1.32})
    assert mgr.status()["svc"]["rtt_avg_ms"] == pytest.approx(1.0 + EWMA_WEIGHT * 0.32, abs=1e-6)


def test_late_reply_is_ignored_for_activation_but_updates_rtt_last() -> None:
    mgr = HeartbeatManager([entry(hysteresis=1)], now=0.0)
    clock = Clock(mgr)
    clock.learn(["svc"])
    t0 = mgr.next_deadline()
    (e, seq), = mgr.due(t0)
    assert [t.active for t in mgr.poll(t0 + 0.01)] == [True]
    # the late reply (10 ms) neither re-activates nor counts towards recovery (hysteresis=1)
    assert mgr.on_reply("svc", seq, t0 + 0.01) == []
    st = mgr.status()["svc"]
    assert st["rtt_last_ms"] == pytest.approx(10.0)
    assert st["late"] == 1 and st["mode"] == "failsafe"
    # duplicate and never-sent sequence numbers are ignored
    assert mgr.on_reply("svc", seq, t0 + 0.011) == []
    assert mgr.on_reply("svc", 4242, t0 + 0.011) == []
    assert mgr.on_reply("nobody", 0, t0 + 0.011) == []
    assert mgr.status()["svc"]["received"] == st["received"]
    # a good reply to the next heartbeat recovers
    assert [t.active for t in clock.beat({"svc": RTT})] == [False]


def test_an_outage_longer_than_the_heartbeats_remembered() -> None:
    mgr = HeartbeatManager([entry(hysteresis=2)], now=0.0)
    clock = Clock(mgr)
    clock.learn(["svc"])
    first = mgr.status()["svc"]["sent"]
    seqs = []
    for _ in range(MAX_OUTSTANDING + 40):  # unanswered: each times out once, the first one activates
        clock.beat({})
        seqs.append((mgr.status()["svc"]["sent"] - 1) % (1 << 16))
    st = mgr.status()["svc"]
    assert st["timeouts"] == st["sent"] - first == MAX_OUTSTANDING + 40
    assert [t.active for t in clock.events if t.target == "svc"] == [True]
    assert mgr.next_deadline() == pytest.approx(clock.now + 0.1)  # the next send: nothing old is still due
    assert mgr.on_reply("svc", seqs[-1], clock.now + 0.095) == [] and mgr.status()["svc"]["late"] == 1
    assert mgr.on_reply("svc", seqs[0], clock.now + 0.095) == []  # forgotten: not even late
    assert mgr.status()["svc"]["late"] == 1
    assert clock.beat({"svc": RTT}) == []
    assert [t.active for t in clock.beat({"svc": RTT})] == [False]


def test_newer_reply_supersedes_older_unanswered_heartbeat() -> None:
    # interval shorter than the timeout: two heartbeats in flight
    mgr = HeartbeatManager([entry(interval=0.001, min_rtt_s=0.002)], now=0.0)
    clock = Clock(mgr)
    clock.learn(["svc"])
    t0 = mgr.next_deadline()
    (_, s1), = mgr.due(t0)
    (_, s2), = mgr.due(t0 + 0.001)
    assert mgr.on_reply("svc", s2, t0 + 0.0015) == []
    assert mgr.poll(t0 + 0.1) == []  # s1 was lost, but s2 already proved the service healthy


def test_platform_failure_puts_every_service_in_failsafe_with_own_events() -> None:
    entries = [entry(PLATFORM), entry("a"), entry("b")]
    mgr = HeartbeatManager(entries, now=0.0)
    clock = Clock(mgr)
    clock.learn([PLATFORM, "a", "b"])
    out = clock.beat({PLATFORM: None, "a": RTT, "b": RTT})
    assert [(t.target, t.active, t.reason) for t in out] == [
        (PLATFORM, True, "timeout after 1.50 ms"),
        ("a", True, "platform failed"),
        ("b", True, "platform failed"),
    ]
    assert mgr.in_failsafe("a") and mgr.in_failsafe("b") and mgr.in_failsafe(PLATFORM)
    assert mgr.in_failsafe("unmonitored-service")  # follows the platform
    # service a now fails itself as well: no new transition (already in fail-safe)
    assert clock.beat({PLATFORM: None, "a": RTT * 9, "b": RTT}) == []
    for _ in range(3):
        out = clock.beat({PLATFORM: RTT, "a": None, "b": RTT})
    assert [(t.target, t.active, t.reason) for t in out] == [
        (PLATFORM, False, "rtt back under threshold for 3 heartbeats"),
        ("b", False, "platform recovered"),
    ]
    assert mgr.in_failsafe("a") and not mgr.in_failsafe("b")
    assert not mgr.in_failsafe("unmonitored-service")


def test_status_counts_transitions_and_events_since() -> None:
    mgr = HeartbeatManager([entry()], now=0.0)
    clock = Clock(mgr)
    clock.learn(["svc"])
    clock.beat({"svc": None})
    t_on = clock.now
    for _ in range(3):
        clock.beat({"svc": RTT})
    assert mgr.status()["svc"]["transitions"] == 2
    assert [t.active for t in mgr.events()] == [True, False]
    assert [t.active for t in mgr.events(since=t_on + 0.095)]  # after the timeout poll == [False]


def test_remove_and_add_at_run_time() -> None:
    mgr = HeartbeatManager([entry("a")], now=0.0)
    clock = Clock(mgr)
    clock.learn(["a"])
    clock.beat({"a": None})
    assert mgr.in_failsafe("a")
    mgr.remove("a")
    out = mgr.poll(clock.now)
    assert [(t.target, t.active) for t in out] == [("a", False)]
    assert not mgr.in_failsafe("a") and mgr.targets() == []
    assert mgr.next_deadline() == math.inf
    with pytest.raises(KeyError):
        mgr.remove("a")
    mgr.add(entry("b", interval=0.05), now=clock.now)
    assert mgr.next_deadline() == clock.now
    sent = mgr.due(clock.now)
    assert [(e.target, seq) for e, seq in sent] == [("b", 0)]
    assert mgr.status()["b"]["mode"] == "learning"


def test_adding_a_service_while_platform_failed_reports_it_in_failsafe() -> None:
    mgr = HeartbeatManager([entry(PLATFORM)], now=0.0)
    clock = Clock(mgr)
    clock.learn([PLATFORM])
    clock.beat({PLATFORM: None})
    mgr.add(entry("late"), now=clock.now)
    out = mgr.poll(clock.now)
    assert [(t.target, t.active, t.reason) for t in out] == [("late", True, "platform failed")]


def test_force_on_off_auto() -> None:
    mgr = HeartbeatManager([entry("svc")], now=0.0)
    clock = Clock(mgr)
    clock.learn(["svc"])
    out = mgr.force("svc", "on", clock.now)
    assert [(t.active, t.reason) for t in out] == [(True, "forced on")]
    assert clock.beat({"svc": RTT}) == [] and mgr.in_failsafe("svc")
    out = mgr.force("svc", "auto", clock.now)
    assert [(t.active, t.reason) for t in out] == [(False, "back to auto")]
    mgr.force("svc", "off", clock.now)
    assert clock.beat({"svc": None}) == []  # fails underneath, but pinned off
    assert not mgr.in_failsafe("svc") and mgr.status()["svc"]["self_failed"]
    assert [t.active for t in mgr.force("svc", "auto", clock.now)] == [True]
    with pytest.raises(ValueError):
        mgr.force("svc", "maybe", clock.now)


def test_sequence_numbers_wrap_at_16_bits() -> None:
    mgr = HeartbeatManager([entry(interval=0.001)], now=0.0)
    now = 0.0
    seqs = []
    for _ in range(65538):
        (e, seq), = mgr.due(now)
        seqs.append(seq)
        mgr.on_reply("svc", seq, now + RTT / 2)
        now = mgr.next_deadline()
    assert seqs[0] == 0 and seqs[65535] == 65535 and seqs[65536] == 0 and seqs[65537] == 1


def test_next_deadline_at_10ms_intervals() -> None:
    mgr = HeartbeatManager([entry("a", interval=0.010), entry("b", interval=0.010)], now=5.0)
    assert mgr.next_deadline() == 5.0
    assert len(mgr.due(5.0)) == 2
    assert mgr.due(5.0) == []
    assert mgr.next_deadline() == pytest.approx(5.010)  # learning: no timeouts pending
    assert mgr.due(5.0099) == []
    now = 5.010
    for i in range(1, 20):  # the schedule keeps a fixed cadence, no drift from late wakeups
        assert mgr.next_deadline() == pytest.approx(5.0 + 0.010 * i)
        sent = mgr.due(mgr.next_deadline() + 0.0003)
        assert len(sent) == 2
        for e, seq in sent:
            mgr.on_reply(e.target, seq, 5.0 + 0.010 * i + 0.0003 + RTT)
    # learned now: the next deadline is the timeout of an unanswered heartbeat when that is sooner
    t = mgr.next_deadline()
    assert t == pytest.approx(5.0 + 0.010 * 20)
    mgr.due(t)
    timeout = mgr.next_deadline()
    assert timeout == pytest.approx(t + RTT * 1.5)
    assert mgr.poll(timeout - 1e-9) == []
    assert len(mgr.poll(timeout)) == 2  # both timed out
    assert mgr.next_deadline() == pytest.approx(t + 0.010)


def test_loop_running_late_does_not_burst() -> None:
    mgr = HeartbeatManager([entry(interval=0.010)], now=0.0)
    mgr.due(0.0)
    assert len(mgr.due(0.5)) == 1  # 50 intervals late: one heartbeat, not 50
    assert mgr.next_deadline() == pytest.approx(0.51)


def test_unexpected_reply_payload_is_a_failure() -> None:
    mgr = HeartbeatManager([entry(expect=b"pong", learn=2)], now=0.0)
    now = 0.0
    for _ in range(2):
        (_, seq), = mgr.due(now)
        mgr.on_reply("svc", seq, now + RTT, b"xx pong xx")
        now = mgr.next_deadline()
    (_, seq), = mgr.due(now)
    out = mgr.on_reply("svc", seq, now + RTT, b"ERROR 500")
    assert out and out[0].active and out[0].reason.startswith("unexpected reply")


@pytest.mark.parametrize("bad", [
    dict(message="sctp"), dict(interval_s=0), dict(threshold=-1), dict(learn=0), dict(target=""),
    dict(interval_s=math.nan),
])
def test_entry_rejects_bad_values(bad: dict) -> None:
    args = dict(target="svc", message="udp", interval_s=0.1, threshold=1.5) | bad
    with pytest.raises(ValueError):
        HeartbeatEntry(**args)
