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


def send_once(src, dst):
    """A one-shot send of `src` into `dst` on loopback; (what the sender printed, what the receiver printed)."""
    port = free_port()
    recv = start("recv", port, dst, 1, 0)
    assert "listening" in line(recv)
    sent = subprocess.run([sys.executable, str(AGENT), "send", "127.0.0.1", "127.0.0.1", str(port), str(src)],
                          capture_output=True, text=True, timeout=30)
    assert sent.returncode == 0, sent.stderr
    got = line(recv)
    recv.wait(timeout=10)
    return json.loads(sent.stdout), got


def test_send_carries_the_whole_state(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "counter").write_text("41\n")
    (src / "ballast").write_bytes(b"x" * 100_000)
    sent, got = send_once(src, dst)
    assert got["counter"] == 41 and got["bytes"] >= 100_000
    assert sent["bytes"] == got["bytes"]
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


def test_subdirectories_cross_and_unsafe_members_are_not_extracted(tmp_path):
    import io
    import socket
    import struct
    import tarfile

    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "counter").write_text("42\n")
    (src / "sub" / "blob").write_bytes(bytes(range(256)) * 400)
    sent, got = send_once(src, dst)
    assert sent["bytes"] == got["bytes"] > 102400 and got["files"] == 2
    assert (dst / "counter").read_text() == "42\n"
    assert (dst / "sub" / "blob").read_bytes() == bytes(range(256)) * 400

    buf = io.BytesIO()  # a frame that tries to write outside its directory and to plant a link
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("../escaped", "/abs", "ok"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    payload, head = buf.getvalue(), json.dumps({"seq": 1}).encode()
    inbox = tmp_path / "inbox" / "dir"
    port = free_port()
    recv = start("recv", port, inbox, 1, 0)
    assert "listening" in line(recv)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack("!I", len(head)) + head + struct.pack("!Q", len(payload)) + payload)
        assert "received" in line(recv)
    recv.wait(timeout=10)
    assert sorted(p.name for p in (tmp_path / "inbox").rglob("*")) == ["dir", "ok"]


def test_the_agent_runs_on_the_machine_in_a_hosts_namespace():
    from testbed.migration import transfer

    argv = transfer.host_argv(1234, ["recv", 7, Path("/x"), 1, 0])
    assert argv[:5] == ["nsenter", "-t", "1234", "-n", sys.executable]
    assert argv[5:] == ["-u", str(AGENT), "recv", "7", "/x", "1", "0"]
