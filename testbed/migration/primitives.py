"""The migration primitives, each timed per phase: cold, state transfer, and live (rejected where CRIU fails).

*Cold*: the service on the destination is started afresh from its image (state lost). *State
transfer*: the service is stopped on the source, its `state_dir` is sent by the state agent over
the emulated network to the destination's, and the service starts there from that state (an
application-level migration, labelled as such: no process memory moves). *Live* needs a working
container checkpoint/restore (testbed/checkpoint.py) and is refused everywhere else. After the
move the address is served by the destination through the controller (`Testbed.steer`).
Downtime runs from the source's stop to the destination's address being steered (or its
neighbours re-pointed, in a chain).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from testbed.errors import TestbedError
from testbed.experiment import services
from testbed.experiment.spec import ServiceRun
from testbed.migration import transfer

MODES = ("cold", "state-transfer", "live")
AGENT_PORT = 7790


@dataclass
class MigrationResult:
    """One migration: what moved where, how long each phase took, the bytes sent and the downtime."""

    service: str
    src: str
    dst: str
    mode: str
    phases: dict[str, float] = field(default_factory=dict)  # seconds, in order
    bytes: int = 0
    downtime_s: float = 0.0
    total_s: float = 0.0
    counter: int | None = None  # the state's count that reached the destination (counter service)
    started: float = 0.0  # wall clock of the first phase
    stopped: float = 0.0  # wall clock of the source's stop (downtime starts)

    def detail(self) -> str:
        """One line for events.csv."""
        phases = ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in self.phases.items())
        label = " (application-level: state_dir copied, no process memory)" if self.mode == "state-transfer" else ""
        return (f"{self.mode}{label} {self.service} {self.src}->{self.dst}: {phases}; {self.bytes} B; "
                f"downtime {1000 * self.downtime_s:.0f} ms, total {1000 * self.total_s:.0f} ms")


def live_refusal() -> str | None:
    """Why live migration cannot run here (None when it could)."""
    from testbed.checkpoint import available

    found = available()
    if not found.ok:
        return f"live migration needs container checkpoint/restore, which fails here: {found.reason}"
    return "live migration is not implemented yet (checkpoint/restore works here: use state-transfer or cold)"


class _Clock:
    def __init__(self, result: MigrationResult) -> None:
        self.result, self.last = result, time.time()
        result.started = self.last

    def phase(self, name: str) -> float:
        now = time.time()
        self.result.phases[name] = now - self.last
        self.last = now
        return now


def _service_ip(tb: Any, host: str) -> str:
    return tb.topo.host(host).ip.split("/")[0]


def _at(svc: ServiceRun, host: str) -> ServiceRun:
    return dataclasses.replace(svc, host=host)


def _wipe_state(tb: Any, svc: ServiceRun) -> None:
    """Empty the destination's state directory (a cold start from the image knows nothing)."""
    if not svc.state_dir:
        return
    root = services.container_path(services.service_pid(tb, svc), svc.state_dir)
    for entry in root.iterdir() if root.is_dir() else ():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def migrate(tb: Any, svc: ServiceRun, dst: str, mode: str, *, port: int = AGENT_PORT,
            log_dir: Path | None = None, note: dict | None = None,
            repoint: Callable[[], str] | None = None) -> MigrationResult:
    """Move service `svc` (on `svc.host`) to host `dst` in `mode`; the timed result (with `note`, in migrations.jsonl).

    The destination then serves the source's address (steered by the controller), or, with `repoint`
    (a chain's VF on a host of its own address), `repoint()` points the neighbours at it instead.
    """
    if mode == "live":
        raise TestbedError(live_refusal() or "live migration unavailable")
    if mode not in MODES:
        raise TestbedError(f"unknown migration mode {mode!r} (one of {', '.join(MODES)})")
    src_svc, dst_svc = services.resolved(tb, svc), services.resolved(tb, _at(svc, dst))
    result = MigrationResult(svc.name, svc.host, dst, mode)
    clock = _Clock(result)
    ip = _service_ip(tb, svc.host) if repoint is None else ""
    receiver = None
    if mode == "state-transfer":
        if not src_svc.state_dir:
            raise TestbedError(f"{svc.host}: service {svc.name} declares no state_dir to transfer")
        src_ip, dst_ip = transfer.ensure_address(tb, svc.host), transfer.ensure_address(tb, dst)
        services.stop(tb, dst_svc)  # the twin idles until the state is in
        _wipe_state(tb, dst_svc)
        receiver = transfer.Spawned(transfer.container_name(tb, dst_svc), ["recv", port, dst_svc.state_dir, 1, 0],
                                    log_dir / "agent-recv.log" if log_dir else None)
        receiver.wait_for("listening", 30)
        clock.phase("prepare")
    result.stopped = time.time()
    if not tb.node(svc.host).down:
        services.stop(tb, src_svc)
    clock.phase("stop")
    try:
        if receiver is not None:
            sent = transfer.run_agent(transfer.container_name(tb, src_svc),
                                      ["send", src_ip, dst_ip, port, src_svc.state_dir])
            result.bytes = int(sent["bytes"])
            got = receiver.wait_for("received", 60)
            result.counter = got.get("counter")
            clock.phase("transfer")
        else:
            services.stop(tb, dst_svc)
            _wipe_state(tb, dst_svc)
            clock.phase("reset")
    finally:
        if receiver is not None:  # it exits after one frame; killed by its PID if the send failed
            receiver.stop(None if receiver.popen.poll() is not None else services.service_pid(tb, dst_svc))
    services.start(tb, dst_svc)
    clock.phase("start")
    if repoint is None:
        tb.steer(ip, dst)
        end = clock.phase("steer")
    else:
        repoint()
        end = clock.phase("repoint")
    result.downtime_s = end - result.stopped
    result.total_s = end - result.started
    if log_dir is not None:
        with open(log_dir / "migrations.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({**dataclasses.asdict(result), **(note or {})}) + "\n")
    return result
