"""Fail-safe NICs of hosts on another server: each started there through the door, controlled from here.

The NIC is the same program as on this machine (`python -m testbed.failsafe.nic --config FILE`, the
testbed installed there at the same path, checked by the preflight), started in its node's
namespace on that server (`nsenter` by the node's PID there) by an ssh session of the run's, its
PID there and the ssh here recorded. Its config is written there with the control socket and the
events log in a directory of the run's there; the control socket is forwarded to the usual place
here (`/run/testbed/RID/nic-NODE.sock`) by a recorded `ssh -L`, so the control plane
(testbed.failsafe.control, `testbed failsafe NODE`, the experiment runner) works unchanged. Its
events log is copied here when asked (`sync_events`) and when it stops. Data path there: `python`;
`auto` means python (the BPF self-test does not run through the door yet); `bpf` is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any

from testbed import proc
from testbed.cluster.engine import forward_control
from testbed.cluster.server import Server, record_remote_process
from testbed.errors import TestbedError
from testbed.failsafe.config import NicConfig
from testbed.ledger import RUN_ROOT, Ledger

log = logging.getLogger(__name__)

START_TIMEOUT_S = 20.0
#: The first line the NIC's session prints on the server: its PID there (then the shell becomes the NIC).
PID_MARK = "testbed NIC pid"


def remote_datapath(config: NicConfig, door: Server) -> str:
    """The data path a NIC on `door`'s server runs: python (`auto` included); TestbedError for `bpf`."""
    if config.datapath == "bpf":
        raise TestbedError(f"NIC {config.node} on server {door.name}: datapath bpf is not checked there (the "
                           "BPF self-test does not run through the door yet): use auto or python")
    return "python"


def start_remote_nic(door: Server, netns_pid: int, config: NicConfig, ledger: Ledger, run_dir: Path,
                     timeout: float = START_TIMEOUT_S) -> "RemoteNic":
    """Start `config`'s NIC on `door`'s server in the namespace of process `netns_pid` there; ready
    (its control socket answers here) when this returns."""
    nic = RemoteNic(door, config, ledger, Path(run_dir))
    try:
        nic.start(netns_pid, timeout)
    except BaseException:
        nic.stop()
        raise
    return nic


class RemoteNic:
    """A NIC process on another server, with NicProcess's face: `socket` (here), `log_path`, `alive`, `stop`."""

    def __init__(self, door: Server, config: NicConfig, ledger: Ledger, run_dir: Path) -> None:
        self.door = door
        self.ledger = ledger
        self.run_dir = run_dir
        self.remote_dir = f"{RUN_ROOT}/{ledger.rid}/nic-{config.node}-{door.name}"
        self.local_events = Path(config.events_path)
        self.config = dataclasses.replace(config, datapath=remote_datapath(config, door),
                                          control_socket=f"{self.remote_dir}/ctl.sock",
                                          events_path=f"{self.remote_dir}/events.jsonl")
        self.socket = Path(config.control_socket)  # the forward's end here, where the control plane looks
        self.log_path = run_dir / f"nic-{config.node}.log"
        self.remote_pid: int | None = None
        self._session: Any = None
        self._forward: Any = None

    @property
    def pid(self) -> int | None:
        """The NIC's PID on its server."""
        return self.remote_pid

    def _run(self, args: list[str], **kw: Any) -> proc.Result:
        return self.door.run(args, timeout=kw.pop("timeout", 15), **kw)

    def start(self, netns_pid: int, timeout: float) -> None:
        """Config there, the NIC there (recorded), its socket forwarded here (recorded); until it answers here."""
        node = self.config.node
        self.ledger.record("file", self.remote_dir, server=self.door.name)
        self._run(["mkdir", "-p", self.remote_dir])
        cfg = f"{self.remote_dir}/nic.json"
        self._run(["sh", "-c", 'cat > "$1"', "sh", cfg], input=self.config.to_json())
        argv = ["sh", "-c", f'echo "{PID_MARK} $$"; exec "$@"', "sh", "nsenter", "-t", str(netns_pid), "-n",
                sys.executable, "-m", "testbed.failsafe.nic", "--config", cfg]
        self._session = proc.spawn(self.door.argv(argv), output=self.log_path, on_start=lambda pid: self.ledger.
                                   record_process(pid, f"ssh for the fail-safe NIC {node} on {self.door.name}"))
        deadline = time.monotonic() + timeout
        self.remote_pid = self._wait_pid(deadline)
        record_remote_process(self.ledger, self.door, self.remote_pid, f"fail-safe NIC {node}")
        while not self._run(["test", "-S", self.config.control_socket], check=False).ok:
            self._check(deadline, "did not make its control socket")
            time.sleep(0.1)
        self.ledger.record("file", str(self.socket), what=f"fail-safe NIC {node} (forwarded)")
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        self._forward = forward_control(self.door, self.ledger, self.socket, self.config.control_socket,
                                        self.run_dir / f"nic-forward-{node}.log", f"fail-safe NIC {node}", deadline,
                                        check=lambda: self._check(deadline, "stopped before it answered here"))
        log.info("fail-safe NIC %s on %s: pid %s there, control %s (forwarded to %s)", node, self.door.name,
                 self.remote_pid, self.config.control_socket, self.socket)

    def _wait_pid(self, deadline: float) -> int:
        while True:
            text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            for line in text.splitlines():
                if line.startswith(PID_MARK) and line.split()[-1].isdigit():
                    return int(line.split()[-1])
            self._check(deadline, "did not start")
            time.sleep(0.05)

    def _check(self, deadline: float, what: str) -> None:
        """TestbedError (with the log's tail) if the session ended or the deadline passed."""
        if self._session.poll() is not None or time.monotonic() > deadline:
            tail = self.log_path.read_text(errors="replace")[-400:] if self.log_path.exists() else ""
            raise TestbedError(f"NIC {self.config.node} on {self.door} {what}: {tail}")

    def alive(self) -> bool:
        """True while the NIC runs on its server."""
        return self.remote_pid is not None and self._run(["kill", "-0", str(self.remote_pid)], check=False).ok

    def sync_events(self) -> None:
        """Copy the NIC's events log from its server to the run directory here (where nic_events reads)."""
        res = self._run(["cat", self.config.events_path], check=False)
        if res.ok:
            self.local_events.write_text(res.stdout)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the NIC there (SIGKILL after `timeout`), copy its events here, end its ssh sessions, remove
        its files there and the socket here."""
        if self.remote_pid is not None:
            pid = str(self.remote_pid)
            self._run(["kill", pid], check=False)
            deadline = time.monotonic() + timeout
            while self._run(["kill", "-0", pid], check=False).ok:
                if time.monotonic() > deadline:
                    self._run(["kill", "-9", pid], check=False)
                    break
                time.sleep(0.1)
            self.sync_events()
            self.remote_pid = None
        status = None
        for p in (self._forward, self._session):
            if p is not None:
                status = proc.stop(p, timeout=timeout)
        self._forward = self._session = None
        self._run(["rm", "-rf", "--", self.remote_dir], check=False)
        self.socket.unlink(missing_ok=True)
        return status
