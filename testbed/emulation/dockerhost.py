"""A Mininet host made of Docker containers: its service container and, once needed, a holder of its network.

Containernet's Docker host on the installed Mininet, with one change: before the host's service
container is killed or joined by another, a holder joins its network namespace and owns it from
then on (`hold_namespace`, see `prelaunch`), so the host can crash and come back
(`crash`/`recover`), freeze (`freeze`/`thaw`), and run further service containers beside its own.
On another server (`door`) the same class runs: `client` is that server's engine, its shell and
processes are `docker exec` there through the door, and its namespace is reached there by the
PID that holds it (testbed/cluster/engine.Namespaces).
"""

from __future__ import annotations

import logging
import os
import select
import time
from typing import Any, Sequence

from mininet.node import Host

from testbed.cluster.engine import Namespaces
from testbed.cluster.server import LOCAL, Server
from testbed.emulation.plainhost import tolerant_decoder
from testbed.errors import TestbedError
from testbed.emulation import netns
from testbed.emulation.prelaunch import (ContainerPlan, Launched, ShellProcess, holder_args, joined, launch_one,
                                           record, record_holder, run_args, spawn_shell, start_container, where)
from testbed.ledger import Ledger
from testbed.topology.model import LOCAL_SERVER

log = logging.getLogger(__name__)

#: The container's first process: wait until the testbed has configured the interfaces, then start
#: the main command in the background and stay alive (the host outlives its service), reaping children.
#: It waits blocked on a FIFO that it holds open itself (so neither side's open ever blocks), not by
#: polling: a hundred containers each running `sleep 0.02` in a loop kept two cores busy.
ENTRY = r"""
mkdir -p /run/testbed
if mkfifo /run/testbed/go 2>/dev/null; then
    exec 3<>/run/testbed/go
    while [ ! -e /run/testbed/ready ]; do read _ <&3; done
    exec 3<&-
else
    while [ ! -e /run/testbed/ready ]; do sleep 0.02; done
fi
if [ $# -gt 0 ]; then
    "$@" >>/run/testbed/main.log 2>&1 &
    echo $! >/run/testbed/main.pid
fi
while :; do wait; sleep 1; done
"""


#: What lets the entry script start the main command (run in the container once its network is up).
READY_CMD = "touch /run/testbed/ready; echo go 1<>/run/testbed/go"
#: How long `ready` waits at most for the main command to listen on the image's exposed ports.
READY_WAIT_S = 5.0


def parse_memory(text: str | None) -> int | None:
    """Docker memory notation (`256m`, `1g`, `512k`, bytes) to bytes."""
    if text is None:
        return None
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = str(text).strip().lower().rstrip("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def container_name(ledger: Ledger, node: str) -> str:
    """The container name of Docker host `node` in the ledger's run."""
    return f"{ledger.prefix}-{node}"


def image_command(client: Any, image: str) -> list[str]:
    """An image's CMD as the host's main command (a bare shell counts as none)."""
    cmd = client.images.get(image).attrs["Config"].get("Cmd") or []
    return [] if cmd in (["bash"], ["/bin/bash"], ["sh"]) else list(cmd)


def image_ports(client: Any, image: str) -> tuple[str, ...]:
    """The ports an image EXPOSEs, in Docker's notation ("7000/udp", "7001/tcp")."""
    return tuple(sorted(client.images.get(image).attrs["Config"].get("ExposedPorts") or {}))


def docker_client():
    """A Docker SDK client for the local engine."""
    import docker

    try:
        return docker.from_env(timeout=60)
    except Exception as exc:
        raise TestbedError(f"no Docker engine answers ({exc}); run scripts/setup.sh services") from None


class DockerHost(Host):
    """A host that is containers: its service in the image's container, its network held by that or by a holder.

    Mininet talks to it through a shell started with `docker exec` in the service container, so
    `cmd()`, `popen()` and the Mininet CLI work as on any host, and everything it runs is inside
    that container's cgroup. `pid` (= `netns_pid`) is the PID that holds the host's namespace: the
    service container's init until a holder is made, the holder's after.
    """

    def __init__(self, name: str, dimage: str, ledger: Ledger, cpu: float | None = None,
                 memory: str | None = None, environment: dict[str, str] | None = None,
                 volumes: Sequence[str] = (), dcmd: Sequence[str] | None = None,
                 launched: Launched | None = None, client: Any = None, ready_ports: Sequence[str] = (),
                 plan: ContainerPlan | None = None, door: Server = LOCAL, **params: Any) -> None:
        self.door = door  # the server the containers run on (testbed/cluster/server.py)
        self.namespaces = Namespaces(door)
        self.dimage = dimage
        self.ready_ports = tuple(ready_ports)  # ready() waits until the main command listens on these
        self.ledger = ledger
        self.cname = container_name(ledger, name)
        self.dcmd = list(dcmd) if dcmd is not None else None
        self.client = client or docker_client()
        self.cplan = plan or self.plan(name, dimage, ledger, self.client, cpu, memory, environment, volumes, dcmd)
        self._preshell = launched.shell if launched is not None else None
        self._removed = False
        self.down = False  # crashed by a fault and not recovered: silent, no commands
        self._link_state: netns.LinkState | None = None
        self.sidecars: dict[str, Any] = {}  # service containers beside the host's own, by service name
        self._sidecar_args: dict[str, dict[str, Any]] = {}
        if launched is None:  # not prelaunched: create it here, recorded first
            record(ledger, self.cplan)
            launched = launch_one(self.client, self.cplan, with_shell=False, door=door)
        self.container = launched.container
        self.cpid = launched.pid
        self.holder: Any = None  # made by hold_namespace
        self.netns_pid = launched.pid
        super().__init__(name, **params)

    @staticmethod
    def plan(name: str, dimage: str, ledger: Ledger, client: Any, cpu: float | None = None,
             memory: str | None = None, environment: dict[str, str] | None = None,
             volumes: Sequence[str] = (), dcmd: Sequence[str] | None = None,
             server: str = LOCAL_SERVER) -> ContainerPlan:
        """The containers Docker host `name` runs, as data (for `prelaunch`, or made here); `client`: `server`'s engine."""
        cname = container_name(ledger, name)
        command = list(dcmd) if dcmd is not None else image_command(client, dimage)
        args = run_args(name, cname, ledger.rid, dimage, ["/bin/sh", "-c", ENTRY, "sh"], command, cpu,
                        parse_memory(memory), dict(environment or {}), volumes)
        return ContainerPlan(name, cname, dimage, args, holder_args(name, cname, ledger.rid), server)

    def main_command(self) -> list[str]:
        """The service the container runs once its network is up: `command`, else the image's CMD."""
        return self.dcmd if self.dcmd is not None else image_command(self.client, self.dimage)

    def startShell(self, mnopts: Any = None) -> None:  # noqa: N802
        """Start the Mininet shell inside the service container; `pid` is the namespace's (for netns moves)."""
        if self.shell:
            return
        pre, self._preshell = self._preshell, None
        if pre is None:  # not prelaunched
            pre = spawn_shell(self.cname, self.name, self.door)
        self._adopt_shell(pre)
        self.cmd("unset HISTFILE; stty -echo; set +m")

    def _adopt_shell(self, pre: ShellProcess) -> None:
        """Take over a spawned shell as Mininet's and read up to its first prompt."""
        if not self.door.local:  # the local ssh carrying it: ends with the container, recorded all the same
            self.ledger.record_process(pre.popen.pid, f"ssh for the shell of {self.name}")
        self.master, self.slave, self.shell = pre.master, pre.slave, pre.popen
        self.stdin = os.fdopen(self.master, "r")
        self.stdout = self.stdin
        self.pid = self.netns_pid
        self.pollOut = select.poll()
        self.pollOut.register(self.stdout)
        self._poll_in = select.poll()  # input only: pollOut also reports POLLOUT, always ready
        self._poll_in.register(self.stdout, select.POLLIN | select.POLLPRI)
        self.outToNode[self.stdout.fileno()] = self
        self.inToNode[self.stdin.fileno()] = self
        self.execed = False
        self.lastCmd = None
        self.lastPid = None
        self.readbuf = ""
        self.waiting = False
        self.decoder = tolerant_decoder()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            data = self.read(1024)
            if data and data[-1] == chr(127):
                break
            if self.shell.poll() is not None:
                raise TestbedError(f"{self.name}: the shell in its container exited")
            self.pollOut.poll(1000)
        self.waiting = False

    def _drop_shell(self) -> None:
        """Forget a shell whose container is gone (its pty closed)."""
        if self.shell is None:
            return
        if self.shell.poll() is None:
            self.shell.kill()
        for table in (self.outToNode, self.inToNode):
            table.pop(self.stdout.fileno(), None)
        for closer in (self.stdout.close, lambda: os.close(self.slave)):
            try:
                closer()
            except OSError:
                pass
        self.shell = None
        self.waiting = False

    def _check_up(self, what: object) -> None:
        if self.down:
            raise TestbedError(f"{self.name} is down (crashed by a fault): {what} not run")

    def cmd(self, *args: Any, **kwargs: Any) -> str:
        """Mininet's cmd; TestbedError on a crashed host or a dead shell (nothing is silently skipped).

        After `terminate` (teardown) commands are no-ops: Mininet deletes interfaces through them.
        """
        if self._removed:
            return ""
        self._check_up(args)
        if self.shell is None or self.shell.poll() is not None:
            raise TestbedError(f"{self.name}: its shell is gone (container not running): {args} not run")
        return super().cmd(*args, **kwargs)

    def waitOutput(self, verbose: bool = False, findPid: bool = True) -> str:  # noqa: N802
        """Mininet's waitOutput, but it gives up when the container is killed or frozen."""
        output, quiet_since = "", time.monotonic()
        while self.waiting:
            if self.shell.poll() is not None:
                self.waiting = False
                break
            if not self.readbuf:
                events = self._poll_in.poll(200)
                if not events:
                    if time.monotonic() - quiet_since > 1.0 and not self.running():
                        log.debug("%s: container not running; command abandoned", self.name)
                        self.waiting = False
                    continue
                if not any(ev & (select.POLLIN | select.POLLPRI) for _, ev in events):  # hang-up
                    self.waiting = False
                    break
            try:
                data = self.monitor(timeoutms=0, findPid=findPid)
            except OSError:
                data, self.waiting = "", False
            output += data
            quiet_since = time.monotonic()
        return output

    def running(self) -> bool:
        """True while the service container runs (not killed, not paused)."""
        try:
            self.container.reload()
        except Exception:
            return False
        return self.container.status == "running"

    def popen(self, *args: Any, **kwargs: Any) -> Any:
        """A process inside the service container (`docker exec -i`), like Node.popen in a namespace."""
        self._check_up(args)
        if self.door.local:
            kwargs.setdefault("mncmd", ["docker", "exec", "-i", self.cname])
            return super().popen(*args, **kwargs)
        argv = list(args[0]) if len(args) == 1 and isinstance(args[0], list) else \
            (args[0].split() if len(args) == 1 else [str(a) for a in args])
        kwargs["mncmd"] = []  # one quoted command line for the server's shell (ssh joins its arguments)
        return super().popen(self.door.argv(["docker", "exec", "-i", self.cname, *argv]), **kwargs)

    def exec(self, argv: Sequence[str], timeout: float = 30.0) -> str:
        """Run `argv` in the service container through the Docker API; its output, TestbedError if it fails."""
        self._check_up(argv)
        code, output = self.container.exec_run(list(argv))
        text = output.decode(errors="replace").strip() if isinstance(output, bytes) else str(output or "")
        if code != 0:
            raise TestbedError(f"{self.name}: {' '.join(argv)} exited {code}: {text}")
        return text

    @property
    def listen_ports(self) -> list[tuple[str, int]]:
        """(proto, port) the main command is expected to listen on (the image's exposed ports)."""
        return [netns.parse_port(p) for p in self.ready_ports]

    def ready(self) -> None:
        """Let the container's main command start (its interfaces are configured now); wait (at most READY_WAIT_S) for its ports."""
        if self.shell is not None and self.shell.poll() is None:
            self.cmd(READY_CMD)  # through the open shell: no Docker API round trip
        else:
            self.exec(["sh", "-c", READY_CMD])
        if self.namespaces.wait_ports({self.name: (self.netns_pid, self.listen_ports)}, READY_WAIT_S):
            log.warning("%s: not listening on %s after %g s", self.name, ", ".join(self.ready_ports), READY_WAIT_S)

    def start_service(self, command: Sequence[str] | None = None, environment: dict[str, str] | None = None) -> None:
        """(Re)start the main command (or `command` in its place) in the background, as the entry script does."""
        main = list(command) if command is not None else self.main_command()
        if not main:
            return
        env = [f"{k}={v}" for k, v in (environment or {}).items()]
        script = '"$@" >>/run/testbed/main.log 2>&1 & echo $! >/run/testbed/main.pid'
        self.exec(["env", *env, "sh", "-c", script, "sh", *main] if env else ["sh", "-c", script, "sh", *main])

    # -- failure modes -----------------------------------------------------------------------
    def containers(self) -> list[Any]:
        """The host's service container and the service containers beside it."""
        return [self.container, *self.sidecars.values()]

    def hold_namespace(self) -> None:
        """Make the holder that keeps the host's namespace when its service container goes (once; recorded first)."""
        if self.holder is not None:
            return
        record_holder(self.ledger, self.cplan)
        self.holder, self.netns_pid = start_container(self.client, self.cplan.holder_args, self.name)
        self.pid = self.netns_pid

    def crash(self) -> None:
        """The host fails at once and answers nothing: links down (no ICMP, RST or ARP), containers killed.

        The holder (made now unless made ahead) keeps the namespace, so the interfaces, addresses,
        shaping and NIC stay for `recover`.
        """
        self._check_up("crash")
        self._link_state = self.namespaces.links_down(self.netns_pid)
        try:
            self.hold_namespace()
        except BaseException:
            self.namespaces.links_up(self.netns_pid, self._link_state)
            self._link_state = None
            raise
        self.down = True
        errors = []
        for box in self.containers():
            try:
                box.kill()
            except Exception as exc:  # noqa: BLE001 - every container is tried
                errors.append(f"{box.name}: {exc}")
        self._drop_shell()
        if errors:
            raise TestbedError(f"{self.name}: kill failed: {'; '.join(errors)}")

    def recover(self) -> None:
        """The crashed host boots again: fresh containers from their images, links up, main command started."""
        if not self.down:
            raise TestbedError(f"{self.name} is not down")
        self._replace(joined(self.cplan.run_args, self.cplan.holder_name))
        for key, args in self._sidecar_args.items():
            self._remove(self.sidecars.pop(key))
            self.sidecars[key] = start_container(self.client, args, self.name)[0]
        self.namespaces.links_up(self.netns_pid, self._link_state)
        self._link_state = None
        self.down = False
        self._adopt_shell(spawn_shell(self.cname, self.name, self.door))
        self.cmd("unset HISTFILE; stty -echo; set +m")
        self.ready()

    def _replace(self, args: dict[str, Any]) -> None:
        """Remove the service container and start a new one from the same arguments (same name)."""
        self._remove(self.container)
        self.ledger.record("container", self.cname, node=self.name, image=self.dimage, **where(self.cplan))
        self.container, self.cpid = start_container(self.client, args, self.name)

    @staticmethod
    def _remove(box: Any) -> None:
        try:
            box.remove(force=True)
        except Exception as exc:  # already gone
            log.debug("remove %s: %s", getattr(box, "name", box), exc)

    def freeze(self) -> None:
        """The host hangs: every process of its containers frozen; its kernel still answers (cgroup freezer)."""
        for box in self.containers():
            box.pause()

    def thaw(self) -> None:
        """Undo `freeze`."""
        for box in self.containers():
            box.unpause()

    def set_links(self, up: bool) -> None:
        """All the host's interfaces down (isolated) or up again, from outside the host."""
        if up:
            self.namespaces.links_up(self.netns_pid, self._link_state)
            self._link_state = None
        else:
            self._link_state = self.namespaces.links_down(self.netns_pid)

    # -- further service containers ----------------------------------------------------------
    def add_sidecar(self, key: str, image: str, command: Sequence[str] | None = None,
                    environment: dict[str, str] | None = None) -> Any:
        """Start a service container from `image` in this host's network (recorded first); replaces one of that key."""
        self._check_up(f"service {key}")
        self.hold_namespace()  # the sidecar joins the holder: it outlives a restart of the service container
        name = f"{self.cname}-{key}"
        args = dict(image=image, name=name, detach=True, init=True, network_mode=f"container:{self.cplan.holder_name}",
                    cap_add=["NET_ADMIN"], labels={**self.cplan.run_args["labels"], "testbed.role": "sidecar"},
                    environment={"TB_NODE": self.name, **(environment or {})})
        if command:
            args["command"] = list(command)
        if key in self.sidecars:
            self._remove(self.sidecars.pop(key))
        self.ledger.record("container", name, node=self.name, image=image, **where(self.cplan))
        self._sidecar_args[key] = args
        self.sidecars[key] = start_container(self.client, args, self.name)[0]
        return self.sidecars[key]

    def restart_sidecar(self, key: str) -> Any:
        """A fresh container for sidecar `key`, from its image."""
        self._check_up(f"service {key}")
        self._remove(self.sidecars.pop(key))
        self.sidecars[key] = start_container(self.client, self._sidecar_args[key], self.name)[0]
        return self.sidecars[key]

    def update_resources(self, cpu: float | None = None, memory: str | None = None) -> None:
        """Change CPU (cores) and memory limits at run time (`docker update`)."""
        kw: dict[str, int] = {}
        if cpu is not None:
            kw["cpu_period"] = 100_000
            kw["cpu_quota"] = int(cpu * 100_000) if cpu > 0 else -1
        if memory is not None:
            mem = parse_memory(memory)
            kw["mem_limit"] = mem
            kw["memswap_limit"] = mem * 2 if mem else -1
        self.container.update(**kw)

    def terminate(self) -> None:
        """Stop the shell and remove the containers, holder last (once: a second call does nothing)."""
        if self.shell and self.shell.poll() is None:
            self.shell.kill()
        if not self._removed:
            self._removed = True
            for box in [*self.sidecars.values(), self.container, self.holder]:
                if box is not None:
                    self._remove(box)
        self.cleanup()
