"""A Mininet host whose namespace is a Docker container (Containernet-style, on the installed Mininet)."""

from __future__ import annotations

import logging
import os
import select
import subprocess
import time
from typing import Any, Sequence

from mininet.node import Host

from testbed.emulation.plainhost import tolerant_decoder
from testbed.errors import TestbedError
from testbed.emulation.prelaunch import ContainerPlan, Launched, launch_one, run_args, spawn_shell
from testbed.ledger import Ledger

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


def ready_command(ports: Sequence[str] = (), wait_s: float = READY_WAIT_S) -> str:
    """Shell command that lets the main command start, then waits (at most `wait_s`) until it
    listens on each of `ports` (Docker's "7000/udp" notation; skipped where `ss` is missing)."""
    if not ports:
        return READY_CMD
    checks = " && ".join(
        f"ss -Hln{'u' if p.endswith('/udp') else 't'} 'sport = :{p.split('/')[0]}' | grep -q ." for p in ports)
    tries = max(1, int(wait_s / 0.02))
    return (f"{READY_CMD}; if command -v ss >/dev/null; then i=0; while [ $i -lt {tries} ]; do "
            f"{checks} && break; sleep 0.02; i=$((i+1)); done; fi")


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
    """A host that is a container: `network_mode=none`, NET_ADMIN, labelled with the run id.

    Mininet talks to it through a shell started with `docker exec`, so `cmd()`, `popen()` and the
    Mininet CLI work as on any host, and everything it runs is inside the container's cgroup.
    """

    def __init__(self, name: str, dimage: str, ledger: Ledger, cpu: float | None = None,
                 memory: str | None = None, environment: dict[str, str] | None = None,
                 volumes: Sequence[str] = (), dcmd: Sequence[str] | None = None,
                 launched: Launched | None = None, client: Any = None, ready_ports: Sequence[str] = (),
                 **params: Any) -> None:
        self.dimage = dimage
        self.ready_ports = tuple(ready_ports)  # ready() waits until the main command listens on these
        self.ledger = ledger
        self.cname = container_name(ledger, name)
        self.dcmd = list(dcmd) if dcmd is not None else None
        self.client = client or docker_client()
        self._preshell = launched.shell if launched is not None else None
        self._removed = False
        if launched is None:  # not prelaunched: create it here, recorded first
            plan = self.plan(name, dimage, ledger, self.client, cpu, memory, environment, volumes, dcmd)
            ledger.record("container", plan.cname, node=name, image=dimage)
            launched = launch_one(self.client, plan, with_shell=False)
        self.container = launched.container
        self.cpid = launched.pid
        super().__init__(name, **params)

    @staticmethod
    def plan(name: str, dimage: str, ledger: Ledger, client: Any, cpu: float | None = None,
             memory: str | None = None, environment: dict[str, str] | None = None,
             volumes: Sequence[str] = (), dcmd: Sequence[str] | None = None) -> ContainerPlan:
        """The container Docker host `name` runs, as data (for `prelaunch`, or made here)."""
        cname = container_name(ledger, name)
        command = list(dcmd) if dcmd is not None else image_command(client, dimage)
        args = run_args(name, cname, ledger.rid, dimage, ["/bin/sh", "-c", ENTRY, "sh"], command, cpu,
                        parse_memory(memory), dict(environment or {}), volumes)
        return ContainerPlan(name, cname, dimage, args)

    def _main_command(self) -> list[str]:
        """The service the container runs once its network is up: `command`, else the image's CMD."""
        return self.dcmd if self.dcmd is not None else image_command(self.client, self.dimage)

    def startShell(self, mnopts: Any = None) -> None:
        """Start the Mininet shell inside the container; `pid` is the container's (for netns moves)."""
        if self.shell:
            return
        pre, self._preshell = self._preshell, None
        if pre is None:  # not prelaunched
            pre = spawn_shell(self.cname, self.name)
        self.master, self.slave, self.shell = pre.master, pre.slave, pre.popen
        self.stdin = os.fdopen(self.master, "r")
        self.stdout = self.stdin
        self.pid = self.cpid
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
        self.decoder = tolerant_decoder()
        while True:
            data = self.read(1024)
            if data and data[-1] == chr(127):
                break
            self.pollOut.poll(1000)
        self.waiting = False
        self.cmd("unset HISTFILE; stty -echo; set +m")

    def cmd(self, *args: Any, **kwargs: Any) -> str:
        """Mininet's cmd; a host whose container was killed has no shell, so its commands are no-ops."""
        if self.shell is None or self.shell.poll() is not None:
            log.debug("%s: shell gone (container killed?): %s not run", self.name, args)
            return ""
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
        """True while the container runs (not killed, not paused)."""
        try:
            self.container.reload()
        except Exception:
            return False
        return self.container.status == "running"

    def popen(self, *args: Any, **kwargs: Any) -> subprocess.Popen:
        """A process inside the container (`docker exec -i`), like Node.popen in a namespace."""
        kwargs.setdefault("mncmd", ["docker", "exec", "-i", self.cname])
        return super().popen(*args, **kwargs)

    @property
    def ready_command(self) -> str:
        """The shell command `ready` runs in the container."""
        return ready_command(self.ready_ports)

    def ready(self) -> None:
        """Let the container's main command start (its interfaces are configured now); wait for its ports."""
        if self.shell is not None and self.shell.poll() is None:
            self.cmd(self.ready_command)  # through the open shell: no Docker API round trip
        else:
            self.container.exec_run(["sh", "-c", self.ready_command])

    def start_service(self) -> None:
        """(Re)start the main command in the background, as the entry script does."""
        main = self._main_command()
        if not main:
            return
        script = '"$@" >>/run/testbed/main.log 2>&1 & echo $! >/run/testbed/main.pid'
        self.container.exec_run(["sh", "-c", script, "sh", *main], detach=False)

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
        """Stop the shell and remove the container (once: a second call does nothing)."""
        if self.shell and self.shell.poll() is None:
            self.shell.kill()
        if not self._removed:
            self._removed = True
            try:
                self.container.remove(force=True)
            except Exception as exc:  # already gone (killed by a fault, or by clean)
                log.debug("%s: remove: %s", self.name, exc)
        self.cleanup()
