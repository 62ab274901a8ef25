"""Removes exactly what the testbed created: from the ledgers, Docker labels and run-id prefixes."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from testbed import ledger, proc
from testbed.ledger import LABEL, RUN_ROOT, Resource

log = logging.getLogger(__name__)


@dataclass
class Cleanup:
    """What one cleanup removed, and what it could not remove (with why)."""

    removed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _kill(pid: int, start: int | None, out: Cleanup) -> None:
    """Stop process `pid` if it is still the one recorded (same start time): SIGTERM, SIGKILL after 2 s,
    then wait until it is gone (the same script `testbed.cluster.cleanup` runs on other servers)."""
    from testbed.cluster.cleanup import KILL

    if start is None or ledger.proc_start_time(pid) != start:
        return
    res = proc.run([sys.executable, "-c", KILL, str(pid), str(start)], timeout=20, check=False)
    if "killed" in res.stdout:
        out.removed.append(f"process {pid}")
    elif "survived" in res.stdout:
        out.failed.append(f"process {pid}: survived SIGKILL")


def _docker():
    """A Docker client, or None when no engine answers (then there are no containers to remove)."""
    try:
        import docker

        return docker.from_env(timeout=30)
    except Exception:
        return None


def labelled_runs() -> set[str]:
    """Run ids found on Docker containers, images and OVS bridges, even when their ledger is lost."""
    rids: set[str] = set()
    client = _docker()
    if client is not None:
        for c in client.containers.list(all=True, filters={"label": LABEL}):
            rids.add(c.labels.get(LABEL, ""))
        for img in client.images.list(filters={"label": LABEL}):
            rids.add((img.labels or {}).get(LABEL, ""))
    res = proc.run(["ovs-vsctl", "--timeout=5", "--format=csv", "--no-headings", "--columns=external_ids",
                    "list", "bridge"], check=False)
    for line in res.stdout.splitlines():
        for item in line.strip('"{}').split(","):
            key, _, val = item.strip().partition("=")
            if key.strip('"') == LABEL:
                rids.add(val.strip('"'))
    return {r for r in rids if ledger.valid_run_id(r)}


def _containers(rid: str, named: set[str], out: Cleanup) -> None:
    client = _docker()
    if client is None:
        return
    found = {c.id: c for c in client.containers.list(all=True, filters={"label": f"{LABEL}={rid}"})}
    for name in named:
        try:
            c = client.containers.get(name)
        except Exception:
            continue
        if c.labels.get(LABEL) == rid:  # a recorded name now used by someone else is left alone
            found[c.id] = c
    for c in found.values():
        try:
            c.remove(force=True)
            out.removed.append(f"container {c.name}")
        except Exception as exc:
            out.failed.append(f"container {c.name}: {exc}")


def images_to_remove(rid: str, images: list[tuple[list[str], dict]]) -> list[str]:
    """Of `images` (tags, labels), the tags to remove: named `tb<rid>/...` and labelled with run `rid`, no other."""
    pre = ledger.prefix(rid) + "/"
    return sorted({t for tags, labels in images if (labels or {}).get(LABEL) == rid
                   for t in tags if t.startswith(pre)})


def _images(rid: str, named: set[str], out: Cleanup) -> None:
    """Remove the run's images (after its containers, which may be using them)."""
    client = _docker()
    if client is None:
        return
    try:
        found = [(img.tags, img.labels) for img in client.images.list(filters={"label": f"{LABEL}={rid}"})]
        for name in named:
            try:
                img = client.images.get(name)
            except Exception:
                continue
            found.append((img.tags, img.labels))
    except Exception as exc:
        out.failed.append(f"images of run {rid}: {exc}")
        return
    for tag in images_to_remove(rid, found):
        try:
            client.images.remove(tag, force=True)
            out.removed.append(f"image {tag}")
        except Exception as exc:
            if "No such image" not in str(exc):
                out.failed.append(f"image {tag}: {exc}")


def _bridges(rid: str, named: set[str], out: Cleanup) -> None:
    res = proc.run(["ovs-vsctl", "--timeout=5", "list-br"], check=False)
    if not res.ok:
        return
    pre = ledger.prefix(rid)
    for br in res.stdout.split():
        if br in named or br.startswith(pre):
            done = proc.run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", br], check=False)
            (out.removed if done.ok else out.failed).append(f"ovs bridge {br}")


def _interfaces(rid: str, named: set[str], out: Cleanup) -> None:
    pre = ledger.prefix(rid)
    for name in sorted(os.listdir("/sys/class/net")):
        if name in named or name.startswith(pre):
            done = proc.run(["ip", "link", "del", name], check=False)
            if done.ok:
                out.removed.append(f"interface {name}")


def _namespaces(rid: str, named: set[str], out: Cleanup) -> None:
    pre = ledger.prefix(rid)
    for ns in sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []:
        if ns in named or ns.startswith(pre):
            done = proc.run(["ip", "netns", "del", ns], check=False)
            (out.removed if done.ok else out.failed).append(f"netns {ns}")


def _files(resources: list[Resource], rid: str, out: Cleanup) -> None:
    for res in resources:
        if res.kind == "file":
            path = Path(res.name)
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            out.removed.append(f"file {path}")
    run_state = RUN_ROOT / rid
    if run_state.exists():
        shutil.rmtree(run_state, ignore_errors=True)
        out.removed.append(f"file {run_state}")


def clean_run(rid: str, out: Cleanup | None = None) -> Cleanup:
    """Remove every resource of run `rid`, in an order that works after a SIGKILL mid-run."""
    out = out or Cleanup()
    resources = list(ledger.read(rid))
    if any(r.kind == "server" for r in resources):  # other servers first: the way to them may be ours
        from testbed.cluster.cleanup import clean_server, split

        resources, remote, servers = split(resources)
        for name, items in remote.items():
            clean_server(rid, servers[name], items, out.removed, out.failed)
    named = {kind: {r.name for r in resources if r.kind == kind} for kind in ledger.KINDS}
    for res in reversed(resources):
        if res.kind == "process" and res.name.isdigit():
            _kill(int(res.name), res.extra.get("start"), out)
    _containers(rid, named["container"], out)
    _images(rid, named["image"], out)
    _bridges(rid, named["ovs_bridge"], out)
    _namespaces(rid, named["netns"], out)
    _interfaces(rid, named["interface"], out)
    _files(resources, rid, out)
    if not out.failed:
        ledger.forget(rid)
    return out


def clean(rid: str | None = None, force: bool = False) -> Cleanup:
    """Clean run `rid`, or every run the testbed knows of whose owner process is no longer running."""
    out = Cleanup()
    rids = [rid] if rid else sorted(set(ledger.known_runs()) | labelled_runs())
    for r in rids:
        if not force and ledger.owner_alive(r):
            out.skipped.append(f"run {r} (its process {ledger.header(r).get('owner')} is still running;"
                               f" use --run {r} --force)")
            continue
        clean_run(r, out)
    return out
