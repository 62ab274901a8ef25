"""Migration primitives on a live Testbed: state transfer carries the counter across the shaped WAN,
cold migration starts from the image and loses it; the address follows; nothing is left."""

from __future__ import annotations

import socket
from pathlib import Path

from testbed.emulation.testbed import Testbed
from testbed.experiment import services
from testbed.experiment.spec import ServiceRun
from testbed.migration.primitives import migrate
from testbed.testing import leftovers
from testbed.topology.loader import load_topology

ROOT = Path(__file__).resolve().parents[2]


def ask(tb, body: bytes, tries: int = 3) -> bytes:
    """A request from the client host to the counter's shared address, re-sent on a 1 s timeout; its reply.

    Re-sending matters right after a steer: OVS's userspace datapath applies the new flows a few ms
    after its barrier reply, so a first datagram may still take the old path to the stopped instance.
    """
    def probe():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1)
            for _ in range(tries):
                s.sendto(body, ("10.0.0.50", 7100))
                try:
                    return s.recv(256)
                except socket.timeout:
                    continue
            raise TimeoutError(f"no reply to {body!r} in {tries} tries")
    return services.in_netns(tb.node("cli").pid, probe)


def test_state_transfer_keeps_the_count_cold_loses_it(tmp_path):
    topo = load_topology(ROOT / "experiments" / "topologies" / "cozzolino.yaml")
    with Testbed(topo, tmp_path / "tb") as tb:
        rid = tb.rid
        svc = ServiceRun("mec1", "counter", command=("python3", "/app/counter.py", "100000"))
        services.start(tb, svc)
        services.start(tb, ServiceRun("mec2", "counter"))
        tb.steer("10.0.0.50", "mec1")
        for i in range(1, 6):
            assert ask(tb, f"REQ {i} 0".encode()).endswith(f"@mec1 n={i}\n".encode())
        moved = migrate(tb, svc, "mec2", "state-transfer", log_dir=tmp_path)
        assert moved.counter == 5 and moved.bytes >= 100_000, moved
        assert ask(tb, b"REQ 6 0").endswith(b"@mec2 n=6\n")  # served by the destination, from the copied state
        assert moved.downtime_s > 0 and set(moved.phases) == {"prepare", "stop", "transfer", "start", "steer"}
        back = migrate(tb, ServiceRun("mec2", "counter", command=svc.command), "mec1", "cold", log_dir=tmp_path)
        assert back.bytes == 0 and "reset" in back.phases
        assert ask(tb, b"REQ 7 0").endswith(b"@mec1 n=1\n")  # a cold start knows nothing
        assert (tmp_path / "migrations.jsonl").read_text().count("\n") == 2
    assert leftovers(rid) == []
