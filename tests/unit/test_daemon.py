"""The one daemon launcher: recorded before it runs, ready by ping, exits and hangs reported, TERM then KILL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed import daemon, ledger, proc
from testbed.errors import CommandError, TestbedError
from testbed.ledger import Ledger

#: A stand-in daemon: serves testbed.control on argv[1] (after an optional delay), until SIGTERM.
FAKE = """
import signal, sys, threading, time
from pathlib import Path
from testbed.control import ServerThread
sock, mode = Path(sys.argv[1]), sys.argv[2]
print("fake daemon starting", flush=True)
if mode == "exit":
    print("cannot bind: port taken", flush=True)
    sys.exit(3)
if mode == "mute":
    time.sleep(60)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, lambda *a: print("ignoring TERM", flush=True))
else:
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 0)
srv = ServerThread(sock, {"echo": lambda a: a})
try:
    while True:
        time.sleep(1)
finally:
    srv.close()
"""


@pytest.fixture
def led(tmp_path: Path) -> Ledger:
    return Ledger(ledger.new_run_id(tmp_path), tmp_path / "run", state_dir=tmp_path)


def fake(tmp_path: Path, mode: str, *extra: str) -> list[str]:
    script = tmp_path / "fake_daemon.py"
    script.write_text(FAKE)
    return [sys.executable, str(script), str(tmp_path / "d.sock"), mode, *extra]


def test_start_records_then_answers_then_stops(tmp_path: Path, led: Ledger) -> None:
    sock = tmp_path / "d.sock"
    d = daemon.start("fake", fake(tmp_path, "ok", "0.3"), socket=sock, log_path=tmp_path / "d.log",
                     ledger=led, timeout=10)
    assert d.alive() and sock.is_socket()
    assert d.call("ping") == {"pid": d.pid}  # the recorded PID is the daemon itself (held, then exec'd)
    assert d.call("echo", cmd="x", socket_path="y") == {"cmd": "x", "socket_path": "y"}
    records = [json.loads(line) for line in (tmp_path / "run" / "resources.jsonl").read_text().splitlines()]
    assert records[0] == {"kind": "file", "name": str(sock), "what": "fake"}
    assert records[1]["kind"] == "process" and records[1]["name"] == str(d.pid)
    assert records[1]["start"] == ledger.proc_start_time(d.pid) and records[1]["what"] == "fake"
    assert d.stop() == 0
    assert not d.alive() and not sock.exists()
    assert "fake daemon starting" in d.log_tail()


def test_a_daemon_that_exits_is_reported_with_status_and_log(tmp_path: Path, led: Ledger) -> None:
    with pytest.raises(daemon.DaemonExited) as exc:
        daemon.start("fake", fake(tmp_path, "exit"), socket=tmp_path / "d.sock", log_path=tmp_path / "d.log",
                     ledger=led, timeout=10)
    assert exc.value.returncode == 3
    assert "exited with status 3" in str(exc.value) and "cannot bind: port taken" in str(exc.value)


def test_a_daemon_that_never_answers_is_stopped_after_the_timeout(tmp_path: Path, led: Ledger) -> None:
    t0 = time.monotonic()
    with pytest.raises(TestbedError, match=r"did not become ready .* within 0.5 s") as exc:
        daemon.start("fake", fake(tmp_path, "mute"), socket=tmp_path / "d.sock", log_path=tmp_path / "d.log",
                     ledger=led, timeout=0.5)
    assert time.monotonic() - t0 < 8
    assert "fake daemon starting" in str(exc.value)
    pid = int([json.loads(x) for x in (tmp_path / "run" / "resources.jsonl").read_text().splitlines()][1]["name"])
    assert ledger.proc_start_time(pid) is None  # stopped and reaped


def test_ready_callback_is_waited_for(tmp_path: Path, led: Ledger) -> None:
    calls = []

    def ready(d: daemon.Daemon) -> bool:
        calls.append(d.pid)
        return len(calls) >= 3

    d = daemon.start("fake", fake(tmp_path, "ok"), socket=tmp_path / "d.sock", log_path=tmp_path / "d.log",
                     ledger=led, ready=ready)
    try:
        assert len(calls) == 3
    finally:
        d.stop()


def test_stop_kills_a_daemon_that_ignores_term(tmp_path: Path, led: Ledger) -> None:
    d = daemon.start("fake", fake(tmp_path, "stubborn"), socket=tmp_path / "d.sock",
                     log_path=tmp_path / "d.log", ledger=led)
    t0 = time.monotonic()
    assert d.stop(timeout=0.5) == -9
    assert 0.4 < time.monotonic() - t0 < 5
    assert not (tmp_path / "d.sock").exists()  # killed, so it could not remove its socket: stop did


def test_in_netns_and_module_argv() -> None:
    assert daemon.in_netns(["a", 1]) == ["a", "1"]
    assert daemon.in_netns(["a"], netns_pid=42) == ["nsenter", "-t", "42", "-n", "a"]
    assert daemon.in_netns(["a"], netns="tb12ab-le") == ["ip", "netns", "exec", "tb12ab-le", "a"]
    with pytest.raises(ValueError):
        daemon.in_netns(["a"], netns_pid=1, netns="x")
    assert daemon.module_argv("testbed.linkemu", "--ctl", Path("/s")) == [sys.executable, "-m", "testbed.linkemu",
                                                                         "--ctl", "/s"]
    env = daemon.repo_env({"PYTHONPATH": "/elsewhere"})
    assert env["PYTHONPATH"] == f"{daemon.REPO_ROOT}{os.pathsep}/elsewhere"


def test_held_spawn_runs_nothing_when_recording_fails(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    def record(pid: int) -> None:
        assert ledger.proc_start_time(pid) is not None  # it exists, held
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        proc.spawn(["touch", str(marker)], output=tmp_path / "out", on_start=record)
    time.sleep(0.2)  # give a wrongly released child time to do what it must not
    assert not marker.exists()


def test_held_spawn_exits_when_its_starter_never_releases_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    seen: list[int] = []
    # a starter that dies between spawning and releasing: here, its pipe closes without the go line
    p = subprocess.Popen(["/bin/sh", "-c", proc._HOLD, "sh", "touch", str(marker)],
                              stdin=subprocess.PIPE)
    assert p.stdin is not None
    p.stdin.close()
    seen.append(p.wait(5))
    assert seen == [proc.EXIT_NOT_RELEASED] and not marker.exists()


def test_held_spawn_of_a_missing_command(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no-such-command-x: command not found"):
        proc.spawn(["no-such-command-x"], output=tmp_path / "out", on_start=lambda pid: None)


def test_a_failing_ready_check_stops_the_daemon(tmp_path: Path, led: Ledger) -> None:
    def ready(d: daemon.Daemon) -> bool:
        raise RuntimeError("check broke")

    with pytest.raises(RuntimeError, match="check broke"):
        daemon.start("fake", fake(tmp_path, "ok"), socket=tmp_path / "d.sock", log_path=tmp_path / "d.log",
                     ledger=led, ready=ready)
    pid = int([json.loads(x) for x in (tmp_path / "run" / "resources.jsonl").read_text().splitlines()][1]["name"])
    assert ledger.proc_start_time(pid) is None and not (tmp_path / "d.sock").exists()
