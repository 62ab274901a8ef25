"""Starts, checks and stops the run's os-ken OpenFlow controller; `python -m testbed.controller` runs it.

The launcher side (`Controller`) starts this module through `testbed.daemon` on a free port of
127.0.0.1, recorded in the run's ledger, and waits until it is ready: its control socket answers
`ping` (testbed.control's JSON-lines protocol) and the process itself listens for OpenFlow (read
from /proc, so another program that happens to hold the port is never mistaken for it).

The `__main__` side loads the app through os-ken's AppManager directly (the os-ken wheel ships no
`osken-manager` command), with $TESTBED_CONTROLLER_CONFIG naming a JSON file that holds the
topology's `controller.config` mapping, and serves the control socket: `ping` always, plus the
commands of any app that has a `northbound_handlers()` method (the learning app: `topology`,
`steer`, `unsteer`, `steers`; see controllers/l2_switch.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

from testbed import control, daemon, proc
from testbed.errors import TestbedError
from testbed.ledger import RUN_ROOT, Ledger

log = logging.getLogger(__name__)

#: The repository root: controller apps such as `controllers/l2_switch.py` are found from here.
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_APP = "controllers/l2_switch.py"
#: The topology's name for the default app.
LEARNING = "learning"
HOST = "127.0.0.1"
#: Exit status of the controller process when its port was taken (the launcher retries another).
EXIT_PORT_IN_USE = 3
#: The environment variable naming the app's config file (JSON: the topology's `controller.config`).
CONFIG_ENV = "TESTBED_CONTROLLER_CONFIG"
#: Longest unix socket path (sun_path is 108 bytes with its NUL).
SOCKET_PATH_MAX = 107


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
    """The module name of `app` (`learning`, a file path or a dotted name) and the directory to import it from."""
    if app == LEARNING:
        app = DEFAULT_APP
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


def _port_towards(switch: Any, node: Any) -> int:
    """The port number of Mininet `switch` whose link leads to `node`."""
    for intf, number in switch.ports.items():
        link = getattr(intf, "link", None)
        if link is None:
            continue
        other = link.intf2 if link.intf1 is intf else link.intf1
        if other.node is node:
            return int(number)
    raise TestbedError(f"no port of {switch.name} leads to {node.name}")


def _mac(node: Any) -> str:
    """The MAC address of `node`'s first interface (read in the node when Mininet does not know it)."""
    mac = node.MAC()
    if not mac:
        intf = node.intf()
        mac = proc.run_in(node, ["cat", f"/sys/class/net/{intf.name}/address"]).stdout.strip()
        intf.mac = mac
    return mac


def topology_map(topo: Any, net: Any, switch_of: dict[str, str], fronts: dict[str, Any]) -> dict[str, Any]:
    """What the steering app needs to know, as JSON: each site's dpid, each host's switch, port, MAC
    and IP, and each WAN link's ports. `fronts` maps a host to the node in front of it (its NIC)."""
    switches = {site: int(net[br].dpid, 16) for site, br in switch_of.items()}
    hosts = {}
    for h in topo.hosts():
        node = net[h.name]
        port = _port_towards(net[switch_of[h.site]], fronts.get(h.name, node))
        hosts[h.name] = {"dpid": switches[h.site], "port": port, "mac": _mac(node), "ip": h.ip.split("/")[0]}
    links = []
    for w in topo.wan:
        a, b = net[switch_of[w.a]], net[switch_of[w.b]]
        links.append({"a": switches[w.a], "a_port": _port_towards(a, b),
                      "b": switches[w.b], "b_port": _port_towards(b, a)})
    return {"switches": switches, "hosts": hosts, "links": links}


class Controller:
    """The run's controller process: started on a free local port, recorded, stopped by its handle."""

    def __init__(self, host: str = HOST, ready_timeout: float = 20.0, stop_timeout: float = 5.0):
        self.host = host
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.port: int | None = None
        self.app: str | None = None
        self.log_path: Path | None = None
        self.socket: Path | None = None
        self._daemon: daemon.Daemon | None = None

    @property
    def pid(self) -> int | None:
        """The controller's PID while it runs (or until stopped)."""
        return self._daemon.pid if self._daemon is not None else None

    @property
    def target(self) -> str:
        """The OVS controller target string, e.g. `tcp:127.0.0.1:40123`."""
        if self.port is None:
            raise TestbedError("controller not started")
        return f"tcp:{self.host}:{self.port}"

    def start(self, run_dir: Path, ledger: Ledger, app: str = LEARNING, config: dict | None = None,
              attempts: int = 3) -> int:
        """Start `app` (with `config`) listening on a free port, recorded, ready; the port."""
        if self._daemon is not None:
            raise TestbedError("controller already started")
        resolve_app(app)  # a missing app file is reported here, not as a dead child
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        config_path = run_dir / "controller-config.json"
        config_path.write_text(json.dumps(config or {}, indent=2, sort_keys=True))
        self.socket = run_dir / "controller.sock"
        if len(str(self.socket)) > SOCKET_PATH_MAX:
            self.socket = RUN_ROOT / ledger.rid / "controller.sock"
        self.log_path = run_dir / "controller.log"
        for attempt in range(1, attempts + 1):
            port = free_port(self.host)
            try:
                self._start_on(port, ledger, app, config_path)
                return port
            except daemon.DaemonExited as exc:
                if exc.returncode != EXIT_PORT_IN_USE:
                    raise
                log.warning("controller port %s was taken (attempt %d of %d)", port, attempt, attempts)
        raise TestbedError(f"controller: no free port after {attempts} attempts")

    def _start_on(self, port: int, ledger: Ledger, app: str, config_path: Path) -> None:
        """One attempt of `start` on `port`; DaemonExited(EXIT_PORT_IN_USE) when it was taken."""
        assert self.socket is not None and self.log_path is not None
        argv = daemon.module_argv("testbed.controller", "--app", app, "--port", port, "--host", self.host,
                                  "--log", self.log_path, "--ctl", self.socket, "--config", config_path)
        env = daemon.repo_env()
        env[CONFIG_ENV] = str(config_path)

        def listening(d: daemon.Daemon) -> bool:
            return is_listening(d.pid, self.host, port)

        self._daemon = None
        d = daemon.start("controller", argv, socket=self.socket, log_path=self.log_path, ledger=ledger,
                         env=env, timeout=self.ready_timeout, ready=listening)
        self._daemon, self.port, self.app = d, port, app
        log.info("controller %s running, pid %s, port %s, control %s", app, d.pid, port, self.socket)

    def alive(self) -> bool:
        """True while the controller process runs."""
        return self._daemon is not None and self._daemon.alive()

    def call(self, cmd: str, /, timeout: float = 10.0, **args: object) -> Any:
        """One request on the controller's control socket; its result (TestbedError on its error)."""
        if self._daemon is None:
            raise TestbedError("controller not started")
        return self._daemon.call(cmd, timeout=timeout, **args)

    def commands(self) -> list[str]:
        """The control commands the running app offers (always at least `ping`)."""
        return list(self.call("ping").get("commands", ["ping"]))

    def wait_connected(self, bridges: list[str], timeout: float) -> None:
        """Wait until `bridges` are connected (see module-level `wait_connected`)."""
        if not self.alive():
            raise TestbedError(f"controller is not running; see {self.log_path}")
        wait_connected(bridges, timeout)

    def stop(self) -> None:
        """SIGTERM our own process, SIGKILL it after `stop_timeout`; nothing else is signalled."""
        d, self._daemon = self._daemon, None
        if d is not None:
            d.stop(self.stop_timeout)


def northbound_handlers(apps: dict[str, Any]) -> dict[str, Callable[[dict], object]]:
    """The control commands of the loaded apps (their `northbound_handlers()`), and `ping` naming them."""
    handlers: dict[str, Callable[[dict], object]] = {}
    for app in apps.values():
        offer = getattr(app, "northbound_handlers", None)
        if callable(offer):
            handlers.update(offer())
    names = sorted({"ping", *handlers})

    def ping(args: dict) -> dict:
        return {"pid": os.getpid(), "apps": sorted(apps), "commands": names}

    handlers["ping"] = ping
    return handlers


def main(argv: list[str] | None = None) -> int:
    """Run one os-ken app on host:port with its control socket until killed (the controller process)."""
    ap = argparse.ArgumentParser(prog="python -m testbed.controller", description=__doc__)
    ap.add_argument("--app", default=LEARNING, help="learning, an app file or a module (default %(default)s)")
    ap.add_argument("--port", type=int, required=True, help="OpenFlow TCP port to listen on")
    ap.add_argument("--host", default=HOST, help="address to listen on (default %(default)s)")
    ap.add_argument("--ctl", type=Path, required=True, help="control socket (JSON lines)")
    ap.add_argument("--config", type=Path, help=f"the app's config, a JSON file (sets ${CONFIG_ENV})")
    ap.add_argument("--log", type=Path, help="log file (default: stderr)")
    ap.add_argument("--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    handler = logging.FileHandler(args.log) if args.log else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    mylog = logging.getLogger(__name__)

    if not port_free(args.host, args.port):
        mylog.error("port %s:%s is in use", args.host, args.port)
        return EXIT_PORT_IN_USE
    if args.config is not None:
        os.environ[CONFIG_ENV] = str(args.config)
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
    server = control.ServerThread(args.ctl, northbound_handlers(manager.applications), name="northbound")
    mylog.info("controller %s starting on %s:%s, control %s", module, args.host, args.port, args.ctl)
    try:
        hub.joinall(services)
    finally:
        server.close()
        manager.close()
    mylog.error("controller stopped: its OpenFlow server ended (port taken?)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
