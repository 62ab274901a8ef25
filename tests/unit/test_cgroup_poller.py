"""CgroupPoller's CPU share: the interval is the one between its cgroup reads, however slow Docker answers."""

from __future__ import annotations

import time
from types import SimpleNamespace

from testbed.migration.chain import CgroupPoller

RATE = 0.25  # cores the node's process uses, steadily


class SlowContainer:
    """A container whose reload takes longer each time (a loaded engine)."""

    def __init__(self) -> None:
        self.attrs = {"State": {"Pid": 4242}}
        self.delays = iter([0.0, 0.01, 0.12, 0.0, 0.15])

    def reload(self) -> None:
        time.sleep(next(self.delays, 0.0))


def test_cpu_share_is_measured_between_reads_not_between_rounds(monkeypatch) -> None:
    box = SlowContainer()
    tb = SimpleNamespace(node=lambda host: SimpleNamespace(container=box),
                         topo=SimpleNamespace(host=lambda host: SimpleNamespace(cpu=0.5)))
    monkeypatch.setattr(CgroupPoller, "read", staticmethod(lambda pid: (int(time.monotonic() * RATE * 1e9), 1, 2)))
    poller = CgroupPoller(tb)
    t0 = time.monotonic()
    shares = []
    for k in range(5):
        now = time.monotonic() - t0  # the round's time, taken before the (slow) reload
        state = poller.poll("n1", now)
        assert state is not None
        shares.append(state.cpu)
        time.sleep(0.05)
    # 0.25 cores of a 0.5-core limit: half of it, in every round after the first
    assert all(abs(s - 0.5) < 0.05 for s in shares[1:]), shares
