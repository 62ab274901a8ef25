"""Removes a run's resources on its other servers, through the command door, from the run's ledger.

Only what the ledger names or what carries the run's id (the `testbed.run` label, the `tb<id>`
prefix) is touched; a process is killed only while its PID still has the recorded start time.
Never Cluster Edition's own cleanup on each server, which kills by name.
"""

from __future__ import annotations

import logging

from testbed import ledger
from testbed.cluster.server import Server
from testbed.errors import CommandError
from testbed.ledger import LABEL, Resource

log = logging.getLogger(__name__)

#: Kills PID (argv[1]) if its start time is argv[2] (TERM, then KILL after 2 s); prints "killed" if it did.
KILL = r"""
import os, signal, sys, time
def start(pid):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if f[0] in ("Z", "X") else f[19]  # as testbed.ledger.proc_start_time: a zombie is gone
def gone(pid, want, tries):
    for _ in range(tries):
        if start(pid) != want:
            return True
        time.sleep(0.05)
    return False
pid, want = int(sys.argv[1]), sys.argv[2]
now = start(pid)
if now is not None and now != want:
    print(f"not ours: started at {now}, recorded {want}")
if now == want:
    try:
        os.kill(pid, signal.SIGTERM)
        if not gone(pid, want, 40):
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    print("killed" if gone(pid, want, 100) else "survived SIGKILL")
"""


def split(resources: list[Resource]) -> tuple[list[Resource], dict[str, list[Resource]], dict[str, Server]]:
    """(resources on this machine, resources by other server, those servers) of a ledger's records."""
    servers = {r.name: Server.from_record({**r.extra, "name": r.name}) for r in resources if r.kind == "server"}
    local: list[Resource] = []
    remote: dict[str, list[Resource]] = {name: [] for name in servers if not servers[name].local}
    for r in resources:
        where = r.extra.get("server")
        if r.kind == "server":
            continue
        if where in remote:
            remote[where].append(r)
        else:
            local.append(r)
    return local, remote, servers


def _names(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def clean_server(rid: str, server: Server, resources: list[Resource], removed: list[str], failed: list[str]) -> None:
    """Remove run `rid`'s processes, containers, bridges, namespaces and interfaces on `server`."""
    pre = ledger.prefix(rid)
    named = {kind: {r.name for r in resources if r.kind == kind} for kind in ledger.KINDS}
    where = f"on {server.name}"
    try:
        server.run(["true"], timeout=15)
    except CommandError as exc:
        failed.append(f"server {server}: cannot reach it to clean run {rid}: {exc.stderr or exc}")
        return
    for r in reversed(resources):
        if r.kind == "process" and r.name.isdigit() and r.extra.get("start") is not None:
            res = server.run(["python3", "-c", KILL, r.name, str(r.extra["start"])], check=False)
            if "killed" in res.stdout:
                removed.append(f"process {r.name} {where}")
            elif "survived" in res.stdout or not res.ok:
                failed.append(f"process {r.name} {where}: {res.stdout.strip() or res.stderr.strip()[-200:]}")
            else:  # gone already, or its PID is another process's now
                log.info("process %s %s (%s): %s", r.name, where, r.extra.get("what"),
                         res.stdout.strip() or "already gone")
    ids = server.run(["docker", "ps", "-aq", "--filter", f"label={LABEL}={rid}"], check=False)
    for cid in ids.stdout.split() if ids.ok else []:
        done = server.run(["docker", "rm", "-f", cid], check=False, timeout=60)
        (removed if done.ok else failed).append(f"container {cid} {where}")
    bridges = server.run(["ovs-vsctl", "--timeout=5", "list-br"], check=False)
    for br in bridges.stdout.split() if bridges.ok else []:
        if br in named["ovs_bridge"] or br.startswith(pre):
            done = server.run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", br], check=False)
            (removed if done.ok else failed).append(f"ovs bridge {br} {where}")
    spaces = server.run(["ip", "netns", "list"], check=False)
    for ns in _names(spaces.stdout) if spaces.ok else []:
        if ns in named["netns"] or ns.startswith(pre):
            done = server.run(["ip", "netns", "del", ns], check=False)
            (removed if done.ok else failed).append(f"netns {ns} {where}")
    links = server.run(["ip", "-o", "link", "show"], check=False)
    for line in links.stdout.splitlines() if links.ok else []:
        name = line.split(":")[1].strip().split("@")[0] if line.count(":") >= 2 else ""
        if name and (name in named["interface"] or name.startswith(pre)):
            if server.run(["ip", "link", "del", name], check=False).ok:
                removed.append(f"interface {name} {where}")
    for r in resources:
        if r.kind == "file" and r.name.startswith("/"):
            server.run(["rm", "-rf", "--", r.name], check=False)
            removed.append(f"file {r.name} {where}")
