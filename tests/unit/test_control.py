"""The daemons' control protocol: round trips, errors, bad and slow clients, permissions, ping; the NIC's socket_for."""

from __future__ import annotations

import json
import select
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from testbed import errors
from testbed.errors import UsageError
from testbed import control
from testbed.control import MAX_REQUEST, ControlServer, ServerThread, call
from testbed.failsafe import control as nic_control
from testbed.failsafe.control import socket_for


def fake_handlers() -> dict:
    """A tiny handler set standing in for the NIC's."""
    state = {"mode": "auto"}

    def mode(args: dict) -> dict:
        if args.get("state") not in ("on", "off", "auto"):
            raise ValueError("state must be on, off or auto")
        state["mode"] = args["state"]
        return {"service": args.get("service"), "mode": state["mode"]}

    def crash(args: dict) -> None:
        raise RuntimeError("boom")

    return {
        "echo": lambda args: args,
        "mode": mode,
        "crash": crash,
        "big": lambda args: "x" * int(args.get("n", 10)),
        "bytes": lambda args: {"payload": b"ping\x00", "set": {1}},
    }


class Loop:
    """Stands in for the NIC's epoll loop: one fd, on_readable when it fires."""

    def __init__(self, server: ControlServer) -> None:
        self.server = server
        self.stop = threading.Event()
        self.max_call_s = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        ep = select.epoll()
        ep.register(self.server.fileno(), select.EPOLLIN)
        while not self.stop.is_set():
            for fd, _ in ep.poll(0.01):
                t = time.perf_counter()
                self.server.on_readable(fd)
                self.max_call_s = max(self.max_call_s, time.perf_counter() - t)
        ep.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, Loop]]:
    path = tmp_path / "run" / "nic-mec1.sock"
    server = ControlServer(path, fake_handlers())
    loop = Loop(server)
    yield path, loop
    loop.stop.set()
    loop.thread.join(2)
    server.close()
    assert not path.exists()


def raw(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(path))  # blocking: waits while the listen backlog is full
    s.settimeout(3)
    return s


def read_lines(s: socket.socket, n: int) -> list[dict]:
    buf = b""
    while buf.count(b"\n") < n:
        chunk = s.recv(65536)
        assert chunk, "server closed early"
        buf += chunk
    return [json.loads(line) for line in buf.splitlines()[:n]]


def test_round_trip_and_handler_errors(served: tuple[Path, Loop]) -> None:
    path, _ = served
    assert call(path, "echo", a=1, b="x") == {"a": 1, "b": "x"}
    assert call(path, "mode", service="svc1", state="on") == {"service": "svc1", "mode": "on"}
    with pytest.raises(errors.TestbedError, match="mode: state must be on, off or auto"):
        call(path, "mode", service="svc1", state="sideways")
    with pytest.raises(errors.TestbedError, match="unknown command 'nope'; known: big, bytes, crash, echo, mode, ping"):
        call(path, "nope")
    with pytest.raises(errors.TestbedError, match="crash: internal error: RuntimeError: boom"):
        call(path, "crash")
    assert call(path, "bytes") == {"payload": "ping\x00", "set": [1]}
    assert len(call(path, "big", n=3_000_000)) == 3_000_000  # larger than a socket buffer


def test_socket_is_root_only(served: tuple[Path, Loop]) -> None:
    path, _ = served
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_garbage_gets_an_error_and_the_connection_stays_usable(served: tuple[Path, Loop]) -> None:
    path, _ = served
    s = raw(path)
    s.sendall(b"\xff\xfe not json\n[1,2]\n{\"cmd\": 5}\n{\"cmd\":\"echo\",\"args\":[]}\n" + b"[" * 100000 + b"\n")
    s.sendall(b'{"cmd": "echo", "args": {"still": "alive"}}\n')
    replies = read_lines(s, 6)
    assert [r["ok"] for r in replies] == [False] * 5 + [True]
    assert replies[0]["error"].startswith("bad request: not JSON")
    assert replies[1]["error"] == "bad request: expected an object with cmd and args"
    assert replies[2]["error"] == "bad request: cmd must be a non-empty string"
    assert replies[3]["error"] == "bad request: args must be an object"
    assert replies[4]["error"].startswith("request too long") or replies[4]["error"].startswith("bad request")
    assert replies[5]["result"] == {"still": "alive"}
    s.close()


def test_oversized_request_is_refused_then_the_next_is_served(served: tuple[Path, Loop]) -> None:
    path, _ = served
    s = raw(path)
    s.sendall(b'{"cmd": "echo", "args": {"x": "' + b"a" * (MAX_REQUEST * 3) + b'"}}\n')
    s.sendall(b'{"cmd": "echo", "args": {"n": 2}}\n')
    first, second = read_lines(s, 2)
    assert first == {"ok": False, "error": f"request too long (max {MAX_REQUEST} bytes)"}
    assert second == {"ok": True, "result": {"n": 2}}
    s.close()


def test_pipelined_requests_are_all_answered(served: tuple[Path, Loop]) -> None:
    path, _ = served
    s = raw(path)
    n = 200  # far more than MAX_REQUESTS_PER_CALL: the backlog must be served without new bytes
    s.sendall(b"".join(json.dumps({"cmd": "echo", "args": {"i": i}}).encode() + b"\n" for i in range(n)))
    replies = read_lines(s, n)
    assert [r["result"]["i"] for r in replies] == list(range(n))
    s.close()


def test_request_then_half_close_still_gets_its_reply(served: tuple[Path, Loop]) -> None:
    path, _ = served
    s = raw(path)
    s.sendall(b'{"cmd": "echo", "args": {"k": 1}}\n')
    s.shutdown(socket.SHUT_WR)
    assert read_lines(s, 1) == [{"ok": True, "result": {"k": 1}}]
    s.close()


def test_slow_and_stuck_clients_do_not_block_others(served: tuple[Path, Loop]) -> None:
    path, loop = served
    stuck = raw(path)
    stuck.sendall(b'{"cmd": "echo", "ar')  # never finishes its line
    hog = raw(path)
    hog.setblocking(False)
    req = json.dumps({"cmd": "big", "args": {"n": 100_000}}).encode() + b"\n"
    dropped = False
    try:  # asks for many large replies and never reads them
        for _ in range(200):
            hog.send(req)
            time.sleep(0.001)
    except BlockingIOError:
        pass
    except (BrokenPipeError, ConnectionResetError):
        dropped = True  # the server gave up on it: what it should do
    silent = [raw(path) for _ in range(5)]  # connect and say nothing
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert call(path, "echo", ok=True, timeout=2) == {"ok": True}
        time.sleep(0.05)
        if loop.max_call_s > 0 and time.monotonic() > deadline - 4.5:
            break
    assert loop.thread.is_alive()
    assert dropped or len(loop.server._clients) <= 7
    assert loop.max_call_s < 0.5, f"on_readable took {loop.max_call_s:.3f} s"
    for s in [stuck, hog, *silent]:
        s.close()
    assert call(path, "echo", after="close") == {"after": "close"}


def test_many_clients_beyond_the_limit(served: tuple[Path, Loop]) -> None:
    path, _ = served
    socks = [raw(path) for _ in range(control.MAX_CLIENTS + 10)]
    time.sleep(0.2)
    assert call(path, "echo", i=1) == {"i": 1}
    for s in socks:
        s.close()


def test_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "nic-x.sock"
    old = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old.bind(str(path))
    old.close()  # the file stays, nothing listens
    server = ControlServer(path, {"echo": lambda a: a})
    try:
        assert path.is_socket()
    finally:
        server.close()


def test_call_errors_when_nothing_listens(tmp_path: Path) -> None:
    with pytest.raises(errors.TestbedError, match="no daemon listening"):
        call(tmp_path / "absent.sock", "show")


def test_call_times_out_on_a_server_that_never_answers(tmp_path: Path) -> None:
    path = tmp_path / "mute.sock"
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(str(path))
    mute.listen(1)
    try:
        with pytest.raises(errors.TestbedError, match="did not answer 'show' within 0.2 s"):
            call(path, "show", timeout=0.2)
    finally:
        mute.close()


def test_socket_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nic_control, "RUN_ROOT", tmp_path)
    with pytest.raises(UsageError, match="no running fail-safe NIC for 'mec1'"):
        socket_for("mec1")
    (tmp_path / "ab12").mkdir()
    (tmp_path / "ab12" / "nic-mec1.sock").touch()
    assert socket_for("mec1") == tmp_path / "ab12" / "nic-mec1.sock"
    assert socket_for("mec1", "ab12") == tmp_path / "ab12" / "nic-mec1.sock"
    with pytest.raises(UsageError, match="in run cd34"):
        socket_for("mec1", "cd34")
    (tmp_path / "cd34").mkdir()
    (tmp_path / "cd34" / "nic-mec1.sock").touch()
    with pytest.raises(UsageError, match=r"several runs \(ab12, cd34\)"):
        socket_for("mec1")
    assert socket_for("mec1", "cd34") == tmp_path / "cd34" / "nic-mec1.sock"
    with pytest.raises(UsageError):
        socket_for("mec2")


def test_every_server_answers_ping_unless_the_daemon_has_its_own(served: tuple[Path, Loop], tmp_path: Path) -> None:
    import os

    path, _ = served
    assert call(path, "ping") == {"pid": os.getpid()}
    own = ServerThread(tmp_path / "own.sock", {"ping": lambda a: {"links": 3}})
    try:
        assert call(own.path, "ping") == {"links": 3}
    finally:
        own.close()
    assert not (tmp_path / "own.sock").exists()


def test_server_thread_serves_the_same_protocol(tmp_path: Path) -> None:
    server = ServerThread(tmp_path / "t.sock", fake_handlers())
    try:
        assert call(server.path, "echo", cmd="c", timeout=7) == {"cmd": "c"}
        assert call(server.path, "echo", x=[1, 2]) == {"x": [1, 2]}
        with pytest.raises(errors.TestbedError, match="mode: state must be"):
            call(server.path, "mode", state="up")
    finally:
        server.close()


def test_call_passes_cmd_and_socket_path_as_arguments(served: tuple[Path, Loop]) -> None:
    path, _ = served
    assert call(path, "echo", cmd="table_add", socket_path="/x") == {"cmd": "table_add", "socket_path": "/x"}


def test_answer_and_parse_reply_without_sockets() -> None:
    handlers = fake_handlers()
    line = control.encode_request("echo", {"a": 1})
    assert line == b'{"cmd": "echo", "args": {"a": 1}}\n'
    assert control.parse_reply(control.answer(handlers, line)) == {"a": 1}
    with pytest.raises(errors.TestbedError, match="^mode: state must be on, off or auto$"):
        control.parse_reply(control.answer(handlers, control.encode_request("mode", {})))
    with pytest.raises(errors.TestbedError, match="not JSON"):
        control.parse_reply(b"nope")
    with pytest.raises(errors.TestbedError, match="malformed"):
        control.parse_reply(b"[1]")
