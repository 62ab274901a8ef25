"""Starts the experiment's traffic on testbed nodes (prober, iperf3) and reads what they report."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed import proc
from testbed.cluster.engine import namespaces_of
from testbed.experiment.spec import BulkFlow, ProbeFlow

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
PROBE_IN_IMAGE = "/app/probe.py"
PROBE_IN_REPO = ROOT / "images" / "probe" / "probe.py"


def probe_argv(flow: ProbeFlow, dst_ip: str, in_container: bool) -> list[str]:
    """The prober's command line for `flow` towards `dst_ip`."""
    script = PROBE_IN_IMAGE if in_container else str(PROBE_IN_REPO)
    return ["python3", "-u", script, "--target", f"{dst_ip}:{flow.port}", "--proto", flow.proto,
            "--rate", f"{flow.rate:g}", "--count", str(flow.count), "--timeout", f"{flow.timeout_s:g}"] + \
        (["--persistent"] if flow.persistent else [])


def iperf_server_argv(flow: BulkFlow) -> list[str]:
    """iperf3 server for one test on the flow's port."""
    return ["iperf3", "-s", "-1", "-p", str(flow.port)]


def iperf_client_argv(flow: BulkFlow, dst_ip: str) -> list[str]:
    """iperf3 client for `flow` with JSON output."""
    argv = ["iperf3", "-c", dst_ip, "-p", str(flow.port), "-t", f"{flow.duration_s:g}", "-J"]
    if flow.proto == "udp":
        argv += ["-u", "-b", f"{flow.bw_mbit or 100:g}M"]
    elif flow.bw_mbit:
        argv += ["-b", f"{flow.bw_mbit:g}M"]
    return argv


@dataclass(frozen=True)
class ProbeLine:
    """One parsed line of prober output: a progress mark (`sent`), a connection reset (`reset`) or a settled request."""

    sent: int | None = None
    reset: int | None = None  # `# reset N`: the persistent prober's Nth reset
    seq: int | None = None
    send_time: float | None = None
    rtt_ms: float | None = None
    answered_by: str = ""


def parse_probe_line(line: str) -> ProbeLine | None:
    """Parse `# sent N`, `# reset N` or `seq,send_time,reply_time,rtt_ms,answered_by`; None for the header and noise."""
    line = line.strip()
    if line.startswith("# reset "):
        try:
            return ProbeLine(reset=int(line[8:]))
        except ValueError:
            return None
    if line.startswith("# sent "):
        try:
            return ProbeLine(sent=int(line[7:]))
        except ValueError:
            return None
    parts = line.split(",")
    if len(parts) != 5 or not parts[0].isdigit():
        return None
    try:
        return ProbeLine(seq=int(parts[0]), send_time=float(parts[1]),
                         rtt_ms=float(parts[3]) if parts[3] else None, answered_by=parts[4])
    except ValueError:
        return None


def iperf_mbps(report: str) -> float | None:
    """Received throughput in Mbit/s from iperf3's JSON report (None if the test failed)."""
    try:
        data = json.loads(report)
        end = data["end"]
        summary = end.get("sum_received") or end.get("sum")
        return float(summary["bits_per_second"]) / 1e6
    except (ValueError, KeyError, TypeError):
        return None


@dataclass
class Running:
    """A process the runner started on a node, with the buffer of its unread output."""

    name: str
    popen: proc.Process
    buf: bytes = b""
    eof: bool = False

    def read_lines(self) -> list[str]:
        """Complete lines available now (non-blocking; call when the pipe is readable)."""
        assert self.popen.stdout is not None
        try:
            chunk = os.read(self.popen.stdout.fileno(), 65536)
        except BlockingIOError:
            return []
        if not chunk:
            self.eof = True
            rest, self.buf = self.buf, b""
            return [line.decode(errors="replace") for line in rest.splitlines() if line]
        self.buf += chunk
        *done, self.buf = self.buf.split(b"\n")
        return [line.decode(errors="replace") for line in done]

    def output(self, timeout: float) -> bytes:
        """Wait for the process to end and return the rest of its stdout (CommandError after `timeout`)."""
        assert self.popen.stdout is not None
        os.set_blocking(self.popen.stdout.fileno(), True)
        return self.buf + proc.communicate(self.popen, timeout)

    def stop(self, timeout: float = 3.0) -> None:
        """Terminate the process if it still runs (only this process, by its handle)."""
        proc.stop(self.popen, timeout)


def start_on(node: Any, name: str, argv: list[str], log_path: Path) -> Running:
    """Start `argv` on a Mininet node (docker exec for Docker hosts), stdout piped, stderr to `log_path`."""
    popen = proc.popen_in(node, argv, stderr=log_path)
    os.set_blocking(popen.stdout.fileno(), False)
    log.debug("%s: started %s on %s (pid %s)", name, argv, node.name, popen.pid)
    return Running(name, popen)


def wait_listening(node: Any, port: int, proto: str = "tcp", timeout: float = 10.0) -> bool:
    """Poll, from outside the node (its namespace's /proc tables, on the node's server), until something listens on `port`; False after `timeout`."""
    return not namespaces_of(node).wait_ports({node.name: (node.pid, [(proto, port)])}, timeout)
