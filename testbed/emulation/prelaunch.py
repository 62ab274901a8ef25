"""Start a topology's containers and their Mininet shells in parallel, before Mininet's serial steps.

Each Docker host starts as one container, the *service* container from the host's image, with no
network of Docker's (`network_mode=none`): the testbed attaches the host's links to its namespace.
A small *holder* (`<name>-ns`, testbed/base running `sleep`) joins that namespace
(`network_mode=container:<service>`) the first time the host must outlive its service container:
before a crash (the experiment runner makes it right after start-up for a scheduled `kill`) or
beside a further service container. From then on the holder owns the namespace, so the service container can be
killed, restarted or replaced while the host keeps its interfaces, addresses, shaping and NIC.
Making holders only when needed halves the containers a large topology starts and removes.

Creating and starting a container is a few Docker API round trips that the engine can serve
concurrently; done one host at a time inside `Mininet.addHost` it dominated start-up (about 0.5 s
a host on 2 cores). `prelaunch` records every container in the ledger first (in the caller's
thread, so the ledger's order stays the creation order), then starts them from a thread pool, each
with its `docker exec` shell already spawned; `DockerHost` adopts what it is given.

A host placed on another server (`ContainerPlan.server`) is made by that server's engine (an
`Engine` of testbed/cluster/engine.py: the SDK through a forwarded socket) and its shell is
`docker exec` run there through the server's door (`ssh -tt`); this machine's are made as before.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from testbed import proc
from testbed.cluster.server import LOCAL, Server
from testbed.errors import TestbedError
from testbed.ledger import LABEL, Ledger
from testbed.topology.model import LOCAL_SERVER

log = logging.getLogger(__name__)

#: Threads creating containers at once: the engine does the work, so more threads than cores help.
WORKERS = 8


#: The image of network-namespace holders (always built by `testbed images build`).
HOLDER_IMAGE = "testbed/base"


@dataclass(frozen=True)
class ContainerPlan:
    """One Docker host's containers as data: the service's `containers.run` arguments and its holder's (made when needed)."""

    node: str
    cname: str
    image: str
    run_args: dict[str, Any] = field(hash=False)
    holder_args: dict[str, Any] = field(hash=False, default_factory=dict)
    server: str = LOCAL_SERVER  # the server whose engine makes the containers

    @property
    def holder_name(self) -> str:
        """The container that owns the host's network namespace."""
        return str(self.holder_args["name"])


@dataclass
class ShellProcess:
    """A `docker exec -it … bash` started on a fresh pty: what `DockerHost.startShell` would spawn."""

    master: int
    slave: int
    popen: Any  # subprocess.Popen, from proc.spawn_pty


@dataclass
class Launched:
    """A started Docker host: its service container, whose init PID holds the namespace (no holder yet), its shell."""

    container: Any  # docker.models.containers.Container
    pid: int
    shell: ShellProcess | None


def shell_argv(cname: str, node: str) -> list[str]:
    """The command of a Mininet shell inside container `cname` (prompt is DEL, as Mininet expects)."""
    return ["docker", "exec", "-it", "--env", "PS1=" + chr(127), cname,
            "bash", "--norc", "--noediting", "-is", "mininet:" + node]


def spawn_shell(cname: str, node: str, door: Server = LOCAL) -> ShellProcess:
    """Spawn the shell of `node` on a new pty (on `door`'s server: over `ssh -tt`); the caller reads its prompt later."""
    master, slave, popen = proc.spawn_pty(door.argv(shell_argv(cname, node), tty=True))
    return ShellProcess(master, slave, popen)


def close_shell(shell: ShellProcess) -> None:
    """Kill a spawned shell that no host adopted, and close its pty."""
    proc.stop(shell.popen, timeout=10)
    for fd in (shell.master, shell.slave):
        try:
            os.close(fd)
        except OSError:
            pass


def holder_name(cname: str) -> str:
    """The holder container's name for service container `cname`."""
    return f"{cname}-ns"


def holder_args(name: str, cname: str, rid: str, image: str = HOLDER_IMAGE) -> dict[str, Any]:
    """`containers.run` keyword arguments of a host's namespace holder: in service `cname`'s network, idle, no log, labelled.

    No log driver: `sleep` prints nothing, and the engine's json-file logger costs ~0.1 s of the
    ~0.5 s a holder takes to create and start here (measured one at a time).
    """
    return dict(image=image, name=holder_name(cname), detach=True, init=True,
                entrypoint=["sleep", "infinity"], command=[], network_mode=f"container:{cname}",
                log_config={"type": "none"}, labels={LABEL: rid, "testbed.node": name, "testbed.role": "netns"})


def run_args(name: str, cname: str, rid: str, image: str, entry: Sequence[str], command: Sequence[str],
             cpu: float | None, memory: int | None, environment: dict[str, str],
             volumes: Sequence[str]) -> dict[str, Any]:
    """`containers.run` keyword arguments of a service container: no network of Docker's, NET_ADMIN, labelled."""
    return dict(image=image, name=cname, hostname=name, detach=True, init=True, network_mode="none",
                entrypoint=list(entry), command=list(command), cap_add=["NET_ADMIN"],
                labels={LABEL: rid, "testbed.node": name, "testbed.role": "service"},
                environment={"TB_NODE": name, **environment},
                volumes=list(volumes), cpu_period=100_000 if cpu else None,
                cpu_quota=int(cpu * 100_000) if cpu else None, mem_limit=memory)


def start_container(client: Any, args: dict[str, Any], node: str) -> tuple[Any, int]:
    """Create and start one container; (container, init PID); TestbedError naming the node on failure."""
    try:
        container = client.containers.run(**args)
        container.reload()
    except Exception as exc:
        raise TestbedError(f"{node}: cannot start a container from {args['image']}: {exc}") from None
    return container, int(container.attrs["State"]["Pid"])


def joined(args: dict[str, Any], holder: str) -> dict[str, Any]:
    """Container arguments `args` moved into holder `holder`'s network (whose hostname it then shares)."""
    out = {k: v for k, v in args.items() if k != "hostname"}
    out["network_mode"] = f"container:{holder}"
    return out


def launch_one(client: Any, plan: ContainerPlan, with_shell: bool = True, door: Server = LOCAL) -> Launched:
    """Start one planned host: its service container, with its own namespace (and its shell)."""
    container, pid = start_container(client, plan.run_args, plan.node)
    shell = spawn_shell(plan.cname, plan.node, door) if with_shell else None
    return Launched(container, pid, shell)


def where(plan: ContainerPlan) -> dict[str, str]:
    """The ledger's `server=` of a plan's resources ({} on this machine: cleanup finds them here)."""
    return {} if plan.server == LOCAL_SERVER else {"server": plan.server}


def record(ledger: Ledger, plan: ContainerPlan) -> None:
    """Write a planned host's service container to the ledger (before it exists), with the server it is on."""
    ledger.record("container", plan.cname, node=plan.node, image=plan.image, **where(plan))


def record_holder(ledger: Ledger, plan: ContainerPlan) -> None:
    """Write a host's namespace holder to the ledger (before it exists)."""
    ledger.record("container", plan.holder_name, node=plan.node, image=plan.holder_args["image"], **where(plan))


def prelaunch(client: Any, plans: Sequence[ContainerPlan], ledger: Ledger, workers: int = WORKERS,
              engines: Mapping[str, Any] | None = None) -> dict[str, Launched]:
    """Record, then start in parallel, every planned container; node name -> Launched.

    `client` makes this machine's; a plan on another server is made by `engines[plan.server]`
    (testbed/cluster/engine.Engine: `client` and `door`). On any failure the shells already
    spawned are closed and the first error is raised; the containers themselves are in the
    ledger, so the run's cleanup removes them.
    """
    for plan in plans:
        if plan.server != LOCAL_SERVER and plan.server not in (engines or {}):
            raise TestbedError(f"{plan.node}: no Docker engine for server {plan.server}")
    for plan in plans:
        record(ledger, plan)
    if not plans:
        return {}
    launched: dict[str, Launched] = {}
    errors: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=min(workers, len(plans)), thread_name_prefix="prelaunch") as pool:
        futures = {}
        for plan in plans:
            engine = (engines or {}).get(plan.server)
            args = (engine.client, plan, True, engine.door) if engine is not None else (client, plan)
            futures[pool.submit(launch_one, *args)] = plan.node
        for future, node in futures.items():
            try:
                launched[node] = future.result()
            except BaseException as exc:  # noqa: BLE001 - collected, first one re-raised below
                errors.append(exc)
    if errors:
        for item in launched.values():
            if item.shell is not None:
                close_shell(item.shell)
        raise errors[0]
    log.info("%d containers started in parallel", len(launched))
    return launched
