"""Starts, checks and stops the run's os-ken OpenFlow controller; `python -m testbed.controller` runs it.

The launcher side (`Controller`) starts this module as its own process on a free port of
127.0.0.1, records the PID in the run's ledger, and waits until that process is listening (read
from /proc, so another program that happens to hold the port is never mistaken for it). The
`__main__` side loads the app through os-ken's AppManager directly, since the os-ken wheel ships
no `osken-manager` command.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from testbed import proc
from testbed.errors import TestbedError
from testbed.ledger import Ledger

log = logging.getLogger(__name__)

#: The repository root: controller apps such as `controllers/l2_switch.py` are found from here.
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_APP = "controllers/l2_switch.py"
HOST = "127.0.0.1"
#: Exit status of the controller process when its port was taken (the launcher retries another).
EXIT_PORT_IN_USE = 3


def free_port(host: str = HOST) -> int:
    """A TCP port on `host` that nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_free(host: str, port: int) -> bool:
    """True when `host`:`port` can be bound now (as the OpenFlow server will, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def resolve_app(app: str) -> tuple[str, Path | None]:
    """The module name of `app` (a file path or a dotted name) and the directory to import it from."""
    path = Path(app)
    if path.suffix != ".py":
        return app, None
    if not path.is_absolute() and not path.exists():
        path = REPO_ROOT / path
    path = path.resolve()
    if not path.is_file():
        raise TestbedError(f"controller app {app}: no such file")
    parts = [path.stem]
    root = path.parent
    while (root / "__init__.py").exists():
        parts.insert(0, root.name)
        root = root.parent
    return ".".join(parts), root


def _socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets process `pid` has open."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def listening_inodes(tcp_table: str, host: str, port: int) -> set[str]:
    """Socket inodes that LISTEN on `host`:`port` (or on any address), from /proc/net/tcp text."""
    want = {f"{_hex_ip(host)}:{port:04X}", f"00000000:{port:04X}"}
    found = set()
    for line in tcp_table.splitlines()[1:]:
        cols = line.split()
        if len(cols) > 9 and cols[1] in want and cols[3] == "0A":
            found.add(cols[9])
    return found


def _hex_ip(host: str) -> str:
    """`host` (dotted IPv4) as /proc/net/tcp writes it (little-endian hex)."""
    return "".join(f"{int(o):02X}" for o in reversed(host.split(".")))


def is_listening(pid: int, host: str, port: int) -> bool:
    """True when process `pid` itself holds a socket listening on `host`:`port`."""
    try:
        table = Path(f"/proc/{pid}/net/tcp").read_text()
    except OSError:
        return False
    return bool(listening_inodes(table, host, port) & _socket_inodes(pid))


def connection_status(bridges_json: str, controllers_json: str) -> dict[str, bool]:
    """Per bridge, whether all its controllers are connected; from `ovs-vsctl --format=json list`."""
    connected = {}
    for row in json.loads(controllers_json)["data"]:
        uuid, is_connected = row[0][1], row[1]
        connected[uuid] = is_connected is True
    status = {}
    for name, ctl in json.loads(bridges_json)["data"]:
        uuids = [ctl[1]] if ctl[0] == "uuid" else [u[1] for u in ctl[1]]
        status[name] = bool(uuids) and all(connected.get(u, False) for u in uuids)
    return status


def wait_connected(bridges: list[str], timeout: float, interval: float = 0.1) -> None:
    """Wait until every bridge in `bridges` is connected to its controller; else TestbedError."""
    deadline = time.monotonic() + timeout
    while True:
        b = proc.run(["ovs-vsctl", "--format=json", "--columns=name,controller", "list", "Bridge"])
        c = proc.run(["ovs-vsctl", "--format=json", "--columns=_uuid,is_connected", "list",
                      "Controller"])
        status = connection_status(b.stdout, c.stdout)
        missing = [br for br in bridges if not status.get(br, False)]
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise TestbedError(
                f"bridges not connected to their controller after {timeout:g}s: {', '.join(missing)}"
            )
        time.sleep(interval)


class _PortTaken(Exception):
    """The controller process found its port taken by another program."""


class Controller:
    """The run's controller process: started on a free local port, recorded, stopped by its PID."""

    def __init__(self, host: str = HOST, ready_timeout: float = 20.0, stop_timeout: float = 5.0):
        self.host = host
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.port: int | None = None
        self.pid: int | None = None
        self.log_path: Path | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        """The OVS controller target string, e.g. `tcp:127.0.0.1:40123`."""
        if self.port is None:
            raise TestbedError("controller not started")
        return f"tcp:{self.host}:{self.port}"

    def start(self, run_dir: Path, ledger: Ledger, app: str = DEFAULT_APP, attempts: int = 3) -> int:
        """Start `app` listening on a free port, record its PID, wait until it listens; the port."""
        if self._proc is not None:
            raise TestbedError("controller already started")
        resolve_app(app)  # a missing app file is reported here, not as a dead child
        for attempt in range(1, attempts + 1):
            try:
                return self._start_on(free_port(self.host), Path(run_dir), ledger, app)
            except _PortTaken as exc:
                log.warning("controller port %s was taken (attempt %d of %d)", exc, attempt,
                            attempts)
        raise TestbedError(f"controller: no free port after {attempts} attempts")

    def _start_on(self, port: int, run_dir: Path, ledger: Ledger, app: str) -> int:
        """One attempt of `start` on `port`; _PortTaken when another program bound it first."""
        self.log_path = Path(run_dir) / "controller.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        argv = [sys.executable, "-m", "testbed.controller", "--app", app, "--port", str(port),
                "--host", self.host, "--log", str(self.log_path)]
        self._proc = proc.spawn(argv, output=self.log_path, env=env, cwd=REPO_ROOT)
        self.pid = self._proc.pid
        ledger.record_process(self.pid, "controller")
        log.info("controller %s started, pid %s, port %s", app, self.pid, port)
        self._wait_listening(port)
        self.port = port
        return port

    def _wait_listening(self, port: int) -> None:
        """Wait until our process listens on `port`; stop it and raise if it dies or never does."""
        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout
        while not is_listening(self._proc.pid, self.host, port):
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                if code == EXIT_PORT_IN_USE:
                    raise _PortTaken(port)
                raise TestbedError(f"controller exited with status {code}; see {self.log_path}: "
                                   f"{_tail(self.log_path)}")
            if time.monotonic() >= deadline:
                self.stop()
                raise TestbedError(f"controller did not listen on {self.host}:{port} within "
                                   f"{self.ready_timeout:g}s; see {self.log_path}")
            time.sleep(0.05)

    def alive(self) -> bool:
        """True while the controller process runs."""
        return self._proc is not None and self._proc.poll() is None

    def wait_connected(self, bridges: list[str], timeout: float) -> None:
        """Wait until `bridges` are connected (see module-level `wait_connected`)."""
        if not self.alive():
            raise TestbedError(f"controller is not running; see {self.log_path}")
        wait_connected(bridges, timeout)

    def stop(self) -> None:
        """SIGTERM our own process, SIGKILL it after `stop_timeout`; nothing else is signalled."""
        p, self._proc = self._proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            log.warning("controller pid %s ignored SIGTERM, killing", p.pid)
            p.kill()
            p.wait(self.stop_timeout)
        log.info("controller pid %s stopped (status %s)", p.pid, p.returncode)


def _tail(path: Path | None, lines: int = 3) -> str:
    """The last lines of file `path`, joined, for error messages."""
    try:
        return " | ".join(Path(path).read_text(errors="replace").splitlines()[-lines:]) if path else ""
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    """Run one os-ken app on host:port until killed (the controller process's entry point)."""
    ap = argparse.ArgumentParser(prog="python -m testbed.controller", description=__doc__)
    ap.add_argument("--app", default=DEFAULT_APP, help="app file or module (default %(default)s)")
    ap.add_argument("--port", type=int, required=True, help="OpenFlow TCP port to listen on")
    ap.add_argument("--host", default=HOST, help="address to listen on (default %(default)s)")
    ap.add_argument("--log", type=Path, help="log file (default: stderr)")
    ap.add_argument("--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    handler = logging.FileHandler(args.log) if args.log else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])

    if not port_free(args.host, args.port):
        logging.getLogger(__name__).error("port %s:%s is in use", args.host, args.port)
        return EXIT_PORT_IN_USE
    module, root = resolve_app(args.app)
    if root is not None and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from os_ken import cfg
    from os_ken.base.app_manager import AppManager
    from os_ken.lib import hub

    manager = AppManager.get_instance()
    manager.load_apps([module])
    cfg.CONF(args=["--ofp-tcp-listen-port", str(args.port), "--ofp-listen-host", args.host],
             project="os_ken")
    contexts = manager.create_contexts()
    services = manager.instantiate_apps(**contexts)
    logging.getLogger(__name__).info("controller %s starting on %s:%s", module, args.host,
                                     args.port)
    try:
        hub.joinall(services)
    finally:
        manager.close()
    logging.getLogger(__name__).error("controller stopped: its OpenFlow server ended (port taken?)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
