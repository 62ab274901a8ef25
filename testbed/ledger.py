"""The record of every resource a run created, written before the resource is, so cleanup finds it."""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

#: Docker label and OVS external-id key that carry the run id.
LABEL = "testbed.run"
#: Where the ledgers of all runs are kept (survives the run's process, and reboots).
STATE_DIR = Path(os.environ.get("TESTBED_STATE_DIR", "/var/lib/testbed"))
#: Where runs keep their sockets and other run-time state (removed with the run).
RUN_ROOT = Path("/run/testbed")
#: "server": how to reach a server (testbed/cluster/server.py); a resource with `server=NAME` lives there.
#: "image": a Docker image the run built, named `tb<rid>/...` and labelled with the run.
KINDS = ("process", "container", "ovs_bridge", "interface", "netns", "qdisc", "file", "server", "image")
_RID = re.compile(r"^[0-9a-f]{4}$")


def valid_run_id(rid: str) -> bool:
    """True when `rid` has the shape of a run id (four lowercase hex digits)."""
    return bool(_RID.match(rid))


def prefix(rid: str) -> str:
    """The name prefix of the run's resources in shared namespaces (bridges, interfaces, netns)."""
    return f"tb{rid}"


def proc_start_time(pid: int) -> int | None:
    """The kernel's start time of process `pid` (to tell it from a later process with the same PID);
    None when there is none, or it has exited and waits to be reaped (a zombie runs nothing)."""
    try:
        return start_in_stat(Path(f"/proc/{pid}/stat").read_text())
    except OSError:
        return None


def start_in_stat(stat: str) -> int | None:
    """The start time in the text of a /proc/PID/stat (read here or on another server); None for a zombie or no text."""
    if ")" not in stat:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


@dataclass(frozen=True)
class Resource:
    """One thing a run made: its kind, its name (or PID) and details needed to remove it."""

    kind: str
    name: str
    extra: dict

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "name": self.name, **self.extra}, sort_keys=True)


class Ledger:
    """Appends the run's resources to its ledger in the state directory and in the run directory."""

    def __init__(self, rid: str, run_dir: Path | None = None, state_dir: Path | None = None) -> None:
        if not valid_run_id(rid):
            raise ValueError(f"bad run id {rid!r}")
        self.rid = rid
        self.state_dir = state_dir or STATE_DIR
        self.path = self.state_dir / "runs" / f"{rid}.jsonl"
        self.run_dir = run_dir
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            header = {"kind": "run", "name": rid, "started": time.time(), "owner": os.getpid(),
                      "owner_start": proc_start_time(os.getpid()),
                      "run_dir": str(run_dir) if run_dir else None}
            self._append(self.path, json.dumps(header))

    @property
    def prefix(self) -> str:
        return prefix(self.rid)

    def record(self, kind: str, name: str, **extra: object) -> Resource:
        """Write down resource `name` of `kind`; call this before creating it."""
        if kind not in KINDS:
            raise ValueError(f"unknown resource kind {kind!r}")
        res = Resource(kind, str(name), dict(extra))
        self._append(self.path, res.to_json())
        if self.run_dir is not None:
            self._append(self.run_dir / "resources.jsonl", res.to_json())
        return res

    def record_process(self, pid: int, what: str) -> Resource:
        """Write down a started process by PID and start time, so a reused PID is never killed."""
        return self.record("process", str(pid), start=proc_start_time(pid), what=what)

    @staticmethod
    def _append(path: Path, line: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())


def new_run_id(state_dir: Path | None = None) -> str:
    """A run id not used by any run whose ledger is still kept."""
    runs = (state_dir or STATE_DIR) / "runs"
    while True:
        rid = secrets.token_hex(2)
        if not (runs / f"{rid}.jsonl").exists():
            return rid


def known_runs(state_dir: Path | None = None) -> list[str]:
    """Run ids with a ledger in the state directory."""
    runs = (state_dir or STATE_DIR) / "runs"
    if not runs.is_dir():
        return []
    return sorted(p.stem for p in runs.glob("*.jsonl") if valid_run_id(p.stem))


def read(rid: str, state_dir: Path | None = None) -> Iterator[Resource]:
    """The resources recorded for run `rid`, in the order they were recorded."""
    path = (state_dir or STATE_DIR) / "runs" / f"{rid}.jsonl"
    if not path.exists():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by SIGKILL
        kind = item.pop("kind", None)
        name = item.pop("name", None)
        if kind in KINDS and name is not None:
            yield Resource(kind, str(name), item)


def header(rid: str, state_dir: Path | None = None) -> dict:
    """The first record of run `rid`: when it started, its owner process, its run directory."""
    path = (state_dir or STATE_DIR) / "runs" / f"{rid}.jsonl"
    try:
        with open(path, encoding="utf-8") as f:
            first = json.loads(f.readline())
    except (OSError, json.JSONDecodeError):
        return {}
    return first if first.get("kind") == "run" else {}


def owner_alive(rid: str, state_dir: Path | None = None) -> bool:
    """True while the process that started run `rid` is still running."""
    head = header(rid, state_dir)
    pid, start = head.get("owner"), head.get("owner_start")
    return bool(pid) and pid != os.getpid() and start is not None and proc_start_time(pid) == start


def forget(rid: str, state_dir: Path | None = None) -> None:
    """Drop the ledger of run `rid` once everything in it is gone."""
    path = (state_dir or STATE_DIR) / "runs" / f"{rid}.jsonl"
    path.unlink(missing_ok=True)
