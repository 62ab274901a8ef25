"""The state copy's tar stream over TCP on loopback: every file arrives, bytes counted on both sides."""

from __future__ import annotations

import sys
from pathlib import Path

from testbed import proc
from testbed.controller import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_a_directory_crosses_a_socket(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "counter").write_text("42\n")
    (src / "sub" / "blob").write_bytes(bytes(range(256)) * 400)
    port = free_port()
    cmd = [sys.executable, "-m", "testbed.replication.statecopy"]
    receiver = proc.spawn_piped([*cmd, "recv", "127.0.0.1", port, dst], cwd=ROOT)
    try:
        assert receiver.stdout.readline().decode().strip() == "ready"
        sent = proc.run([*map(str, cmd), "send", "127.0.0.1", str(port), str(src)], timeout=30).stdout.split()
        done = proc.communicate(receiver, timeout=30).decode().split()
    finally:
        proc.stop(receiver)
    assert sent[0] == "sent" and done[0] == "done" and int(sent[1]) == int(done[1]) > 102400
    assert (dst / "counter").read_text() == "42\n"
    assert (dst / "sub" / "blob").read_bytes() == bytes(range(256)) * 400
