"""A new TCP connection on the ports of a closed one, through the BPF NIC in fail-safe mode, stays in the kernel.

bench/nic_bench.py's carry-off fail-safe row punted every segment of its bulk transfer (~1 Gbit/s
instead of ~4.5) when iperf3's connection met a closing conntrack entry on its ports (the backup's
stale TIME-WAIT answer made the client reset and retry). Here deterministically: the client opens a
connection from a fixed port, resets it, opens another from the same port and sends 2 MB; the
kernel must translate them (a handful of punts), not the pipeline (one per segment).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from testbed.failsafe.config import ServiceConfig
from testbed.failsafe.control import call
from testbed.failsafe.labnet import MAIN_IP, in_netns, lab_run

pytestmark = pytest.mark.integration

CLIENT_PORT = 45678
BULK = 2_000_000
CHUNK = 10_000


def connect(ns: str) -> socket.socket:
    """A TCP connection from the client's CLIENT_PORT to the main host's port 7000."""
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", CLIENT_PORT))
        s.settimeout(5)
        s.connect((MAIN_IP, 7000))
        return s
    return in_netns(ns, make)


@pytest.mark.parametrize("carry", [False, True], ids=["nocarry", "carry"])
def test_a_reconnect_on_a_reset_connection_s_ports_is_not_punted(tmp_path: Path, carry: bool) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with lab_run(tmp_path) as run:
        lab = run.lab
        lab.echo("m", "main", [], [7000], tmp_path / "delay-main")
        lab.echo("b", "backup", [], [7000], tmp_path / "delay-backup")
        nic = run.start_nic(services=(ServiceConfig("web", "tcp", 7000, message="tcp"),), interval_s=0.05,
                            threshold=4.0, learn=5, hysteresis=3, min_rtt_s=0.01, datapath="bpf", carry_tcp=carry)
        deadline = time.monotonic() + 10
        while any(v["mode"] != "normal" for v in call(nic.socket, "heartbeat_show").values()):  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "heartbeats never learned"
            time.sleep(0.02)
        assert call(nic.socket, "show")["datapath"] == "bpf"  # type: ignore[index]
        call(nic.socket, "mode", service="web", mode="on")
        first = connect(lab.ns["c"])
        first.sendall(b"hello\n")
        assert first.recv(100).startswith(b"backup:")
        first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        first.close()  # RST: the NIC's connection is closing
        second = connect(lab.ns["c"])
        got = bytearray()

        def read() -> None:
            while got.count(b"x") < BULK:
                data = second.recv(1 << 16)
                if not data:
                    return
                got.extend(data)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        punted = call(nic.socket, "counters")["punted"]  # type: ignore[index]
        for _ in range(BULK // CHUNK):
            second.sendall(b"x" * CHUNK)
        reader.join(20)
        punted = call(nic.socket, "counters")["punted"] - punted  # type: ignore[index,operator]
        second.close()
        handler = call(nic.socket, "counters")["failsafe_handler"]  # type: ignore[index]
        print(f"carry={carry}: {got.count(b'x')} bytes back, {punted} frames punted, {handler}")
        assert got.count(b"x") == BULK and got.startswith(b"backup:")
        assert handler["reopened"] == 1, handler
        assert punted < 50, f"{punted} punted for ~{BULK // 1448} client segments: the kernel left them to Python"
