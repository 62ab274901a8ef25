"""One TCP connection across a main-host failure, through the NIC process in namespaces (testbed/failsafe/tcp_carry.py).

A persistent client sends numbered requests over ONE connection to the main host's TCP echo; the
main host's link goes down mid-run. With `carry_tcp` the NIC re-opens the connection on the backup:
no reset, no lost request, replies from "backup" after the failover. Without it the connection is
reset (the previous behaviour). And curl with HTTP/1.1 keep-alive, fetching 120 URLs over one
connection while the main host's link goes down: 0 resets, 0 lost, one connect. Both data paths.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from testbed import proc
from testbed.failsafe.config import ServiceConfig
from testbed.failsafe.control import call
from testbed.failsafe.labnet import MAIN_IP, LabRun, in_netns, lab_run
from testbed.failsafe.launcher import NicProcess

pytestmark = pytest.mark.integration

INTERVAL = 0.02
THRESHOLD = 4.0
MIN_RTT = 0.005
GAP_S = 0.01  # between a reply and the next request
REPLY_TIMEOUT_S = 3.0


class Client:
    """A persistent TCP client: numbered requests over one connection, one at a time, each reply's sender kept."""

    def __init__(self, ns: str) -> None:
        self.sock = in_netns(ns, lambda: socket.create_connection((MAIN_IP, 7000), timeout=2))
        self.sock.settimeout(REPLY_TIMEOUT_S)
        self.buf = b""
        self.replies: list[tuple[int, str, float]] = []  # (request number, who answered, when)
        self.error: str = ""

    def ask(self, n: int) -> bool:
        """Send request `n` and wait for its reply line; False (and `error` set) when the connection broke."""
        try:
            self.sock.sendall(b"%d\n" % n)
            while b"\n" not in self.buf:
                data = self.sock.recv(4096)
                if not data:
                    self.error = "closed by peer"
                    return False
                self.buf += data
        except OSError as exc:  # ConnectionResetError, timeout
            self.error = f"{type(exc).__name__}: {exc}"
            return False
        line, _, self.buf = self.buf.partition(b"\n")
        name, _, body = line.partition(b":")
        assert body == b"%d" % n, (n, line)
        self.replies.append((n, name.decode(), time.monotonic()))
        return True

    def run(self, until: float, start: int) -> int:
        """Ask until monotonic time `until` (or a break); the next request number."""
        n = start
        while time.monotonic() < until and self.ask(n):
            n += 1
            time.sleep(GAP_S)
        return n


def web_nic(run: LabRun, datapath: str, carry: bool, port: int) -> NicProcess:
    """The NIC in front of the main host, TCP `port` critical, started; once it learned its heartbeats."""
    nic = run.start_nic(services=(ServiceConfig("web", "tcp", port, message="tcp"),), interval_s=INTERVAL,
                        threshold=THRESHOLD, learn=5, hysteresis=3, min_rtt_s=MIN_RTT, datapath=datapath,
                        carry_tcp=carry)
    wait_learned(nic, datapath)
    return nic


def wait_learned(nic: NicProcess, datapath: str) -> None:
    """Until every heartbeat target left learning; the NIC runs `datapath`."""
    deadline = time.monotonic() + 5
    while any(v["mode"] == "learning" for v in call(nic.socket, "heartbeat_show").values()):  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "heartbeats never learned"
        time.sleep(0.02)
    assert call(nic.socket, "show")["datapath"] == datapath  # type: ignore[index]


@pytest.mark.parametrize("carry", [True, False], ids=["carry", "reset"])
@pytest.mark.parametrize("datapath", ["python", "bpf"])
def test_one_connection_across_a_host_failure(tmp_path: Path, datapath: str, carry: bool) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with lab_run(tmp_path) as run:
        lab = run.lab
        lab.echo("m", "main", [], [7000], tmp_path / "delay-main")
        lab.echo("b", "backup", [], [7000], tmp_path / "delay-backup")
        nic = web_nic(run, datapath, carry, 7000)
        client = Client(lab.ns["c"])
        try:
            n = client.run(time.monotonic() + 0.3, 0)
            assert n > 5 and not client.error and {who for _, who, _ in client.replies} == {"main"}
            t_fault = time.monotonic()
            lab.ns_cmd("m", "ip", "link", "set", "eth0", "down")  # the main host is gone, mid-conversation
            n = client.run(time.monotonic() + 1.0, n)
            handler = call(nic.socket, "counters")["failsafe_handler"]  # type: ignore[index]
            modes = call(nic.socket, "show")["modes"]  # type: ignore[index]
            assert modes == {"web": "failsafe"}, modes
            after = [(k, who, t) for k, who, t in client.replies if t > t_fault]
            print(f"{datapath} carry={carry}: {n} requests, error {client.error!r}, {len(after)} answered after the "
                  f"fault, first after {(after[0][2] - t_fault) * 1e3 if after else -1:.0f} ms, {handler}")
            if carry:
                assert client.error == "", client.error  # no reset, no timeout
                assert [k for k, _, _ in client.replies] == list(range(n))  # every request answered, in order
                assert after and after[-1][1] == "backup" and len(after) >= 10
                assert handler["carried"] == 1 and handler["carry_failed"] == 0, handler
            else:
                assert client.error.startswith(("ConnectionResetError", "closed by peer")), client.error
                assert handler["carried"] == 0
        finally:
            client.sock.close()


CURL_URLS = 120
CURL_RATE = "20/s"
CURL_FORMAT = " code=%{http_code} connects=%{num_connects} exit=%{exitcode}\\n"


def curl_lines(log: Path) -> list[str]:
    """The per-transfer lines curl wrote so far."""
    return [ln for ln in (log.read_text(errors="replace") if log.exists() else "").splitlines() if " code=" in ln]


@pytest.mark.parametrize("datapath", ["python", "bpf"])
def test_curl_keepalive_across_a_host_failure(tmp_path: Path, datapath: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with lab_run(tmp_path) as run:
        lab = run.lab
        lab.http("m", "main", 8080)
        lab.http("b", "backup", 8080)
        nic = web_nic(run, datapath, True, 8080)
        # one curl: 120 URLs over one keep-alive connection, 20 a second, each transfer's outcome a line
        curl = lab.spawn("c", ["curl", "-sN", "--rate", CURL_RATE, "-m", "3", "-w", CURL_FORMAT,
                               f"http://{MAIN_IP}:8080/n[1-{CURL_URLS}]"], "curl keep-alive client", "curl.log")
        log = tmp_path / "curl.log"
        deadline = time.monotonic() + 20
        while len(curl_lines(log)) < 40:  # the main host goes after 40 answers
            assert curl.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.01)
        lab.ns_cmd("m", "ip", "link", "set", "eth0", "down")
        assert proc.wait(curl, 30) is not None, "curl did not finish"
        lines = curl_lines(log)
        handler = call(nic.socket, "counters")["failsafe_handler"]  # type: ignore[index]
        print(f"{datapath}: {len(lines)} transfers, {handler}")
        assert len(lines) == CURL_URLS, log.read_text(errors="replace")
        bad = [ln for ln in lines if " code=200 " not in ln or not ln.endswith(" exit=0")]
        assert bad == [], bad  # no reset, no timeout
        got = [ln.split(" code=")[0].split() for ln in lines]
        assert [body[1] for body in got] == [f"/n{i}" for i in range(1, CURL_URLS + 1)], lines  # none lost
        connects = [int(ln.split("connects=")[1].split()[0]) for ln in lines]
        assert connects[0] == 1 and sum(connects) == 1, connects  # ONE connection throughout
        who = [body[0] for body in got]
        assert who[:40] == ["main"] * 40 and who[-40:] == ["backup"] * 40, who
        assert handler["carried"] == 1 and handler["carry_failed"] == 0, handler
