"""Start a topology's containers and their Mininet shells in parallel, before Mininet's serial steps.

Creating and starting a container is a few Docker API round trips that the engine can serve
concurrently; done one host at a time inside `Mininet.addHost` it dominated start-up (about 0.5 s
a host on 2 cores). `prelaunch` records every container in the ledger first (in the caller's
thread, so the ledger's order stays the creation order), then starts them from a thread pool, each
with its `docker exec` shell already spawned; `DockerHost` adopts what it is given.
"""

from __future__ import annotations

import logging
import os
import pty
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

from testbed.errors import TestbedError
from testbed.ledger import LABEL, Ledger

log = logging.getLogger(__name__)

#: Threads creating containers at once: the engine does the work, so more threads than cores help.
WORKERS = 8


@dataclass(frozen=True)
class ContainerPlan:
    """What one Docker host's container is: its node name, container name and `containers.run` arguments."""

    node: str
    cname: str
    image: str
    run_args: dict[str, Any] = field(hash=False)


@dataclass
class ShellProcess:
    """A `docker exec -it … bash` started on a fresh pty: what `DockerHost.startShell` would spawn."""

    master: int
    slave: int
    popen: subprocess.Popen


@dataclass
class Launched:
    """A started container, its init process's PID, and the shell spawned into it."""

    container: Any  # docker.models.containers.Container
    pid: int
    shell: ShellProcess | None


def shell_argv(cname: str, node: str) -> list[str]:
    """The command of a Mininet shell inside container `cname` (prompt is DEL, as Mininet expects)."""
    return ["docker", "exec", "-it", "--env", "PS1=" + chr(127), cname,
            "bash", "--norc", "--noediting", "-is", "mininet:" + node]


def spawn_shell(cname: str, node: str) -> ShellProcess:
    """Spawn the shell of `node` on a new pty; the caller reads its prompt later."""
    master, slave = pty.openpty()
    popen = subprocess.Popen(shell_argv(cname, node), stdin=slave, stdout=slave, stderr=slave,
                             close_fds=True, start_new_session=True)
    return ShellProcess(master, slave, popen)


def close_shell(shell: ShellProcess) -> None:
    """Kill a spawned shell that no host adopted, and close its pty."""
    if shell.popen.poll() is None:
        shell.popen.kill()
    shell.popen.wait(timeout=10)
    for fd in (shell.master, shell.slave):
        try:
            os.close(fd)
        except OSError:
            pass


def run_args(name: str, cname: str, rid: str, image: str, entry: Sequence[str], command: Sequence[str],
             cpu: float | None, memory: int | None, environment: dict[str, str],
             volumes: Sequence[str]) -> dict[str, Any]:
    """`containers.run` keyword arguments of a testbed container: no network, NET_ADMIN, labelled."""
    return dict(image=image, name=cname, hostname=name, detach=True, init=True,
                entrypoint=list(entry), command=list(command), network_mode="none", cap_add=["NET_ADMIN"],
                labels={LABEL: rid, "testbed.node": name}, environment={"TB_NODE": name, **environment},
                volumes=list(volumes), cpu_period=100_000 if cpu else None,
                cpu_quota=int(cpu * 100_000) if cpu else None, mem_limit=memory)


def launch_one(client: Any, plan: ContainerPlan, with_shell: bool = True) -> Launched:
    """Create and start one planned container (and its shell); TestbedError naming the node on failure."""
    try:
        container = client.containers.run(**plan.run_args)
        container.reload()
    except Exception as exc:
        raise TestbedError(f"{plan.node}: cannot start a container from {plan.image}: {exc}") from None
    pid = int(container.attrs["State"]["Pid"])
    return Launched(container, pid, spawn_shell(plan.cname, plan.node) if with_shell else None)


def prelaunch(client: Any, plans: Sequence[ContainerPlan], ledger: Ledger,
              workers: int = WORKERS) -> dict[str, Launched]:
    """Record, then start in parallel, every planned container; node name -> Launched.

    On any failure the shells already spawned are closed and the first error is raised; the
    containers themselves are in the ledger, so the run's cleanup removes them.
    """
    for plan in plans:
        ledger.record("container", plan.cname, node=plan.node, image=plan.image)
    if not plans:
        return {}
    launched: dict[str, Launched] = {}
    errors: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=min(workers, len(plans)), thread_name_prefix="prelaunch") as pool:
        futures = {pool.submit(launch_one, client, plan): plan.node for plan in plans}
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
