"""Carries out a steering Plan on live switches: each phase sent, then a barrier, then wait for every reply.

`PlanRunner` is used from the control socket's thread (testbed.control.ServerThread) while the
os-ken app's own thread receives the barrier replies and hands them over with `acknowledged()`.
Barriers carry xids of their own range, so they never collide with the xids os-ken gives other
messages. Time is read through `clock`, so the timings in the answer are testable.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any, Callable, Mapping

from os_ken.ofproto import ofproto_v1_3_parser as parser

from controllers.steering import Plan

log = logging.getLogger(__name__)

#: Barrier xids: 0x57EE0000 upwards (os-ken numbers its own messages from 0).
XID_BASE = 0x57EE0000


class PlanRunner:
    """Sends plans to the connected datapaths (dpid -> os-ken Datapath) and waits for their barriers."""

    def __init__(self, datapaths: Mapping[int, Any], timeout: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.datapaths = datapaths
        self.timeout = timeout
        self.clock = clock
        self._xids = itertools.count()
        self._waiting: dict[tuple[int, int], threading.Event] = {}
        self._lock = threading.Lock()

    def acknowledged(self, dpid: int, xid: int) -> None:
        """A barrier reply arrived (called from the app's event thread)."""
        with self._lock:
            event = self._waiting.pop((dpid, xid), None)
        if event is not None:
            event.set()

    def run(self, plan: Plan) -> dict[str, Any]:
        """Carry out `plan` phase by phase; its result with per-phase timings (ms) once every switch acked."""
        for phase in plan.phases:
            missing = sorted(d for d in phase if d not in self.datapaths)
            if missing:
                raise ValueError(f"switch(es) not connected: {', '.join(f'{d:#x}' for d in missing)}")
        t0 = self.clock()
        acked_ms = []
        for i, phase in enumerate(plan.phases):
            events = {}
            for dpid, msgs in phase.items():
                dp = self.datapaths[dpid]
                for msg in msgs:
                    msg.datapath = dp
                    dp.send_msg(msg)
                events[dpid] = self._barrier(dp, dpid)
            deadline = time.monotonic() + self.timeout
            for dpid, event in events.items():
                if not event.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"switch {dpid:#x} did not acknowledge phase {i + 1} of "
                                       f"{len(plan.phases)} within {self.timeout:g} s")
            acked_ms.append(round((self.clock() - t0) * 1000, 3))
        flow_mods = sum(len(m) for p in plan.phases for m in p.values())
        return {**plan.result, "phases": len(plan.phases), "flow_mods": flow_mods, "acked_ms": acked_ms}

    def _barrier(self, dp: Any, dpid: int) -> threading.Event:
        """Send a barrier request to `dp`; the event its reply will set."""
        msg = parser.OFPBarrierRequest(dp)
        msg.set_xid(XID_BASE + next(self._xids) % 0x10000)
        event = threading.Event()
        with self._lock:
            self._waiting[(dpid, msg.xid)] = event
        dp.send_msg(msg)
        return event
