"""Starts a testbed daemon, records it in the ledger, waits until its control socket answers, stops it.

One launcher for every long-running process of the testbed that has a control socket speaking
testbed.control's protocol (link emulator, fail-safe NIC, SDN controller):

    from testbed import daemon
    d = daemon.start("link emulator", daemon.module_argv("testbed.linkemu", "--ctl", sock),
                     socket=sock, log_path=run_dir / "linkemu.out", ledger=ledger,
                     netns="tb1234-le")             # or netns_pid=PID (nsenter), or neither
    d.call("add", link_id="l1", a="le0a", b="le0b")  # testbed.control.call on d.socket
    d.stop()                                         # SIGTERM, wait, SIGKILL

`start(name, argv, *, socket, log_path, ledger, netns_pid=None, netns=None, env=None, cwd=None,
timeout=15.0, ready=None) -> Daemon`:
- records the control socket file in the ledger, then spawns `argv` (wrapped by `in_netns`) held
  until its PID and start time are in the ledger (`proc.spawn(on_start=...)`), so cleanup after a
  SIGKILL of the testbed finds it; stdout and stderr are appended to `log_path`;
- waits, by evidence, until `socket` answers `ping` and, if given, `ready(daemon)` is true (e.g. a
  controller also listening for OpenFlow); polling stops at once if the process exits;
- on exit raises `DaemonExited` (a TestbedError with `.returncode`, so a caller can retry on a
  status of its own, such as "port in use"); on timeout stops the daemon and raises TestbedError;
  both messages end with the tail of `log_path`.
`module_argv(module, *args)` is the argv of `python -m module` with this interpreter, and
`repo_env()` the environment that lets the child import this checkout (the default `env`).
`Daemon` has `name`, `pid`, `socket`, `log_path`, `popen`, `alive()`, `call(cmd, timeout=5.0,
**args)`, `stop(timeout=5.0) -> exit status` and `log_tail(lines)`; stopping signals only this
process (by its handle) and removes its socket file if the daemon left it behind.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from testbed import control, proc
from testbed.errors import TestbedError
from testbed.ledger import Ledger

log = logging.getLogger(__name__)

#: The repository root: what the daemon's `python -m testbed...` must be able to import.
REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 15.0
#: How often readiness is checked while a daemon starts (each check is a real `ping`).
POLL_S = 0.02


class DaemonExited(TestbedError):
    """The daemon ended while starting; `returncode` is its exit status."""

    def __init__(self, message: str, returncode: int | None) -> None:
        super().__init__(message)
        self.returncode = returncode


def in_netns(argv: Sequence[str], *, netns_pid: int | None = None, netns: str | None = None) -> list[str]:
    """`argv` run in the network namespace of process `netns_pid` (nsenter) or named `netns` (ip netns exec)."""
    if netns_pid is not None and netns is not None:
        raise ValueError("give netns_pid or netns, not both")
    if netns_pid is not None:
        return ["nsenter", "-t", str(netns_pid), "-n", *map(str, argv)]
    if netns is not None:
        return ["ip", "netns", "exec", netns, *map(str, argv)]
    return [str(a) for a in argv]


def entered_netns(pid: int, netns: str, timeout: float = 5.0) -> int:
    """Wait until process `pid` (started with `ip netns exec NETNS`) is inside `netns`; return pid.

    Until `ip` has called setns, /proc/PID/ns/net is still its parent's: `nsenter -t PID` would join that.
    """
    target = os.stat(f"/run/netns/{netns}").st_ino
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == target:
                return pid
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    raise TestbedError(f"process {pid} never entered network namespace {netns}")


def module_argv(module: str, *args: object) -> list[str]:
    """`python -m module args...` with the interpreter running the testbed."""
    return [sys.executable, "-m", module, *map(str, args)]


def repo_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this environment) with the repository root first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def tail(path: Path, lines: int = 15) -> str:
    """The last `lines` lines of the file at `path` ('' if unreadable)."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Daemon:
    """A started testbed daemon: its process, control socket and log file."""

    name: str
    socket: Path
    log_path: Path
    popen: proc.Process = field(repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen.poll() is None

    def call(self, cmd: str, /, timeout: float = 5.0, **args: object) -> object:
        """One control request (testbed.control.call on this daemon's socket)."""
        return control.call(self.socket, cmd, timeout=timeout, **args)

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the daemon's log."""
        return tail(self.log_path, lines)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the daemon, SIGKILL it after `timeout`; its exit status. Removes a socket it left."""
        status = proc.stop(self.popen, timeout)
        if self.popen.poll() is not None and self.socket.is_socket():
            self.socket.unlink(missing_ok=True)  # killed before it could remove it
        log.info("%s (pid %d) stopped, status %s", self.name, self.pid, status)
        return status


def start(
    name: str,
    argv: Sequence[str],
    *,
    socket: Path,
    log_path: Path,
    ledger: Ledger,
    netns_pid: int | None = None,
    netns: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = START_TIMEOUT_S,
    ready: Callable[[Daemon], bool] | None = None,
) -> Daemon:
    """Start daemon `name` running `argv`, recorded in `ledger`, and wait until `socket` answers ping."""
    socket, log_path = Path(socket), Path(log_path)
    socket.parent.mkdir(parents=True, exist_ok=True)
    ledger.record("file", str(socket), what=name)
    popen = proc.spawn(in_netns(argv, netns_pid=netns_pid, netns=netns), output=log_path,
                       env=repo_env() if env is None else env, cwd=cwd or REPO_ROOT,
                       on_start=lambda pid: ledger.record_process(pid, what=name))
    d = Daemon(name, socket, log_path, popen)
    log.debug("%s started, pid %d, control %s", name, d.pid, socket)
    try:
        wait_ready(d, timeout, ready)
    except BaseException:
        d.stop()  # whatever went wrong (even ^C), no half-started daemon is left running
        raise
    log.info("%s running (pid %d), control at %s", name, d.pid, socket)
    return d


def wait_ready(d: Daemon, timeout: float, ready: Callable[[Daemon], bool] | None = None) -> None:
    """Wait until `d` answers ping (and `ready(d)`); DaemonExited if it ends, TestbedError after `timeout`.

    The caller stops `d` when this raises (`start` does).
    """
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        status = d.popen.poll()
        if status is not None:
            raise DaemonExited(f"{d.name} exited with status {status} while starting; log {d.log_path}:\n"
                               f"{d.log_tail()}", status)
        try:
            d.call("ping", timeout=1.0)
            if ready is None or ready(d):
                return
            last = "ping answered, not ready yet"
        except TestbedError as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise TestbedError(f"{d.name} did not become ready on {d.socket} within {timeout:g} s ({last}); "
                               f"log {d.log_path}:\n{d.log_tail()}")
        time.sleep(POLL_S)
