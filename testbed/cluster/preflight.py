"""Before anything is created: every server a site is placed on answers over ssh and has the tools needed.

A failure is one SpecError naming the server's place in the topology (`servers.b: ...`), exit code 2.
`server_checks` is also what `testbed doctor --server NAME` shows.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from testbed.cluster.server import Server
from testbed.doctor import Check
from testbed.errors import CommandError, SpecError
from testbed.topology.model import LOCAL_SERVER, TopologySpec

ROOT = Path(__file__).resolve().parents[2]  # where the testbed is installed here (and must be on a server that emulates links)

log = logging.getLogger(__name__)

#: Commands every server must have: links and namespaces, Cluster Edition's node shells, switches.
TOOLS = ("ip", "python3", "mnexec", "ovs-vsctl")
#: Prints each named command that is missing, one a line (run as `sh -c MISSING sh TOOL...`).
MISSING = 'for t; do command -v "$t" >/dev/null 2>&1 || echo "$t"; done'
#: Prints each named image the server's Docker engine does not have, one a line.
MISSING_IMAGES = 'for i; do docker image inspect "$i" >/dev/null 2>&1 || echo "$i"; done'


def tools_needed(topo: TopologySpec, server: str) -> tuple[str, ...]:
    """The commands server `server` needs for the sites placed on it (docker when it has Docker hosts)."""
    docker = any(h.is_docker for s in topo.sites if s.server == server for h in s.hosts)
    return TOOLS + (("docker",) if docker else ())


def images_needed(topo: TopologySpec, server: str) -> tuple[str, ...]:
    """The images server `server`'s engine must have: its Docker hosts' and the namespace holder's."""
    from testbed.emulation.prelaunch import HOLDER_IMAGE

    images = {h.image for s in topo.sites if s.server == server for h in s.hosts if h.is_docker and h.image}
    return tuple(sorted(images | {HOLDER_IMAGE})) if images else ()


def emulates_links(topo: TopologySpec, server: str) -> bool:
    """True when server `server` runs a link emulator: a link with both ends there is emulated
    (a shaped access link of a site there, or a WAN link between two sites there), and so is the
    first end of a WAN link from a site there to one on a third server (neither end here)."""
    here = {s.name for s in topo.sites if s.server == server}
    return any(h.access.shaped for s in topo.sites if s.name in here for h in s.hosts) or \
        any(w.a in here and w.b in here for w in topo.wan) or \
        any(w.a in here for w, _, _ in remote_pairs(topo))


def remote_pairs(topo: TopologySpec) -> list[tuple[object, str, str]]:
    """The WAN links between two other servers (neither end here), with the servers of their ends:
    the tunnel's ssh starts on the first, to the second."""
    where = {s.name: s.server for s in topo.sites}
    return [(w, where[w.a], where[w.b]) for w in topo.wan
            if LOCAL_SERVER not in (where[w.a], where[w.b]) and where[w.a] != where[w.b]]


def has_nics(topo: TopologySpec, server: str) -> bool:
    """True when a host of a site on server `server` has a fail-safe NIC (it runs there)."""
    return any(h.nic is not None for s in topo.sites if s.server == server for h in s.hosts)


def used_servers(topo: TopologySpec) -> list[str]:
    """The names of the servers (not localhost) that sites are placed on, in declaration order."""
    used = {s.server for s in topo.sites}
    return [s.name for s in topo.servers if s.name in used]


def server_checks(server: Server, tools: tuple[str, ...] = TOOLS + ("docker",),
                  images: tuple[str, ...] = (), emulator: bool = False, nics: bool = False) -> list[Check]:
    """Connect, then look for `tools` (and `images` in its engine), then ask kernel and versions; each a Check."""
    try:
        res = server.run(["uname", "-r"], timeout=15)
    except CommandError as exc:
        why = exc.stderr.splitlines()[-1] if exc.stderr else ("timed out" if exc.returncode is None else
                                                              f"ssh exited {exc.returncode}")
        return [Check("ssh", False, f"{server}: {why}", True,
                      "install the client's public key in the server's authorized_keys; open its ssh port")]
    checks = [Check("ssh", True, f"{server}: connects (BatchMode)"), Check("kernel", True, res.stdout.strip(), False)]
    missing = server.run(["sh", "-c", MISSING, "sh", *tools], timeout=15).stdout.split()
    for tool in tools:
        checks.append(Check(tool, tool not in missing, "missing" if tool in missing else "present", True,
                            "apt install iproute2 python3 mininet openvswitch-switch docker.io on the server"))
    if "ovs-vsctl" not in missing:
        ovs = server.run(["ovs-vsctl", "--timeout=5", "show"], check=False, timeout=15)
        checks.append(Check("ovs running", ovs.ok, "answers" if ovs.ok else (ovs.stderr.strip() or "no answer"),
                            True, "start ovsdb-server and ovs-vswitchd on the server"))
    for needed, what, module in ((emulator, "link emulator", "testbed.linkemu"),
                                 (nics, "fail-safe NIC", "testbed.failsafe.nic")):
        if needed:  # the testbed's own program, run there as here: the same Python, the same path
            found = server.run([sys.executable, "-c", f"import {module}"], check=False, timeout=30)
            checks.append(Check(what, found.ok, f"{sys.executable} -m {module} runs" if found.ok else
                                f"{sys.executable} cannot import {module} there", True,
                                f"install the testbed on the server at {ROOT} (scripts/setup.sh), as here"))
    if images and "docker" not in missing:
        engine = server.run(["docker", "version", "--format", "{{.Server.Version}}"], check=False, timeout=30)
        checks.append(Check("docker engine", engine.ok, engine.stdout.strip() if engine.ok else
                            (engine.stderr.strip().splitlines() or ["no answer"])[-1], True,
                            "start dockerd on the server"))
        if engine.ok:
            gone = server.run(["sh", "-c", MISSING_IMAGES, "sh", *images], timeout=30).stdout.split()
            checks.append(Check("images", not gone, "missing " + " ".join(gone) if gone else "present", True,
                                f"docker save {' '.join(gone)} | ssh {server.destination} docker load"))
    return checks


def preflight(topo: TopologySpec, source: str | None = None) -> dict[str, list[Check]]:
    """Check every server sites are placed on; SpecError at `servers.NAME` for the first that fails."""
    found: dict[str, list[Check]] = {}
    for name in used_servers(topo):
        server = Server.of(topo.server(name))
        checks = server_checks(server, tools_needed(topo, name), images_needed(topo, name),
                               emulates_links(topo, name), has_nics(topo, name))
        bad = [c for c in checks if c.required and not c.ok]
        if bad:
            what = "; ".join(f"{c.name}: {c.value}" for c in bad)
            raise SpecError(f"servers.{name}", f"server not usable: {what}", source)
        log.info("server %s ready: %s", server, ", ".join(f"{c.name} {c.value}" for c in checks[1:2]))
        found[name] = checks
    for w, first, second in remote_pairs(topo):
        index = topo.wan.index(w)
        door, other = Server.of(topo.server(first)), Server.of(topo.server(second))
        res = door.run(["ssh", *other.ssh_options(), other.destination, "true"], check=False, timeout=30)
        if not res.ok:
            why = (res.stderr.strip().splitlines() or [f"ssh exited {res.returncode}"])[-1]
            raise SpecError(f"wan[{index}]", f"server {first} cannot log in to server {second} (the tunnel's ssh "
                            f"starts on {first} with {second}'s key and known_hosts as given): {why}", source)
    return found


def servers_of(topo: TopologySpec) -> dict[str, Server]:
    """Every server sites are placed on, localhost included, by name."""
    out = {LOCAL_SERVER: Server()}
    for name in used_servers(topo):
        out[name] = Server.of(topo.server(name))
    return out
