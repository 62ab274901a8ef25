"""Carries out the schedule's moves and switches on a running Testbed, as the runner carries out faults.

`prepare` runs once the services are up, before the traffic: each address that a `switch`
moves is steered to its first `from` host, and every other instance sharing it is stopped (the
switch brings its destination up). A `move` is `Testbed.move`. A `switch` is, per mode:

- make-before-break: destination instance started if needed and ready-checked, traffic steered
  make-before-break (answered once every switch acknowledged), then the old instance stopped;
- break-before-make: the old instance stopped, the destination instance started and
  ready-checked, then the traffic steered break-before-make.

Each step is timed; every move and switch is appended to `moves.jsonl` / `switches.jsonl` in the
testbed's run directory (read by `mobility_metrics`), and the runner writes its event.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from testbed.experiment import services as services_mod
from testbed.experiment.faults import Fault, pick_service
from testbed.experiment.mobility_spec import MoveSpec, SwitchSpec
from testbed.experiment.spec import ExperimentSpec, FaultSpec, ServiceRun, Variant
from testbed.experiment.values import Trigger

log = logging.getLogger(__name__)
MOVES_FILE, SWITCHES_FILE = "moves.jsonl", "switches.jsonl"


def effective_schedule(spec: ExperimentSpec, variant: Variant) -> tuple:
    """The schedule as `variant` runs it (its `switch:` mode replaces every switch's own)."""
    if variant.switch is None:
        return spec.schedule
    return tuple(dataclasses.replace(e, mode=variant.switch) if isinstance(e, SwitchSpec) else e
                 for e in spec.schedule)


def instance(tb: Any, host: str, services: Sequence[ServiceRun]) -> ServiceRun:
    """The service instance on `host` a switch starts or stops (declared, else its image's own)."""
    return pick_service(tb, FaultSpec("service_down", "kill", Trigger(), host=host), services)


def prepare(tb: Any, spec: ExperimentSpec) -> list[str]:
    """Before traffic: steer each switched address to its first host, stop its other instances; what was done."""
    done = []
    for entry in spec.schedule:
        if not (isinstance(entry, SwitchSpec) and entry.first):
            continue
        tb.steer(entry.service_ip, entry.src, mode="make-before-break")
        done.append(f"{entry.service_ip} -> {entry.src}")
        others = sorted(h.name for h in tb.topo.hosts()
                        if h.anycast and h.ip.split("/")[0] == entry.service_ip and h.name != entry.src)
        for host in others:
            services_mod.stop(tb, instance(tb, host, spec.services))
            done.append(f"{host} stopped")
    return done


def _append(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


class MoveAction(Fault):
    """A user's move: the device's access link re-attached to the other site's switch."""

    @property
    def can_undo(self) -> bool:
        return False

    def apply(self, tb: Any, now: float) -> str:
        spec: MoveSpec = self.spec  # type: ignore[assignment]
        from testbed.replication.runtime import on_move

        rec = tb.move(spec.host, spec.to, spec.gap_s)
        handovers = on_move(tb, spec.host, spec.to)  # replicated services that follow this user
        rec["handovers"] = [h["to"] for h in handovers]
        rec["handover_ended"] = max([h["ended"] for h in handovers], default=rec["acked"])
        _append(Path(tb.run_dir) / MOVES_FILE, rec)
        return (f"{rec['src']} -> {rec['dst']}: detach {rec['detach_ms']:.0f} ms, unattached {rec['unattached_ms']:.0f} ms, "
                f"controller {rec['controller_ms']:.0f} ms" + "".join(f"; service handed over to {h['to']}"
                                                                      for h in handovers))

    def undo(self, tb: Any, now: float) -> str:
        raise NotImplementedError("a move is not undone; schedule a move back")


class SwitchAction(Fault):
    """A service's traffic moved from one same-IP instance to another, in make-before-break or break-before-make order."""

    def __init__(self, spec: SwitchSpec, services: Sequence[ServiceRun]) -> None:
        super().__init__(spec)  # type: ignore[arg-type]
        self.services = services

    @property
    def can_undo(self) -> bool:
        return False

    def apply(self, tb: Any, now: float) -> str:
        spec: SwitchSpec = self.spec  # type: ignore[assignment]
        old, new = instance(tb, spec.src, self.services), instance(tb, spec.to, self.services)
        steps: list[tuple[str, float]] = []
        t = time.time()
        answer: dict = {}

        def step(name: str, fn: Any) -> None:
            nonlocal t
            result = fn()
            if isinstance(result, dict):
                answer.update(result)
            steps.append((name, time.time() - t))
            t = time.time()

        steer = lambda: tb.steer(spec.service_ip, spec.to, mode=spec.mode)  # noqa: E731
        if spec.mode == "make-before-break":
            step("start_new", lambda: services_mod.start(tb, new))
            step("steer", steer)
            step("stop_old", lambda: services_mod.stop(tb, old))
        else:
            step("stop_old", lambda: services_mod.stop(tb, old))
            step("start_new", lambda: services_mod.start(tb, new))
            step("steer", steer)
        record = {"service_ip": spec.service_ip, "from": spec.src, "to": spec.to, "mode": spec.mode,
                  "started": now, "ended": t, "steps_ms": {k: round(v * 1000, 3) for k, v in steps},
                  "order": [k for k, _ in steps], "controller": answer}
        _append(Path(tb.run_dir) / SWITCHES_FILE, record)
        return f"{spec.src} -> {spec.to}: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in steps)

    def undo(self, tb: Any, now: float) -> str:
        raise NotImplementedError("a switch is not undone; schedule a switch back")


def make_action(spec: Any, services: Sequence[ServiceRun]) -> Fault:
    """The runnable action of a schedule entry."""
    if isinstance(spec, MoveSpec):
        return MoveAction(spec)  # type: ignore[arg-type]
    if isinstance(spec, SwitchSpec):
        return SwitchAction(spec, services)
    raise ValueError(f"unknown schedule entry {spec!r}")
