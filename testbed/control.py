"""The control protocol of every testbed daemon: JSON lines over a root-only unix socket, its servers and client.

Protocol: one request per line, `{"cmd": str, "args": {...}}`, answered by one line,
`{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`. Several requests may be
sent on one connection. Every server answers `{"cmd": "ping"}` (with `{"pid": N}` unless the
daemon gives its own `ping` handler), so a launcher knows the daemon is ready.

- `ControlServer(path, handlers)`: non-blocking, for a daemon with its own epoll loop (the NIC,
  the link emulator). It keeps its own epoll set holding the listening socket and every client;
  `fileno()` returns that epoll fd (readable whenever any of them has work), so the daemon
  registers ONE fd (EPOLLIN, level-triggered) and calls `on_readable(fd)` when it fires. All
  sockets are non-blocking, each call does a bounded amount of work, oversized or garbage
  requests get an error reply, and a client that does not read its replies is dropped: a slow or
  bad client can neither block nor crash the daemon's loop. Handlers run in that loop: keep them quick.
- `ServerThread(path, handlers)`: the same server on a thread of its own, for a daemon without an
  epoll loop; handlers then run on that thread.
- `call(path, cmd, timeout=5.0, **args)`: one request, its result or TestbedError(its error).

A handler takes the request's `args` dict and returns JSON-ready data (dataclasses, bytes, sets
are converted); TestbedError, ValueError, KeyError and TypeError become the error reply
`"<cmd>: <message>"`, anything else `"<cmd>: internal error: ..."` (and is logged).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import select
import socket
import threading
from pathlib import Path
from typing import Callable, Mapping

from testbed.errors import TestbedError

log = logging.getLogger(__name__)

#: longest request line accepted (bytes, without the newline)
MAX_REQUEST = 64 * 1024
#: replies a client has not read yet, beyond which it is dropped (bytes)
MAX_PENDING_OUT = 4 * 1024 * 1024
MAX_CLIENTS = 32
#: requests served per client per on_readable call, so one client cannot hog the loop
MAX_REQUESTS_PER_CALL = 16
_READ_CHUNK = 65536

Handler = Callable[[dict], object]


def ping(args: dict) -> dict:
    """The default `ping` handler: the daemon's PID."""
    return {"pid": os.getpid()}


def _jsonable(value: object) -> object:
    """json.dumps fallback: dataclasses as dicts, bytes as text, sets as lists, else str()."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def encode_request(cmd: str, args: Mapping[str, object]) -> bytes:
    """One request line."""
    return json.dumps({"cmd": cmd, "args": dict(args)}, default=_jsonable).encode() + b"\n"


def encode_reply(ok: bool, payload: object) -> bytes:
    """One reply line."""
    body = {"ok": True, "result": payload} if ok else {"ok": False, "error": str(payload)}
    try:
        text = json.dumps(body, default=_jsonable, allow_nan=False)
    except (TypeError, ValueError) as exc:
        text = json.dumps({"ok": False, "error": f"result not serialisable: {exc}"})
    return text.encode() + b"\n"


def parse_request(line: bytes) -> tuple[str, dict]:
    """(cmd, args) of a request line; ValueError with a message fit for the client otherwise."""
    try:
        req = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"bad request: not JSON ({exc.__class__.__name__})") from None
    if not isinstance(req, dict):
        raise ValueError("bad request: expected an object with cmd and args")
    cmd = req.get("cmd")
    args = req.get("args", {})
    if not isinstance(cmd, str) or not cmd:
        raise ValueError("bad request: cmd must be a non-empty string")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ValueError("bad request: args must be an object")
    return cmd, args


def answer(handlers: Mapping[str, Handler], line: bytes) -> bytes:
    """The reply line for one request line, from `handlers` (the whole protocol, without sockets)."""
    try:
        cmd, args = parse_request(line)
    except ValueError as exc:
        return encode_reply(False, exc)
    handler = handlers.get(cmd)
    if handler is None:
        return encode_reply(False, f"unknown command {cmd!r}; known: {', '.join(sorted(handlers))}")
    try:
        return encode_reply(True, handler(args))
    except (TestbedError, ValueError, KeyError, TypeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        if isinstance(exc, KeyError) and " " not in str(msg):
            msg = f"unknown or missing {msg!r}"  # a bare dict lookup in the handler
        return encode_reply(False, f"{cmd}: {msg}")
    except Exception as exc:
        log.exception("control handler %s failed", cmd)
        return encode_reply(False, f"{cmd}: internal error: {exc.__class__.__name__}: {exc}")


class _Client:
    """One connected client: its socket and the bytes not yet read into requests or sent."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.discarding = False  # inside an oversized line: drop bytes until the newline
        self.closing = False  # close once outbuf is flushed


class ControlServer:
    """Serves control requests on a unix socket (mode 0600 in a 0700 directory) to `handlers`."""

    def __init__(self, path: Path, handlers: Mapping[str, Handler],
                 commit: Callable[[], None] | None = None) -> None:
        self.path = Path(path)
        self.handlers: dict[str, Handler] = {"ping": ping, **handlers}
        self.commit = commit  # run after requests are served, before their replies are written
        self._clients: dict[int, _Client] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path.parent, 0o700)
        if self.path.is_socket():
            self.path.unlink()  # a stale socket of a daemon that died: nothing listens on it
        self._listen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            self._listen.bind(str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        self._listen.listen(16)
        self._listen.setblocking(False)
        self._epoll = select.epoll()
        self._epoll.register(self._listen.fileno(), select.EPOLLIN)

    def fileno(self) -> int:
        """The fd for the daemon's epoll: readable when the listening socket or any client has work."""
        return self._epoll.fileno()

    def on_readable(self, fd: int) -> None:
        """Accept, read, serve and write whatever is ready, without blocking; `fd` is ignored."""
        try:
            events = self._epoll.poll(0, MAX_CLIENTS + 1)
        except InterruptedError:
            return
        for cfd, mask in events:
            if cfd == self._listen.fileno():
                self._accept()
                continue
            client = self._clients.get(cfd)
            if client is None:
                continue
            try:
                self._service(client, mask)
            except Exception:  # a bug in serving one client must never take the daemon down
                log.exception("control client %d failed; dropping it", cfd)
                self._drop(client)

    def close(self) -> None:
        """Close every client and the listening socket, and remove the socket file."""
        for client in list(self._clients.values()):
            self._drop(client)
        try:
            self._epoll.close()
        finally:
            self._listen.close()
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    # -- internals --------------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(MAX_CLIENTS):
            try:
                sock, _ = self._listen.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: keep serving the others
                log.warning("control accept failed: %s", exc)
                return
            sock.setblocking(False)
            if len(self._clients) >= MAX_CLIENTS:
                self._drop(next(iter(self._clients.values())))  # the oldest goes
            client = _Client(sock)
            self._clients[sock.fileno()] = client
            self._epoll.register(sock.fileno(), select.EPOLLIN)

    def _service(self, client: _Client, mask: int) -> None:
        """Read what is there, answer up to MAX_REQUESTS_PER_CALL lines, write what fits."""
        if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) and not client.closing:
            try:
                data = client.sock.recv(_READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data == b"":
                client.closing = True  # the peer is done sending: answer what is left, then close
            elif data:
                client.inbuf += data
        before = len(client.outbuf)
        self._answer(client)
        if self.commit is not None and len(client.outbuf) != before:
            self.commit()  # a client that reads its reply finds the request's effect in place
        if len(client.outbuf) > MAX_PENDING_OUT:
            log.warning("control client does not read its replies; dropping it")
            self._drop(client)
            return
        if client.outbuf:
            try:
                sent = client.sock.send(client.outbuf)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._drop(client)
                return
            del client.outbuf[:sent]
        backlog = b"\n" in client.inbuf  # requests left for the next call
        if client.closing and not client.outbuf and not backlog:
            self._drop(client)
            return
        # EPOLLOUT while there is anything to send or a backlog: a writable socket keeps the
        # epoll set readable, so the daemon calls on_readable again even if no new bytes arrive.
        want = 0 if client.closing else select.EPOLLIN
        if client.outbuf or backlog:
            want |= select.EPOLLOUT
        self._epoll.modify(client.sock.fileno(), want)

    def _answer(self, client: _Client) -> None:
        """Turn complete request lines in the client's input buffer into reply lines."""
        for _ in range(MAX_REQUESTS_PER_CALL):
            nl = client.inbuf.find(b"\n")
            if client.discarding:
                if nl < 0:
                    client.inbuf.clear()
                    return
                del client.inbuf[: nl + 1]
                client.discarding = False
                continue
            if nl < 0:
                if len(client.inbuf) > MAX_REQUEST:
                    client.inbuf.clear()
                    client.discarding = True
                    client.outbuf += encode_reply(False, f"request too long (max {MAX_REQUEST} bytes)")
                return
            line = bytes(client.inbuf[:nl])
            del client.inbuf[: nl + 1]
            if len(line) > MAX_REQUEST:
                client.outbuf += encode_reply(False, f"request too long (max {MAX_REQUEST} bytes)")
            elif line.strip():
                client.outbuf += self._serve(line)

    def _serve(self, line: bytes) -> bytes:
        return answer(self.handlers, line)

    def _drop(self, client: _Client) -> None:
        fd = client.sock.fileno()
        self._clients.pop(fd, None)
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass
        client.sock.close()


def call(path: Path | str, cmd: str, /, timeout: float = 5.0, **args: object) -> object:
    """Send one request to the control socket at `path`; its result, or TestbedError(its error)."""
    line = encode_request(cmd, args)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
            sock.sendall(line)
            buf = bytearray()
            while b"\n" not in buf:
                chunk = sock.recv(_READ_CHUNK)
                if not chunk:
                    raise TestbedError(f"daemon at {path} closed the connection without answering {cmd!r}")
                buf += chunk
        except socket.timeout:
            raise TestbedError(f"daemon at {path} did not answer {cmd!r} within {timeout:g} s") from None
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
                raise TestbedError(f"no daemon listening at {path} ({os.strerror(exc.errno)})") from None
            raise TestbedError(f"daemon at {path}: {exc}") from None
    finally:
        sock.close()
    return parse_reply(bytes(buf[: buf.index(b"\n")]), path)


def parse_reply(line: bytes, path: Path | str = "?") -> object:
    """The result in a reply line; TestbedError with the daemon's error, or when the line is malformed."""
    try:
        reply = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise TestbedError(f"daemon at {path} sent a reply that is not JSON") from None
    if not isinstance(reply, dict) or "ok" not in reply:
        raise TestbedError(f"daemon at {path} sent a malformed reply")
    if not reply["ok"]:
        raise TestbedError(str(reply.get("error", "unknown error")))
    return reply.get("result")


class ServerThread:
    """A ControlServer on a thread of its own (for daemons without an epoll loop); handlers run on it."""

    def __init__(self, path: Path, handlers: Mapping[str, Handler], name: str = "control") -> None:
        self.server = ControlServer(path, handlers)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def path(self) -> Path:
        return self.server.path

    def _run(self) -> None:
        ep = select.epoll()
        try:
            ep.register(self.server.fileno(), select.EPOLLIN)
            while not self._stop.is_set():
                for fd, _ in ep.poll(0.1):
                    self.server.on_readable(fd)
        finally:
            ep.close()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread, close every client and remove the socket file."""
        self._stop.set()
        self._thread.join(timeout)
        self.server.close()


