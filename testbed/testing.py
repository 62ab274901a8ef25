"""Helpers for tests of runs: what of a run is still there after it should be gone."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from testbed import ledger, proc
from testbed.daemon import entered_netns  # noqa: F401 - the tests' import of it


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
    """Processes recorded in the run directory that still run (same PID and start time; none without one)."""
    alive = []
    path = run_dir / "resources.jsonl"
    if not path.exists():
        return alive
    for line in path.read_text().splitlines():
        item = json.loads(line)
        start = item.get("start") if item["kind"] == "process" else None
        if start is not None and ledger.proc_start_time(int(item["name"])) == start:  # None: gone when recorded
            on = f", on {item['server']}" if item.get("server") else ""
            alive.append(f"process {item['name']} ({item.get('what')}{on})")
    return alive


#: Brings topology argv[1] up with run directory argv[2] (link backend argv[3] if given), prints
#: "UP <rid>", then waits to be killed: the owner process of the SIGKILL tests.
OWNER = """
import sys, time
from pathlib import Path
from typing import Any
from testbed.emulation.testbed import Testbed
from testbed.topology.loader import load_topology
extra = {"link_backend": sys.argv[3]} if len(sys.argv) > 3 else {}
tb = Testbed(load_topology(sys.argv[1]), Path(sys.argv[2]), **extra)
tb.start()
print("UP", tb.rid, flush=True)
time.sleep(600)
"""


def start_owner(topology: Path, run_dir: Path, link_backend: str | None = None) -> tuple[Any, str]:
    """A process that owns a run of `topology` (OWNER), once it is up, and the run's id; AssertionError with its stderr."""
    import sys

    err = run_dir.parent / f"{run_dir.name}-owner.err"
    owner = proc.spawn_piped([sys.executable, "-c", OWNER, str(topology), str(run_dir),
                              *([link_backend] if link_backend else [])], stderr=err)
    assert owner.stdout is not None
    line = owner.stdout.readline().decode()
    assert line.startswith("UP "), err.read_text()[-2000:]
    return owner, line.split()[1]


def unrecorded(rid: str, keys: list[str], timeout: float = 10.0) -> list[str]:
    """Processes still naming run `rid`'s nodes or one of `keys` (ssh client keys), once those being ended are gone."""
    marks = (f"mininet:{ledger.prefix(rid)}", f"{ledger.prefix(rid)}-", *keys)
    deadline = time.monotonic() + timeout
    while True:
        rows = proc.run(["ps", "-eo", "pid=,args="]).stdout.splitlines()
        left = [r.strip() for r in rows if any(m in r for m in marks) and "ps -eo" not in r]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)
