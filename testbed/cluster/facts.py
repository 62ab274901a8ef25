"""What a run's manifest records about placement: each site's server, and each server's kernel, versions and backends.

Every fact is asked through the server's door (this machine's too), once per server and process;
a server that cannot be asked is recorded as such, never guessed.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from testbed.cluster.server import Server
from testbed.errors import TestbedError
from testbed.topology.model import LOCAL_SERVER, TopologySpec

log = logging.getLogger(__name__)

#: One line each: kernel, python, Docker engine, Open vSwitch, OVS datapath types (a missing tool: an empty line).
FACTS = ("uname -r; python3 -c 'import platform; print(platform.python_version())' 2>/dev/null || echo; "
         "docker version --format '{{.Server.Version}}' 2>/dev/null || echo; "
         "ovs-vsctl --version 2>/dev/null | head -n 1 || echo; "
         "ovs-vsctl --timeout=5 get Open_vSwitch . datapath_types 2>/dev/null || echo")
FACT_KEYS = ("kernel", "python", "docker", "ovs", "ovs_datapath_types")


@lru_cache(maxsize=32)
def server_facts(server: Server) -> tuple[tuple[str, str], ...]:
    """(key, value) of FACT_KEYS for `server`, asked through its door; ("error", why) if it cannot be asked."""
    try:
        res = server.run(["sh", "-c", FACTS], timeout=30)
    except TestbedError as exc:
        return (("error", f"cannot ask {server}: {exc}"),)
    lines = res.stdout.splitlines() + [""] * len(FACT_KEYS)
    return tuple(zip(FACT_KEYS, (line.strip() for line in lines)))


def placement(topo: TopologySpec) -> dict[str, str]:
    """Site -> the server it is placed on."""
    return {s.name: s.server for s in topo.sites}


def server_backends(topo: TopologySpec, name: str, run_backends: dict[str, Any]) -> dict[str, str]:
    """What the run uses on server `name`: switch datapath, host kinds, links, the way across to other servers."""
    sites = [s for s in topo.sites if s.server == name]
    kinds = sorted({"docker" if h.is_docker else "namespace" for s in sites for h in s.hosts})
    out = {"ovs_datapath": str(run_backends.get("ovs_datapath", "")), "hosts": ", ".join(kinds) or "none"}
    if name == LOCAL_SERVER:
        out["links"] = str(run_backends.get("link", ""))
    else:
        from testbed.cluster.preflight import emulates_links

        out["links"] = ("veth; links with both ends there through the server's own userspace link emulator"
                        if emulates_links(topo, name) else "veth, unshaped")
        if "docker" in kinds:
            out["docker_engine"] = "the server's own, through a recorded ssh forward of its socket"
        out["controller"] = "this machine's, through a recorded ssh -R forward"
    across = {w.b if w.a in {s.name for s in sites} else w.a for w in topo.wan
              if (topo.site(w.a).server == name) != (topo.site(w.b).server == name)}
    if across:
        out["wan_to_other_servers"] = "ssh tunnel (Tunnel=ethernet) to sites " + ", ".join(sorted(across))
        if name == LOCAL_SERVER:
            out["wan_to_other_servers"] += ", its end here through the userspace link emulator"
        from testbed.cluster.preflight import remote_pairs

        started = sorted(w.b for w, first, _ in remote_pairs(topo) if first == name)
        if started:  # between two other servers: its ssh starts on the first, its end there emulated there
            out["wan_to_other_servers"] += (f"; the tunnels to sites {', '.join(started)} start here, their ends "
                                            "here through the server's own userspace link emulator")
    return out


def placement_section(topo: TopologySpec, runs: list[dict]) -> dict[str, Any]:
    """The manifest's `placement` (site -> server) and `servers` (each used server's door, facts, backends)."""
    backends = runs[0].get("backends", {}) if runs else {}
    servers: dict[str, Any] = {}
    used = [LOCAL_SERVER] + [n for n in dict.fromkeys(s.server for s in topo.sites) if n != LOCAL_SERVER]
    for name in used:
        door = Server() if name == LOCAL_SERVER else Server.of(topo.server(name))
        servers[name] = {"address": door.address or "this machine", **dict(server_facts(door)),
                         "backends": server_backends(topo, name, backends)}
    return {"placement": placement(topo), "servers": servers}
