"""The echo service and the prober (images/echo, images/probe) on loopback: replies, delay, pacing, loss."""

from __future__ import annotations

import importlib.util
import io
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


echo = _load("tb_echo", ROOT / "images/echo/echo.py")
probe = _load("tb_probe", ROOT / "images/probe/probe.py")


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def echo_server(tmp_path):
    """An echo service on free loopback ports (UDP and TCP), with its delay file in tmp_path."""
    udp, tcp = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM)
    delays = echo.DelaySource(tmp_path / "delay_ms")
    stop = threading.Event()
    server = echo._TcpServer(tcp, b"mec9", delays)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    t = threading.Thread(target=echo.serve_udp, args=(echo.udp_socket(udp), b"mec9", delays, stop), daemon=True)
    t.start()
    time.sleep(0.05)
    yield udp, tcp, tmp_path / "delay_ms"
    stop.set()
    server.shutdown()
    server.server_close()
    t.join(2)


def _run_probe(port: int, proto: str, count: int = 5, rate: float = 50.0, timeout: float = 0.5) -> list[str]:
    out = io.StringIO()
    probe.Prober("127.0.0.1", port, proto, rate, count, timeout, out=out).run()
    return out.getvalue().splitlines()


def _rows(lines: list[str]) -> list[list[str]]:
    return [line.split(",") for line in lines[1:] if not line.startswith("#")]


def test_reply_names_node_and_heartbeats_are_echoed_verbatim():
    assert echo.reply_for(b"REQ 3 99\n", b"mec1") == b"REQ 3 99 @mec1\n"
    assert echo.reply_for(b"ping", b"mec1") == b"ping"
    assert probe.parse_reply(b"REQ 3 99 @mec1\n") == (3, "mec1")
    assert probe.parse_reply(b"ping") is None


def test_delay_parse():
    assert echo.parse_delay_ms("50\n") == 50.0
    assert echo.parse_delay_ms("") == 0.0
    assert echo.parse_delay_ms("junk") == 0.0
    assert echo.parse_delay_ms("-3") == 0.0


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_probe_gets_every_reply_with_node(echo_server, proto):
    udp, tcp, _ = echo_server
    lines = _run_probe(udp if proto == "udp" else tcp, proto)
    assert lines[0] == probe.HEADER
    assert sum(1 for line in lines if line.startswith("# sent ")) == 5
    rows = _rows(lines)
    assert sorted(int(r[0]) for r in rows) == [1, 2, 3, 4, 5]
    assert all(r[4] == "mec9" and float(r[3]) < 50 for r in rows)


def test_delay_file_changes_rtt_at_run_time_and_heartbeats_wait_too(echo_server):
    udp, _, delay_file = echo_server
    delay_file.write_text("60")
    rows = _rows(_run_probe(udp, "udp", count=3))
    assert all(float(r[3]) >= 55 for r in rows)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        t0 = time.monotonic()
        s.sendto(b"ping", ("127.0.0.1", udp))
        assert s.recv(100) == b"ping"
        assert time.monotonic() - t0 >= 0.055
    delay_file.write_text("0")
    rows = _rows(_run_probe(udp, "udp", count=3))
    assert all(float(r[3]) < 30 for r in rows)


def test_lost_requests_have_empty_reply_fields():
    port = _free_port(socket.SOCK_DGRAM)  # nobody listens
    rows = _rows(_run_probe(port, "udp", count=3, timeout=0.1))
    assert [r[0] for r in sorted(rows, key=lambda r: int(r[0]))] == ["1", "2", "3"]
    assert all(r[2] == "" and r[3] == "" and r[4] == "" for r in rows)


class _Stalling(io.StringIO):
    """Prober output whose first "# sent" line stalls the prober past its timeout (a loaded machine)."""

    def __init__(self, stall_s: float) -> None:
        super().__init__()
        self.stall_s = stall_s

    def write(self, text: str) -> int:
        if text.startswith("# sent ") and self.stall_s:
            time.sleep(self.stall_s)
            self.stall_s = 0.0
        return super().write(text)


def test_a_stalled_prober_settles_replies_it_already_received_with_the_kernels_time(echo_server):
    udp, _, _ = echo_server
    out = _Stalling(0.5)
    probe.Prober("127.0.0.1", udp, "udp", 50.0, 2, 0.3, out=out).run()
    rows = {r[0]: r for r in _rows(out.getvalue().splitlines())}
    assert rows["1"][4] == "mec9", rows  # answered while the prober slept, not lost
    assert float(rows["1"][3]) < 100, rows  # the kernel's receive time: the stall is not in the RTT


def test_a_reply_received_after_the_timeout_is_lost(echo_server):
    udp, _, delay_file = echo_server
    delay_file.write_text("150")
    rows = _rows(_run_probe(udp, "udp", count=2, timeout=0.1))
    assert rows and all(r[3] == "" and r[4] == "" for r in rows), rows


def test_pacing_follows_absolute_schedule(echo_server):
    udp, _, _ = echo_server
    rows = _rows(_run_probe(udp, "udp", count=11, rate=50.0))
    sends = sorted(float(r[1]) for r in rows)
    assert sends[-1] - sends[0] == pytest.approx(0.2, abs=0.02)


def _line_server(close_after: int) -> tuple[int, list[int], threading.Event]:
    """A TCP echo on loopback answering `REQ` lines like the echo service, closing each connection after `close_after` replies.

    Returns its port, the list of replies per accepted connection (one entry per connection) and a stop flag.
    """
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.05)
    conns: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            conns.append(0)
            with c, c.makefile("rb") as lines:
                for line in lines:
                    c.sendall(echo.reply_for(line, b"mec9"))
                    conns[-1] += 1
                    if conns[-1] >= close_after:
                        c.shutdown(socket.SHUT_RDWR)
                        break
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], conns, stop


def test_persistent_probe_sends_every_request_over_one_connection():
    port, conns, stop = _line_server(close_after=1000)
    out = io.StringIO()
    probe.Prober("127.0.0.1", port, "tcp", 100.0, 8, 0.5, out=out, persistent=True).run()
    stop.set()
    lines = out.getvalue().splitlines()
    assert sorted(int(r[0]) for r in _rows(lines) if r[4] == "mec9") == list(range(1, 9))
    assert len(conns) == 1 and [line for line in lines if line.startswith("# reset")] == ["# reset 0"]


def test_persistent_probe_counts_a_reset_and_reconnects():
    port, conns, stop = _line_server(close_after=3)
    out = io.StringIO()
    p = probe.Prober("127.0.0.1", port, "tcp", 50.0, 6, 0.3, out=out, persistent=True)
    p.run()
    stop.set()
    lines = out.getvalue().splitlines()
    answered = [int(r[0]) for r in _rows(lines) if r[4] == "mec9"]
    assert p.resets >= 1 and "# reset 1" in lines
    assert len(conns) >= 2 and set(answered) >= {1, 2, 3} and max(answered) == 6  # a new connection after the reset
