"""Helpers for tests of runs: what of a run is still there after it should be gone."""

from __future__ import annotations

import json
import os
from pathlib import Path

from testbed import ledger, proc


def leftovers(rid: str) -> list[str]:
    """What of run `rid` still exists: containers, bridges, interfaces, namespaces (CommandError if docker or OVS fail)."""
    pre = ledger.prefix(rid)
    left: list[str] = []
    if proc.which("docker"):
        out = proc.run(["docker", "ps", "-aq", "--filter", f"label={ledger.LABEL}={rid}"]).stdout.split()
        left += [f"container {c}" for c in out]
    if proc.which("ovs-vsctl"):
        brs = proc.run(["ovs-vsctl", "list-br"]).stdout.split()
        left += [f"bridge {b}" for b in brs if b.startswith(pre)]
    left += [f"interface {i}" for i in os.listdir("/sys/class/net") if i.startswith(pre)]
    if os.path.isdir("/run/netns"):
        left += [f"netns {n}" for n in os.listdir("/run/netns") if n.startswith(pre)]
    return left


def live_processes(run_dir: Path) -> list[str]:
    """Processes recorded in the run directory that still run (same PID and start time)."""
    alive = []
    path = run_dir / "resources.jsonl"
    if not path.exists():
        return alive
    for line in path.read_text().splitlines():
        item = json.loads(line)
        if item["kind"] == "process" and ledger.proc_start_time(int(item["name"])) == item.get("start"):
            alive.append(f"process {item['name']} ({item.get('what')})")
    return alive


def entered_netns(pid: int, netns: str, timeout: float = 5.0) -> int:
    """Wait until process `pid` (started with `ip netns exec NETNS`) is inside `netns`; return pid."""
    import time

    target = os.stat(f"/run/netns/{netns}").st_ino
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == target:
                return pid
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"process {pid} never entered network namespace {netns}")
