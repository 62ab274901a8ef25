"""Starts the NIC process inside its network namespace and waits until its control socket answers."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import testbed
from testbed.errors import TestbedError
from testbed.failsafe.config import NicConfig
from testbed.ledger import Ledger

log = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0


@dataclass
class NicProcess:
    """A running NIC process: its PID, control socket and log file."""

    pid: int
    socket: Path
    log_path: Path
    config: NicConfig
    popen: subprocess.Popen = field(repr=False)

    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen.poll() is None

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM (then SIGKILL after `timeout`) the NIC; its exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        return self.popen.returncode


def nic_command(netns_pid: int, config_path: Path) -> list[str]:
    """The command that runs the NIC in the network namespace of process `netns_pid`."""
    return ["nsenter", "-t", str(netns_pid), "-n", sys.executable, "-m", "testbed.failsafe.nic",
            "--config", str(config_path)]


def log_tail(path: Path, lines: int = 15) -> str:
    """The last `lines` lines of the file at `path` ('' if unreadable)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start_nic(netns_pid: int, config: NicConfig, ledger: Ledger, run_dir: Path) -> NicProcess:
    """Write the config, start the NIC in `netns_pid`'s netns, record it, wait for its control socket."""
    from testbed.failsafe.control import call

    if not config.control_socket:
        raise TestbedError(f"NIC {config.node}: config has no control_socket")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / f"nic-{config.node}.json"
    log_path = run_dir / f"nic-{config.node}.log"
    sock = Path(config.control_socket)
    # The config and log are results kept in the run directory; only the socket is ours to remove.
    ledger.record("file", str(sock), what=f"fail-safe NIC {config.node}")
    cfg_path.write_text(config.to_json(), encoding="utf-8")
    env = dict(os.environ)
    root = str(Path(testbed.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(log_path, "ab") as out:
        popen = subprocess.Popen(nic_command(netns_pid, cfg_path), stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env, cwd=root, start_new_session=True)
    ledger.record_process(popen.pid, what=f"fail-safe NIC {config.node}")
    nic = NicProcess(popen.pid, sock, log_path, config, popen)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if popen.poll() is not None:
            raise TestbedError(f"NIC {config.node} exited with status {popen.returncode} while starting; "
                               f"log {log_path}:\n{log_tail(log_path)}")
        if sock.exists():
            try:
                call(sock, "show", timeout=1.0)
                log.info("NIC %s running (pid %d), control at %s", config.node, popen.pid, sock)
                return nic
            except TestbedError:
                pass
        if time.monotonic() > deadline:
            nic.stop()
            raise TestbedError(f"NIC {config.node} did not answer on {sock} within {START_TIMEOUT_S:g} s; "
                               f"log {log_path}:\n{log_tail(log_path)}")
        time.sleep(0.05)
