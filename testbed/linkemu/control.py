"""The emulator's JSON-lines control protocol on a root-only unix socket: requests, replies, and a client.

One JSON object per line each way; every reply has "ok" (and "error" when false). Requests:

    {"op": "ping"}                                   -> {"ok": true, "pid": N, "links": N}
    {"op": "add", "link_id": ID, "a": IF, "b": IF, "forward": SHAPE, "reverse": SHAPE, "seed": S?}
    {"op": "set", "link_id": ID, "forward": SHAPE?, "reverse": SHAPE?}   (keys left out keep their value)
    {"op": "down"|"up"|"remove", "link_id": ID}
    {"op": "stats", "link_id": ID?}                  -> {"ok": true, "links": {ID: {"forward": {...}, ...}}}
    {"op": "shutdown"}

SHAPE: {"bw_mbit": float|null, "delay_ms": float, "jitter_ms": float, "jitter_dist": "uniform"|"normal",
        "loss_pct": float, "queue_pkts": int|null}; forward is a→b (frames received on a leave by b).
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Mapping

from testbed.errors import TestbedError
from testbed.linkemu.engine import Engine
from testbed.linkemu.schedule import parse_shape

log = logging.getLogger(__name__)

MAX_LINE = 1 << 20
OPS = ("ping", "add", "set", "down", "up", "remove", "stats", "shutdown")


def _text(req: Mapping[str, Any], key: str, *, optional: bool = False) -> str | None:
    """Field `key` of a request as a non-empty string (ValueError otherwise)."""
    value = req.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key}: expected a non-empty string, got {value!r}")
    return value


def handle(engine: Engine, req: Any) -> dict[str, Any]:
    """Carry out one request against `engine`; the reply always has `ok` and, when false, `error`."""
    try:
        if not isinstance(req, dict):
            raise ValueError("request must be a JSON object")
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid(), "links": len(engine.links)}
        if op == "add":
            fwd = parse_shape(req.get("forward") or {})
            rev = parse_shape(req.get("reverse") or {})
            seed = req.get("seed")
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, str))):
                raise ValueError(f"seed: expected an integer or a string, got {seed!r}")
            engine.add_link(_text(req, "link_id"), _text(req, "a"), _text(req, "b"), fwd, rev, seed)
            return {"ok": True}
        if op == "set":
            link = engine.link(_text(req, "link_id"))
            fwd = parse_shape(req["forward"], link.forward.params) if req.get("forward") is not None else None
            rev = parse_shape(req["reverse"], link.reverse.params) if req.get("reverse") is not None else None
            engine.set_shape(link.link_id, fwd, rev)
            return {"ok": True}
        if op in ("down", "up"):
            engine.set_up(_text(req, "link_id"), op == "up")
            return {"ok": True}
        if op == "remove":
            engine.remove_link(_text(req, "link_id"))
            return {"ok": True}
        if op == "stats":
            return {"ok": True, "links": engine.stats(_text(req, "link_id", optional=True))}
        if op == "shutdown":
            engine.running = False
            return {"ok": True}
        raise ValueError(f"op: expected one of {', '.join(OPS)}, got {op!r}")
    except Exception as exc:  # any bad request is answered, never fatal
        log.warning("request %r failed: %s", req, exc)
        return {"ok": False, "error": str(exc) or type(exc).__name__}


class ControlServer:
    """Accepts control connections on a 0600 unix socket and answers each request line from the engine's loop."""

    def __init__(self, engine: Engine, path: Path) -> None:
        self.engine = engine
        self.path = path
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.conns: dict[int, tuple[socket.socket, bytearray]] = {}
        engine.extra_fds[self.sock.fileno()] = self._accept
        engine.epoll.register(self.sock.fileno(), select.EPOLLIN)

    def _accept(self, _fd: int) -> None:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        self.conns[conn.fileno()] = (conn, bytearray())
        self.engine.extra_fds[conn.fileno()] = self._readable
        self.engine.epoll.register(conn.fileno(), select.EPOLLIN)

    def _drop(self, fd: int) -> None:
        conn, _ = self.conns.pop(fd)
        self.engine.extra_fds.pop(fd, None)
        try:
            self.engine.epoll.unregister(fd)
        except OSError:
            pass
        conn.close()

    def _readable(self, fd: int) -> None:
        conn, buf = self.conns[fd]
        try:
            chunk = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(fd)
            return
        buf += chunk
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            if line.strip():
                self._reply(fd, conn, self._answer(line))
                if fd not in self.conns:
                    return
        if len(buf) > MAX_LINE:
            self._reply(fd, conn, {"ok": False, "error": f"request longer than {MAX_LINE} bytes"})
            self._drop(fd)

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            return {"ok": False, "error": f"not JSON: {exc}"}
        return handle(self.engine, req)

    def _reply(self, fd: int, conn: socket.socket, reply: dict[str, Any]) -> None:
        try:
            conn.settimeout(2.0)
            conn.sendall(json.dumps(reply).encode() + b"\n")
            conn.setblocking(False)
        except OSError:
            self._drop(fd)

    def close(self) -> None:
        """Close every connection and remove the socket file."""
        for fd in list(self.conns):
            self._drop(fd)
        self.sock.close()
        self.path.unlink(missing_ok=True)


class ControlClient:
    """Sends requests to a running emulator and returns its replies; safe to share between threads."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._file: Any = None
        self._lock = threading.Lock()

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._file = sock.makefile("rb")

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request; return the reply, or raise TestbedError with the emulator's error."""
        line = json.dumps({"op": op, **fields}).encode() + b"\n"
        with self._lock:
            try:
                if self._sock is None:
                    self._connect()
                assert self._sock is not None
                self._sock.sendall(line)
                raw = self._file.readline()
            except OSError as exc:
                self.close()
                raise TestbedError(f"link emulator at {self.path}: {exc}") from None
            if not raw:
                self.close()
                raise TestbedError(f"link emulator at {self.path} closed the connection")
        reply = json.loads(raw)
        if not reply.get("ok"):
            raise TestbedError(f"link emulator refused {op}: {reply.get('error')}")
        return reply

    def close(self) -> None:
        """Drop the connection (the next request reconnects)."""
        if self._file is not None:
            self._file.close()
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._file = None


def serve(engine: Engine, path: Path, on_stop: Callable[[], None] | None = None) -> None:
    """Run `engine` with a control server on `path` until a shutdown request or `engine.running` is cleared."""
    server = ControlServer(engine, path)
    try:
        engine.run()
    finally:
        server.close()
        if on_stop:
            on_stop()
