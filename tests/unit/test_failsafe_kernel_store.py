"""The BPF data path's replay store (bpf_pending.KernelPending) against the handler's own, over maps kept in dicts."""

from __future__ import annotations

import random

from testbed.failsafe.bpf_pending import PEND_BYTES, PEND_SLOTS, PQ, PSLOT_SIZE, KernelPending, map_key
from testbed.failsafe.conntrack import ConnTrack
from testbed.failsafe.failsafe_handler import FailsafeHandler
from testbed.failsafe.service_table import ServiceTable


class FakeMap:
    """A BPF hash map's userspace view (libbpf.Map's methods) in a dict."""

    def __init__(self, key_size: int, value_size: int, max_entries: int = 4096) -> None:
        self.key_size, self.value_size, self.max_entries = key_size, value_size, max_entries
        self.d: dict[bytes, bytes] = {}

    def lookup(self, key: bytes, flags: int = 0) -> bytes | None:
        return self.d.get(key)

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        assert len(key) == self.key_size and len(value) == self.value_size
        if key not in self.d and len(self.d) >= self.max_entries:
            raise OSError("map full")
        self.d[key] = value

    def delete(self, key: bytes) -> None:
        self.d.pop(key, None)

    def keys(self) -> list[bytes]:
        return list(self.d)


def handlers(per_flow: int = 0) -> tuple[FailsafeHandler, FailsafeHandler, FakeMap]:
    def one() -> FailsafeHandler:
        return FailsafeHandler(b"\x0a\0\0\x6f", b"\2" * 6, ServiceTable(()), ConnTrack(), pending_per_flow=per_flow,
                               pending_max_age_s=1.0)

    ref, k = one(), one()
    rings = FakeMap(16, PQ.size)
    k.store = KernelPending(k, rings, FakeMap(20, PSLOT_SIZE), {"echo": 0, "web": 1})
    return ref, k, rings


def flow(i: int, port: int = 5000) -> bytes:
    return bytes([17, 10, 0, 0, 7, 10, 0, 0, 11]) + (20000 + i).to_bytes(2, "big") + port.to_bytes(2, "big")


def test_random_operations_give_the_same_requests_and_counters() -> None:
    rng = random.Random(7)
    ref, k, _ = handlers(per_flow=8)
    now = 10.0
    for step in range(3000):
        now += rng.random() * 0.01
        op = rng.random()
        key = flow(rng.randrange(6), rng.choice((5000, 7000)))
        svc = "echo" if key[-2:] == (5000).to_bytes(2, "big") else "web"
        if op < 0.55:
            frame = bytes([step & 0xFF]) * rng.randint(42, 300)
            for h in (ref, k):
                h.mirror_key(key, frame, svc, now)
        elif op < 0.9:
            for h in (ref, k):
                h.answered_key(key)
        elif op < 0.93:
            assert ref.has_pending(key) == k.has_pending(key)
            assert ref.clear_pending(key) == k.clear_pending(key)
        elif op < 0.96:
            assert ref.take_pending(svc, now) == k.take_pending(svc, now)
        else:
            now += 1.5  # everything pending expires on the next request of its flow
        assert ref.pending_count == k.pending_count, step
        assert ref.stats == k.stats, step
    assert ref.stats.mirrored > 1000 and ref.stats.answered > 500 and ref.stats.pending_overflow > 0
    assert ref.stats.pending_expired > 0 and ref.stats.resent == 0


def test_a_flow_keeps_at_most_pend_slots_and_frames_come_back_byte_for_byte_oldest_first() -> None:
    _, k, _ = handlers()
    frames = [bytes([i]) * (60 + i) for i in range(PEND_SLOTS + 5)]
    for i, f in enumerate(frames):
        k.mirror_key(flow(1), f, "echo", 1.0 + i * 1e-3)
    k.mirror_key(flow(2), b"\xee" * PEND_BYTES, "echo", 1.5)
    assert k.pending_count == PEND_SLOTS + 1 and k.stats.pending_overflow == 5
    k.mirror_key(flow(3), b"\xff" * (PEND_BYTES + 1), "echo", 1.5)  # too long to keep: counted, not kept
    assert k.stats.pending_overflow == 6 and k.pending_count == PEND_SLOTS + 1
    assert k.take_pending("web", 1.6) == []
    got = k.take_pending("echo", 1.6)
    assert got == frames[5:] + [b"\xee" * PEND_BYTES]
    assert k.pending_count == 0 and k.take_pending("echo", 1.6) == []


def test_a_slot_the_kernel_has_not_finished_writing_waits_for_the_next_take() -> None:
    _, k, rings = handlers()
    k.mirror_key(flow(1), b"a" * 60, "echo", 1.0)
    k.mirror_key(flow(1), b"b" * 60, "echo", 1.0)
    store = k.store
    assert isinstance(store, KernelPending)
    skey = map_key(flow(1)) + (1).to_bytes(4, "little")
    full = store.slots.d[skey]
    store.slots.d[skey] = full[:8] + (1 + PEND_SLOTS).to_bytes(4, "little") + full[12:]  # a stale sequence number
    assert k.take_pending("echo", 1.1) == [b"a" * 60]
    store.slots.d[skey] = full
    assert k.take_pending("echo", 1.1) == [b"b" * 60]
    assert rings.d and k.pending_count == 0


def test_prune_expires_idle_flows_and_removes_their_rings() -> None:
    ref, k, rings = handlers()
    for h in (ref, k):
        h.mirror_key(flow(1), b"x" * 60, "echo", 1.0)
        h.mirror_key(flow(1), b"y" * 60, "echo", 1.1)
        h.mirror_key(flow(2), b"z" * 60, "echo", 2.5)
        h.prune(2.6)
    assert ref.stats == k.stats and ref.pending_count == k.pending_count == 1
    assert list(rings.d) == [map_key(flow(2))]
