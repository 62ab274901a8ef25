"""The `migrations:` entries as steps of the fault schedule (apply only; each writes its phases to events)."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from testbed.experiment.faults import Fault
from testbed.experiment.spec import ServiceRun
from testbed.migration.primitives import migrate
from testbed.migration.spec import MigrationSpec


def service_on(services: Sequence[ServiceRun], host: str, name: str) -> ServiceRun:
    """The experiment's entry for service `name` on `host`, else a bare one (defaults from the image)."""
    return next((s for s in services if s.host == host and s.name == name), ServiceRun(host, name))


class PlaceAction(Fault):
    """The service's shared address steered to one host (before it moves)."""

    @property
    def can_undo(self) -> bool:
        return False

    def apply(self, tb: Any, now: float) -> str:
        ip = tb.topo.host(self.spec.dst).ip.split("/")[0]
        done = tb.steer(ip, self.spec.dst)
        return f"{ip} steered to {self.spec.dst} ({done.get('flow_mods', '?')} flow mods)"

    def undo(self, tb: Any, now: float) -> str:
        return "not undone"


class MigrateAction(Fault):
    """One migration of a service between anycast twins; its WAN link's rate set first when asked."""

    def __init__(self, spec: MigrationSpec, services: Sequence[ServiceRun]) -> None:
        super().__init__(spec)
        self.services = services

    @property
    def can_undo(self) -> bool:
        return False

    def apply(self, tb: Any, now: float) -> str:
        spec = self.spec
        rate = ""
        if spec.wan_rate_mbit is not None:
            a, b = tb.topo.host(spec.src).site, tb.topo.host(spec.dst).site
            wan = tb.topo.wan_link(a, b)
            tb.links.shape(tb.wan_link_id(a, b), forward=dataclasses.replace(wan.forward, bw_mbit=spec.wan_rate_mbit),
                           reverse=dataclasses.replace(wan.reverse, bw_mbit=spec.wan_rate_mbit))
            rate = f"WAN {spec.wan_rate_mbit:g} Mbit/s; "
        svc = service_on(self.services, spec.src, spec.service)
        result = migrate(tb, svc, spec.dst, spec.mode, log_dir=tb.run_dir, note={"wan_rate_mbit": spec.wan_rate_mbit})
        return rate + result.detail()

    def undo(self, tb: Any, now: float) -> str:
        return "not undone"


class StandbyAction(Fault):
    """A checkpointed standby: started when due, stopped (its record written) at the end of the run."""

    def __init__(self, spec: MigrationSpec, services: Sequence[ServiceRun]) -> None:
        super().__init__(spec)
        self.services = services
        self.standby: Any = None

    def apply(self, tb: Any, now: float) -> str:
        from testbed.migration.standby import Standby

        spec = self.spec
        self.standby = Standby(tb, service_on(self.services, spec.src, spec.service), spec.dst,
                               spec.interval_s or 0.1, spec.detect, spec.takeover)
        return "standby " + self.standby.start()

    def undo(self, tb: Any, now: float) -> str:
        if self.standby is None:
            return "never started"
        s = self.standby.stop()
        return (f"standby {s['standby']}: {s['checkpoints']} checkpoints, {s['bytes_per_checkpoint']:.0f} B each, "
                f"{s['bytes_per_s']:.0f} B/s; lost at {s['lost_at']}; takeover {s['phases_ms'] or 'none'} {s['error']}")


def make_migration_action(spec: MigrationSpec, services: Sequence[ServiceRun]) -> Fault:
    """The schedule step for a validated `migrations:` entry."""
    if spec.kind == "standby":
        return StandbyAction(spec, services)
    return PlaceAction(spec) if spec.kind == "place" else MigrateAction(spec, services)
