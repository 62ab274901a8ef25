"""Docker hosts on another server: that server's Docker engine, and its hosts' namespaces, reached through its door.

The engine: the Docker SDK over one `ssh -N -L LOCAL.sock:/var/run/docker.sock` per server,
started through testbed/proc.py with the door's ssh options (BatchMode, key, port, known_hosts)
and recorded in the ledger, as the controller's `ssh -R` is. Not the SDK's own `ssh://` URL: with
`use_ssh_client` the SDK starts `ssh` itself (outside proc.py, without the server's key or
known_hosts, one unrecorded process per pooled connection); without it, it uses paramiko, a second
ssh implementation with its own host-key policy. Over the forward the SDK works as on this
machine, so `DockerHost` is the same class for both; commands (the hosts' shells, links taken
down and up by the namespace's PID there, readiness (ports from that server's /proc, probes started
there in the host's namespace), the main command's PID and its signals, files in the containers,
cleanup) go through the door: `Namespaces`, the one seam for all of them (on this machine: netns).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Sequence

from testbed import proc
from testbed.cluster.server import Server
from testbed.emulation import netns
from testbed.errors import TestbedError
from testbed.ledger import Ledger

log = logging.getLogger(__name__)

#: The engine's socket on the server (Docker's default).
REMOTE_SOCKET = "/var/run/docker.sock"

#: Polls the server's /proc until every key's namespace listens on its ports (argv[1]: JSON
#: {key: [pid, [[proto, port], ...]]}, argv[2]: timeout); prints the keys still not listening.
WAIT_PORTS = "from pathlib import Path\n" + inspect.getsource(netns.listening) + r"""
import json, sys, time
todo = {k: (pid, [tuple(p) for p in ports]) for k, (pid, ports) in json.loads(sys.argv[1]).items() if ports}
deadline = time.monotonic() + float(sys.argv[2])
while True:
    for k in list(todo):
        pid, ports = todo[k]
        ports = [(proto, port) for proto, port in ports if not listening(pid, proto, port)]
        if ports:
            todo[k] = (pid, ports)
        else:
            del todo[k]
    if not todo or time.monotonic() >= deadline:
        break
    time.sleep(0.02)
print(json.dumps(list(todo)))
"""

#: Tries a readiness probe (argv[1]: JSON of kind, port, send, expect, path) against 127.0.0.1 of the
#: namespace it runs in, until it passes or argv[2] seconds have passed (at least once); prints 1 or 0.
PROBE = "from __future__ import annotations\nimport socket\nfrom typing import Any\n" + inspect.getsource(netns.probe_once) + r"""
import json, sys, time, types
check = types.SimpleNamespace(**json.loads(sys.argv[1]))
deadline = time.monotonic() + float(sys.argv[2])
while not (ok := probe_once(check)) and time.monotonic() < deadline:
    time.sleep(0.05)
print(1 if ok else 0)
"""

#: Prints the PID (in the server's /proc) of process argv[2] of the PID namespace of argv[1], or nothing.
FIND_PID = "from __future__ import annotations\nimport os\nfrom pathlib import Path\n" + inspect.getsource(netns.find_pid) + r"""
import sys
pid = find_pid(int(sys.argv[1]), int(sys.argv[2]))
print("" if pid is None else pid)
"""

#: Writes stdin to argv[1] (its directory made first).
WRITE = "import os, sys; os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True); open(sys.argv[1], 'w').write(sys.stdin.read())"


@dataclass
class Engine:
    """The Docker engine Docker hosts of one server are made by: an SDK client and the door to that server."""

    client: Any
    door: Server
    forward: Any = None  # the ssh forwarding the engine's socket (None: this machine's engine)

    def close(self) -> None:
        """Close the client and end the forward (by handle)."""
        try:
            self.client.close()
        except Exception as exc:  # noqa: BLE001 - closing a pool is best effort
            log.debug("closing the engine client of %s: %s", self.door.name, exc)
        if self.forward is not None:
            proc.stop(self.forward, timeout=5)
            self.forward = None


def forward_control(door: Server, ledger: Ledger, local: Path, remote: str, output: Path, what: str,
                    deadline: float, check: Callable[[], None] | None = None) -> Any:
    """Forward the control socket `remote` on `door` to `local` (recorded); returns the forward once `ping` answers here.

    `check` (if given) is called while waiting and raises when what serves the socket has died.
    """
    from testbed import control

    forward = proc.spawn(forward_argv(door, local, remote), output=output,
                         on_start=lambda pid: ledger.record_process(pid, f"{what} control forward to {door.name}"))
    while True:
        try:
            control.call(local, "ping", timeout=2)
            return forward
        except (TestbedError, OSError) as exc:
            if check is not None:
                check()
            if forward.poll() is not None or time.monotonic() > deadline:
                proc.stop(forward, timeout=5)
                raise TestbedError(f"{what} on {door} does not answer here through its forward: {exc}") from None
            time.sleep(0.05)


def forward_argv(door: Server, local_socket: Path, remote_socket: str = REMOTE_SOCKET) -> list[str]:
    """The ssh that forwards `local_socket` here to a unix socket on `door`'s server (default: the engine's)."""
    return ["ssh", *door.ssh_options(), "-N", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=5",
            "-o", "StreamLocalBindUnlink=yes", "-L", f"{local_socket}:{remote_socket}", door.destination]


def open_engine(door: Server, ledger: Ledger, directory: Path, timeout: float = 20.0) -> Engine:
    """Forward `door`'s engine socket into `directory` (recorded first); ready once the engine answers a ping."""
    import docker

    sock = directory / f"docker-{door.name}.sock"
    ledger.record("file", str(sock))
    out = (ledger.run_dir or directory) / f"docker-forward-{door.name}.log"
    p = proc.spawn(forward_argv(door, sock), output=out,
                   on_start=lambda pid: ledger.record_process(pid, f"Docker engine forward to {door.name}"))
    deadline = time.monotonic() + timeout
    why = "no socket yet"
    while time.monotonic() < deadline:
        if p.poll() is not None:
            text = out.read_text(errors="replace").strip()[-300:] if out.exists() else ""
            raise TestbedError(f"Docker engine forward to {door} exited {p.returncode} "
                               f"(AllowStreamLocalForwarding? engine at {REMOTE_SOCKET}?): {text}")
        if sock.exists():
            client = docker.DockerClient(base_url=f"unix://{sock}", timeout=60)
            try:
                client.ping()
                log.info("Docker engine of %s reached through %s", door.name, sock)
                return Engine(client, door, p)
            except Exception as exc:  # noqa: BLE001 - the engine not answering yet, or at all
                why = str(exc)
                client.close()
        time.sleep(0.05)
    proc.stop(p, timeout=5)
    raise TestbedError(f"the Docker engine of {door} does not answer through ssh after {timeout:g} s: {why}")


class Namespaces:
    """A server's view of its hosts' network namespaces by PID: links down and up, ports listened on."""

    def __init__(self, door: Server) -> None:
        self.door = door

    def _run(self, pid: int, argv: list[str]) -> str:
        return self.door.run(netns.nsenter(pid, argv), timeout=10).stdout

    def links(self, pid: int) -> list[str]:
        return [i["ifname"] for i in json.loads(self._run(pid, ["ip", "-j", "link", "show"]) or "[]")
                if i.get("ifname") != "lo"]

    def links_down(self, pid: int) -> netns.LinkState:
        """As netns.links_down, on the server."""
        if self.door.local:
            return netns.links_down(pid)
        # one round trip (each is tens of ms over ssh; three made a crash take ~0.6 s to silence the host)
        routes = json.loads(self._run(pid, ["sh", "-c", LINKS_DOWN]) or "[]")
        return netns.LinkState([r for r in routes if r.get("protocol") != "kernel"])

    def links_up(self, pid: int, state: netns.LinkState | None = None) -> None:
        """As netns.links_up, on the server."""
        if self.door.local:
            return netns.links_up(pid, state)
        for name in self.links(pid):
            self._run(pid, ["ip", "link", "set", "dev", name, "up"])
        for route in (state.routes if state else []):
            self._run(pid, ["ip", "route", "replace", *netns.route_args(route)])

    def probe(self, pid: int, check: Any, timeout: float) -> bool:
        """True once a udp/tcp/http readiness probe (`check`, a spec.Readiness) passes in the namespace of `pid`,
        tried until `timeout`; on another server from a process started there in that namespace (one ssh)."""
        if self.door.local:
            deadline = time.monotonic() + timeout
            while not netns.in_netns(pid, lambda: netns.probe_once(check)):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.05)
            return True
        wire = {k: getattr(check, k) for k in ("kind", "port", "send", "expect", "path")}
        res = self.door.run(netns.nsenter(pid, ["python3", "-c", PROBE, json.dumps(wire), str(timeout)]),
                            timeout=timeout + 20)
        return res.stdout.strip().endswith("1")

    def read_text(self, pid: int, path: str) -> str | None:
        """File `path` of the container whose init is `pid` (None when it cannot be read); TestbedError when that init is gone."""
        if self.door.local:
            try:
                return netns.container_path(pid, path).read_text()
            except OSError:
                return None
        res = self.door.run(["cat", f"/proc/{pid}/root/{path.lstrip('/')}"], check=False, timeout=10)
        if res.ok:
            return res.stdout
        if not self.door.run(["test", "-e", f"/proc/{pid}/root"], check=False, timeout=10).ok:
            raise TestbedError(f"container init {pid} on {self.door.name} is gone (was the host killed?)")
        return None

    def write_text(self, pid: int, path: str, text: str) -> None:
        """Write `text` to `path` of the container whose init is `pid` (its directory made); OSError when it cannot."""
        if self.door.local:
            target = netns.container_path(pid, path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            return
        res = self.door.run(["python3", "-c", WRITE, f"/proc/{pid}/root/{path.lstrip('/')}"], input=text,
                            check=False, timeout=10)
        if not res.ok:
            raise OSError(f"on {self.door.name}: {res.stderr.strip()[-200:]}")

    def host_pid(self, container_pid: int, inner_pid: int) -> int | None:
        """The server's PID of process `inner_pid` of the container whose init is `container_pid`; None if none."""
        if self.door.local:
            return netns.find_pid(container_pid, inner_pid)
        out = self.door.run(["python3", "-c", FIND_PID, str(container_pid), str(inner_pid)], timeout=20).stdout.strip()
        return int(out) if out.isdigit() else None

    def kill(self, pid: int) -> None:
        """SIGKILL process `pid` of the server (one already gone is fine)."""
        if self.door.local:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        self.door.run(["kill", "-KILL", str(pid)], check=False, timeout=10)

    def wait_ports(self, wanted: Mapping[Hashable, tuple[int, Sequence[tuple[str, int]]]],
                   timeout: float) -> list[Hashable]:
        """As netns.wait_ports, polled on the server (one ssh for all its hosts); the keys not listening."""
        if self.door.local:
            return netns.wait_ports(wanted, timeout)
        todo = {str(k): [pid, [list(p) for p in ports]] for k, (pid, ports) in wanted.items() if ports}
        if not todo:
            return []
        res = self.door.run(["python3", "-c", WAIT_PORTS, json.dumps(todo), str(timeout)], timeout=timeout + 20)
        late = set(json.loads(res.stdout.strip().splitlines()[-1]))
        return [k for k in wanted if str(k) in late]


#: Prints the namespace's routes (JSON), then takes every interface but loopback down: run in it by nsenter.
LINKS_DOWN = ('ip -j route show; for d in $(ip -o link show | cut -d: -f2 | cut -d@ -f1); do '
              '[ "$d" = lo ] || ip link set dev "$d" down; done')


def namespaces_of(node: Any) -> Namespaces:
    """The namespaces of the server `node` runs on (a Docker host's own; a door's; this machine's)."""
    return getattr(node, "namespaces", None) or Namespaces(getattr(node, "door", None) or Server())
