"""The BPF data path's replay store, kept in the kernel (`pend` and `pslots` in bpf/nic.bpf.c).

The kernel program stores each critical request it forwards to the host in normal mode (UDP, TCP SYN)
in its flow's ring and answers the oldest one with each reply the host sends on the flow, counting
as `FailsafeHandler` does (mirrored, answered, expired, overflow, evicted; folded in by `refresh`). This
object gives the handler the same operations over those maps (`FailsafeHandler.store`), for what the
control plane does itself: requests and replies the kernel punted to the pipeline, passive evidence
(`has_pending`, `clear_pending`), the replay at failover (`take_pending`: every fresh request of the
service, oldest first), `prune` and `pending_count`. Bounds: PEND_SLOTS requests per flow (and the
handler's `pending_per_flow`), frames of at most PEND_BYTES, PEND_FLOWS flows, PEND_TOTAL frames in all
(the least recently stored go first: counted as evicted when the replay finds one gone). Userspace
updates a ring under its spin lock (BPF_F_LOCK) but not atomically with the kernel's read-modify-write:
only flows the kernel is not touching at that moment (punted frames, idle or failed-over flows) are
written from here.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from testbed.failsafe.bpf.libbpf import BPF_F_LOCK

if TYPE_CHECKING:
    from testbed.failsafe.bpf.libbpf import Map
    from testbed.failsafe.failsafe_handler import FailsafeHandler

PEND_SLOTS = 64  # as in nic.bpf.c
PEND_MASK = PEND_SLOTS - 1
PEND_BYTES = 1536
PQ = struct.Struct(f"<IIII{PEND_SLOTS}Q")  # lock, head, tail, pad, ts[PEND_SLOTS]
PSLOT = struct.Struct("<QIIII")  # ts, seq, sid, len, pad; then PEND_BYTES of frame
PSLOT_SIZE = PSLOT.size + PEND_BYTES
M32 = 0xFFFFFFFF
NO_SERVICE = 0xFFFFFFFF


def map_key(flow: bytes) -> bytes:
    """A `flow_key` (proto + the frame's bytes 26:38) as the kernel's `struct flow`."""
    return flow[:1] + b"\0\0\0" + flow[1:]


def slot_key(mkey: bytes, seq: int) -> bytes:
    """The `pslots` key of sequence number `seq` of flow `mkey`."""
    return mkey + struct.pack("<I", seq & PEND_MASK)


def ns(t: float) -> int:
    """Monotonic seconds as the kernel's bpf_ktime_get_ns (both CLOCK_MONOTONIC)."""
    return int(t * 1e9)


class KernelPending:
    """`FailsafeHandler.store` over the kernel's rings (see the module docstring)."""

    def __init__(self, handler: "FailsafeHandler", rings: "Map", slots: "Map", sidx: dict[str, int]) -> None:
        self.handler = handler
        self.rings = rings
        self.slots = slots
        self.sidx = sidx  # service -> the data path's service number (shared, filled by install)

    def cap(self) -> int:
        """The per-flow bound the kernel applies."""
        per = self.handler.pending_per_flow
        return min(per, PEND_SLOTS) if per > 0 else PEND_SLOTS

    def _get(self, mkey: bytes) -> tuple[int, int, list[int]] | None:
        raw = self.rings.lookup(mkey, BPF_F_LOCK)
        if raw is None:
            return None
        v = PQ.unpack_from(raw)
        return v[1], v[2], list(v[4:])

    def _put(self, mkey: bytes, head: int, tail: int, ts: list[int]) -> None:
        self.rings.update(mkey, PQ.pack(0, head & M32, tail & M32, 0, *ts), BPF_F_LOCK)

    def mirror_key(self, key: bytes, frame: bytes, service: str, now: float) -> None:
        """Keep `frame` (a request the pipeline forwarded itself) as the kernel would have."""
        st = self.handler.stats
        if not frame or len(frame) > PEND_BYTES:
            st.pending_overflow += 1
            return
        mkey = map_key(key)
        got = self._get(mkey)
        if got is None:
            head, tail, ts = 0, 0, [0] * PEND_SLOTS
        else:
            head, tail, ts = got
        now_ns, age = ns(now), ns(self.handler.pending_max_age_s)
        while head != tail and now_ns - ts[head & PEND_MASK] > age:
            head = (head + 1) & M32
            st.pending_expired += 1
        cap = self.cap()
        while (tail - head) & M32 >= cap:
            head = (head + 1) & M32
            st.pending_overflow += 1
        ts[tail & PEND_MASK] = now_ns
        self.slots.update(slot_key(mkey, tail), PSLOT.pack(now_ns, tail, self.sidx.get(service, NO_SERVICE),
                                                           len(frame), 0) + bytes(frame).ljust(PEND_BYTES, b"\0"))
        try:
            self._put(mkey, head, tail + 1, ts)
        except Exception:  # noqa: BLE001 - no room for another flow: not kept
            st.pending_evicted += 1
            return
        st.mirrored += 1

    def answered_key(self, key: bytes) -> None:
        """The host answered flow `key`: its oldest pending request goes."""
        mkey = map_key(key)
        got = self._get(mkey)
        if got is None or got[0] == got[1]:
            return
        head, tail, ts = got
        self._put(mkey, head + 1, tail, ts)
        self.handler.stats.answered += 1

    def has_pending(self, key: bytes) -> bool:
        """True when flow `key` has a request the host has not answered."""
        got = self._get(map_key(key))
        return got is not None and got[0] != got[1]

    def clear_pending(self, key: bytes) -> int:
        """Forget flow `key`'s pending requests (the host refused them); how many there were."""
        mkey = map_key(key)
        got = self._get(mkey)
        if got is None:
            return 0
        head, tail, ts = got
        n = (tail - head) & M32
        if n:
            self._put(mkey, tail, tail, ts)
            self.handler.stats.pending_refused += n
        return n

    def take_pending(self, service: str, now: float, wait_unwritten: bool = True) -> list[bytes]:
        """Remove and return `service`'s unanswered, still fresh requests, oldest first.

        A slot the kernel has not finished writing (its sequence number not yet the expected one) stays,
        with the rest of its flow, for the next call (the data path calls again after the mode change);
        with `wait_unwritten` off (that last call) it is counted as evicted and skipped.
        """
        st = self.handler.stats
        want = self.sidx.get(service, NO_SERVICE)
        now_ns, age = ns(now), ns(self.handler.pending_max_age_s)
        out: list[tuple[int, int, bytes]] = []
        for mkey in self.rings.keys():
            got = self._get(mkey)
            if got is None or got[0] == got[1]:
                continue
            head, tail, _ = got
            i = head
            while i != tail:
                raw = self.slots.lookup(slot_key(mkey, i))
                if raw is None:  # evicted to make room (PEND_TOTAL)
                    st.pending_evicted += 1
                    i = (i + 1) & M32
                    continue
                t, seq, sid, n, _ = PSLOT.unpack_from(raw)
                if sid != want and seq == i:
                    break  # another service's flow
                if seq != i:
                    if wait_unwritten:
                        break  # not written yet
                    st.pending_evicted += 1
                    i = (i + 1) & M32
                    continue
                if now_ns - t <= age:
                    out.append((t, i, raw[PSLOT.size:PSLOT.size + n]))
                else:
                    st.pending_expired += 1
                i = (i + 1) & M32
            if i != head:
                cur = self._get(mkey)
                if cur is not None:
                    self._put(mkey, i, cur[1], cur[2])
        out.sort(key=lambda r: (r[0], r[1]))
        return [f for _, _, f in out]

    def prune(self, now: float) -> None:
        """Flows whose newest request is older than the window: their requests expire, the ring goes.

        (Flows still receiving requests are trimmed by the kernel as each one arrives.)
        """
        st = self.handler.stats
        now_ns, age = ns(now), ns(self.handler.pending_max_age_s)
        for mkey in self.rings.keys():
            got = self._get(mkey)
            if got is None:
                continue
            head, tail, ts = got
            if now_ns - ts[(tail - 1) & PEND_MASK] <= age:
                continue
            st.pending_expired += (tail - head) & M32
            self.rings.delete(mkey)

    def count(self) -> int:
        """Pending requests in all rings."""
        total = 0
        for mkey in self.rings.keys():
            got = self._get(mkey)
            if got is not None:
                total += (got[1] - got[0]) & M32
        return total


__all__ = ["KernelPending", "PEND_BYTES", "PEND_SLOTS"]
