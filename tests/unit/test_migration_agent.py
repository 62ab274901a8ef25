"""The state agent on loopback: a one-shot transfer carries every file; checkpoints carry only what changed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

AGENT = Path(__file__).resolve().parents[2] / "testbed" / "migration" / "agent.py"


def start(*args):
    return subprocess.Popen([sys.executable, "-u", str(AGENT), *map(str, args)], stdout=subprocess.PIPE, text=True)


def line(p):
    return json.loads(p.stdout.readline())


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_send_carries_the_whole_state(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "counter").write_text("41\n")
    (src / "ballast").write_bytes(b"x" * 100_000)
    port = free_port()
    recv = start("recv", port, dst, 1, 0)
    assert "listening" in line(recv)
    sent = subprocess.run([sys.executable, str(AGENT), "send", "127.0.0.1", "127.0.0.1", str(port), str(src)],
                          capture_output=True, text=True, timeout=30)
    assert sent.returncode == 0, sent.stderr
    got = line(recv)
    recv.wait(timeout=10)
    assert got["counter"] == 41 and got["bytes"] >= 100_000
    assert json.loads(sent.stdout)["bytes"] == got["bytes"]
    assert (dst / "counter").read_text() == "41\n" and (dst / "ballast").stat().st_size == 100_000


def test_checkpoints_send_only_changes_and_loss_is_seen(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "counter").write_text("1\n")
    (src / "ballast").write_bytes(b"x" * 50_000)
    port = free_port()
    recv = start("recv", port, dst, 0, 0.5)
    assert "listening" in line(recv)
    ckpt = start("checkpoint", "127.0.0.1", "127.0.0.1", port, src, 0.05)
    try:
        assert "connected" in line(ckpt)
        first = line(recv)
        assert first["seq"] == 1 and first["bytes"] > 50_000
        (src / "counter").write_text("2\n")
        time.sleep(0.01)
        frames = [line(recv) for _ in range(4)]
        assert all(f["bytes"] < 50_000 for f in frames)  # the ballast is not sent again
        assert frames[-1]["counter"] == 2 and (dst / "counter").read_text() == "2\n"
    finally:
        ckpt.kill()
        ckpt.wait()
    lost = line(recv)  # no frame for 0.5 s: the primary is taken for lost
    assert "lost" in lost
    recv.wait(timeout=5)
