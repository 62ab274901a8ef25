"""The replica manager's thin runtime part: carries out its actions on a running Testbed, timed and logged.

Replicas share the service's address (anycast), so for copying state each replica host also gets
its migration address (`testbed.migration.transfer`: from the top of the subnet, in its
namespace); a copy is the state agent (`transfer.copy_dir`) run in both hosts' network
namespaces, the service's `state_dir` read from and written into the replicas' file systems
(/proc/PID/root), so the bytes cross the emulated network between them (WAN links and their shaping). Steers go
through the controller's northbound socket (make-before-break). Per migration mode:

- proactive: every replica runs; the primary's state is copied to the others every period (a
  background thread); when the followed user moves, the replica at its new site is synced once
  more and the traffic steered to it;
- reactive: only the primary runs; on a move, the destination instance is started, the old one
  frozen and its state copied, the traffic steered, the old instance stopped (Farris et al.'s four
  steps, each timed; the freeze keeps the moved state final, so the user sees the downtime);
- off: nothing follows the user (the baseline without mobility support).

In every mode a lost primary (its service fails its readiness check three times in a row,
checked every 100 ms) is replaced by the backup. Handovers go to `handovers.jsonl`, syncs to
`syncs.jsonl` in the testbed's run directory, and every role change and sync to `event`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from testbed import proc
from testbed.experiment import services as services_mod
from testbed.experiment.spec import ServiceRun
from testbed.migration import transfer
from testbed.replication.manager import Action, ReplicaManager
from testbed.replication.spec import ReplicaSetSpec

log = logging.getLogger(__name__)
SYNC_PORT = 47700
HANDOVERS, SYNCS = "handovers.jsonl", "syncs.jsonl"
TICK_S, LOST_AFTER = 0.1, 3
Event = Callable[[str, str, str], None]  # (action, target, detail)


def _append(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


class ReplicaRuntime:
    """One replicated service on a running Testbed."""

    def __init__(self, tb: Any, rset: ReplicaSetSpec, services: Sequence[ServiceRun], mode: str,
                 event: Event = lambda action, target, detail: None) -> None:
        self.tb, self.rset, self.mode, self.event = tb, rset, mode, event
        self.hosts = [h for h, _ in rset.replicas]
        self.runs = {s.host: s for s in services if s.name == rset.name and s.host in self.hosts}
        period = rset.period_s if mode == "proactive" else None
        self.manager = ReplicaManager(rset.name, dict(rset.replicas), {h: tb.site_of(h) for h in self.hosts},
                                      period, now=time.monotonic())
        self.lock = threading.Lock()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._misses = 0

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Migration addresses, the address steered to the primary, the others stopped (reactive), the watcher."""
        for host in self.hosts:
            transfer.ensure_address(self.tb, host)
        self.tb.steer(self.rset.ip, self.manager.primary, mode="make-before-break")
        for host, role in self.rset.replicas:
            if self.mode == "reactive" and host != self.manager.primary:
                services_mod.stop(self.tb, self.runs[host])
                role += " (stopped: reactive)"
            self.event("role", host, role)
        self._thread = threading.Thread(target=self._watch, name=f"replicas-{self.rset.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the watcher (the Testbed removes everything else)."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- what triggers a change ---------------------------------------------------------------
    def on_move(self, device: str, site: str) -> dict | None:
        """The followed user moved to `site`: hand the service over to the replica there (per mode)."""
        if self.mode == "off" or device != self.rset.follow:
            return None
        with self.lock:
            old = self.manager.primary
            t0 = time.time()
            if self.mode == "reactive":
                here = [h for h in self.hosts if self.manager.sites[h] == site and self.manager.roles[h] != "lost"]
                if not here or here[0] == old:
                    return None
                actions = self.manager.switch_to(here[0], time.monotonic(), reason=f"{device} moved to {site}")
                phases = self._migrate(old, here[0], actions)
            else:
                actions = self.manager.on_move(device, site, time.monotonic())
                if not actions:
                    return None
                phases = self._carry_out(actions)
            record = {"service": self.rset.name, "device": device, "site": site, "mode": self.mode, "from": old,
                      "to": self.manager.primary, "started": t0, "ended": time.time(), **phases}
        _append(Path(self.tb.run_dir) / HANDOVERS, record)
        self.event("handover", self.manager.primary, f"{self.mode}: {old} -> {record['to']} "
                   + ", ".join(f"{k} {v:.0f} ms" for k, v in record["phases_ms"].items()))
        return record

    def _watch(self) -> None:
        """Periodic syncs and primary-loss detection, until stopped."""
        while not self._halt.wait(TICK_S):
            with self.lock:
                try:
                    self._carry_out(self.manager.due(time.monotonic()))
                    self._check_primary()
                except Exception as exc:  # a failed sync or probe is logged; the run goes on
                    log.warning("replicas of %s: %s", self.rset.name, exc)

    def _check_primary(self) -> None:
        primary = self.manager.primary
        try:
            ready = services_mod.ready_once(self.tb, services_mod.resolved(self.tb, self.runs[primary]))
        except Exception:  # a crashed host cannot even be asked
            ready = False
        if ready:
            self._misses = 0
            return
        self._misses += 1
        if self._misses >= LOST_AFTER:
            self._misses = 0
            self.event("lost", primary, f"{LOST_AFTER} readiness checks failed")
            self._carry_out(self.manager.on_primary_lost(time.monotonic()))

    # -- carrying out -------------------------------------------------------------------------
    def _carry_out(self, actions: list[Action]) -> dict:
        """Do each action in order; per-kind durations (ms) and bytes copied."""
        phases: dict[str, float] = {}
        copied = 0
        for a in actions:
            t = time.monotonic()
            if a.kind == "sync" and a.src is not None:
                copied += self.sync(a.src, a.dst, a.reason)
            elif a.kind == "steer":
                self.tb.steer(self.rset.ip, a.dst, mode="make-before-break")
            elif a.kind == "role":
                self.event("role", a.dst, f"{a.role} ({a.reason})")
            phases[a.kind] = phases.get(a.kind, 0.0) + (time.monotonic() - t) * 1000
        return {"phases_ms": {k: round(v, 3) for k, v in phases.items() if k != "role"}, "bytes": copied}

    def _migrate(self, old: str, new: str, actions: list[Action]) -> dict:
        """Reactive: start the destination, freeze the old one, move its state, switch, stop it; each phase timed.

        The old instance is frozen (`docker pause`) from the copy to the switch so the state moved is
        its last (as state-transfer migration stops the source first): the downtime Farris's
        migration has and ready replicas avoid. Stopping kills it while frozen, then thaws it."""
        phases: dict[str, float] = {}
        box = transfer.container_name(self.tb, services_mod.resolved(self.tb, self.runs[old]))
        steps = [("start", lambda: services_mod.start(self.tb, self.runs[new])),
                 ("freeze", lambda: proc.run(["docker", "pause", box], timeout=30)),
                 ("copy", lambda: self.sync(old, new, "migration")),
                 ("switch", lambda: self.tb.steer(self.rset.ip, new, mode="make-before-break")),
                 ("stop", lambda: self._stop_frozen(old, box))]
        copied = 0
        for name, fn in steps:
            t = time.monotonic()
            out = fn()
            copied += out if isinstance(out, int) else 0
            phases[name] = round((time.monotonic() - t) * 1000, 3)
        for a in actions:
            if a.kind == "role":
                self.event("role", a.dst, f"{a.role} ({a.reason})")
        return {"phases_ms": phases, "bytes": copied}

    def _stop_frozen(self, host: str, box: str) -> None:
        """Kill the frozen instance (the signal waits for the thaw), then thaw it (a killed sidecar needs none)."""
        try:
            services_mod.stop(self.tb, self.runs[host])
        finally:
            proc.run(["docker", "unpause", box], check=False, timeout=30)

    def sync(self, src: str, dst: str, reason: str = "") -> int:
        """Copy the primary's state_dir from `src` to `dst` over the emulated network; the bytes copied."""
        state = self.rset.state_dir
        if state is None:
            return 0
        paths = {h: services_mod.container_path(services_mod.service_pid(self.tb, services_mod.resolved(
            self.tb, self.runs[h])), state) for h in (src, dst)}
        t0 = time.monotonic()
        copied = transfer.copy_dir(self.tb, src, dst, paths[src], paths[dst], SYNC_PORT, "state copy")
        ms = (time.monotonic() - t0) * 1000
        _append(Path(self.tb.run_dir) / SYNCS, {"service": self.rset.name, "src": src, "dst": dst, "bytes": copied,
                                                "ms": round(ms, 3), "time": time.time(), "reason": reason})
        self.event("sync", dst, f"{src} -> {dst}: {copied} B in {ms:.0f} ms ({reason})")
        return copied


_RUNNING: dict[str, list[ReplicaRuntime]] = {}  # run id -> its replicated services


def start_all(tb: Any, sets: Sequence[ReplicaSetSpec], services: Sequence[ServiceRun], mode: str | None,
              event: Callable[[str, str, str, str], None]) -> list[ReplicaRuntime]:
    """Start a runtime per replicated service (`mode` overrides each one's migration); `event(kind, ...)`."""
    runtimes = []
    for rset in sets:
        rt = ReplicaRuntime(tb, rset, services, mode or rset.migration,
                            lambda action, target, detail: event("replica", action, target, detail))
        rt.start()
        runtimes.append(rt)
    _RUNNING[tb.rid] = runtimes
    return runtimes


def stop_all(tb: Any) -> None:
    """Stop the runtimes of this Testbed's run."""
    for rt in _RUNNING.pop(tb.rid, []):
        rt.stop()


def on_move(tb: Any, device: str, site: str) -> list[dict]:
    """Tell every replicated service of this run that `device` moved to `site`; the handovers made."""
    return [r for rt in _RUNNING.get(tb.rid, []) if (r := rt.on_move(device, site)) is not None]
