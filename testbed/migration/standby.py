"""A checkpointed standby (Han et al.'s CVM protection) in state-transfer mode: the primary's state
sent to a standby host every interval; when the primary's connectivity is lost the standby restores
the latest copy and takes the service's address.

Every interval the primary's agent sends the files of its `state_dir` changed since the last
checkpoint (an empty frame when none changed: the standby knows the primary is alive); the
standby's agent extracts them into its own `state_dir` and reports each. No frame for `detect`
intervals means the primary is lost; a standby with `takeover` then starts the service (which reads
the restored state) and steers the address to itself. Bytes per checkpoint, the state's age at the
loss and each takeover phase are written to `standbys.jsonl` in the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from testbed.errors import TestbedError
from testbed.experiment import services
from testbed.experiment.spec import ServiceRun
from testbed.migration import transfer
from testbed.migration.primitives import AGENT_PORT, _wipe_state

log = logging.getLogger(__name__)


@dataclass
class StandbyRecord:
    """What one standby saw: every checkpoint, the loss, the takeover."""

    service: str
    primary: str
    standby: str
    interval_s: float
    detect_s: float
    takeover: bool
    checkpoints: list[dict] = field(default_factory=list)  # {seq, taken, received, bytes, counter}
    lost_at: float | None = None
    phases: dict[str, float] = field(default_factory=dict)  # takeover: start, steer (seconds)
    served_at: float | None = None  # wall clock when the address was steered to the standby
    error: str = ""

    def summary(self) -> dict:
        """Bytes per checkpoint and per second, the latest checkpoint before the loss."""
        steady = self.checkpoints[1:]  # the first carries every file; later ones only changes
        span = (steady[-1]["taken"] - steady[0]["taken"]) if len(steady) > 1 else 0.0
        total = sum(c["bytes"] for c in steady)
        last = self.checkpoints[-1] if self.checkpoints else None
        return {
            "service": self.service, "primary": self.primary, "standby": self.standby,
            "interval_ms": round(1000 * self.interval_s, 3), "detect_ms": round(1000 * self.detect_s, 3),
            "takeover": self.takeover, "checkpoints": len(self.checkpoints),
            "first_bytes": self.checkpoints[0]["bytes"] if self.checkpoints else 0,
            "bytes_per_checkpoint": total / len(steady) if steady else 0.0,
            "bytes_per_s": total / span if span > 0 else 0.0,
            "transfer_ms_mean": 1000 * sum(c["received"] - c["taken"] for c in steady) / len(steady) if steady else 0.0,
            "last_taken": last["taken"] if last else None, "last_counter": last.get("counter") if last else None,
            "lost_at": self.lost_at, "served_at": self.served_at,
            "phases_ms": {k: round(1000 * v, 1) for k, v in self.phases.items()}, "error": self.error,
        }


class Standby:
    """The running pair of agents for one standby, and the thread that watches the standby's."""

    def __init__(self, tb: Any, svc: ServiceRun, standby: str, interval_s: float, detect: float,
                 takeover: bool, port: int = AGENT_PORT) -> None:
        self.tb, self.standby = tb, standby
        self.primary_svc = services.resolved(tb, svc)
        self.standby_svc = services.resolved(tb, dataclasses.replace(svc, host=standby))
        if not self.primary_svc.state_dir:
            raise TestbedError(f"{svc.host}: service {svc.name} declares no state_dir to checkpoint")
        self.record = StandbyRecord(svc.name, svc.host, standby, interval_s, detect * interval_s, takeover)
        self.port = port
        self.receiver: transfer.Spawned | None = None
        self.sender: transfer.Spawned | None = None
        self.thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> str:
        """Idle the standby's service, start its receiver, then the primary's checkpointer."""
        src_ip = transfer.ensure_address(self.tb, self.primary_svc.host)
        dst_ip = transfer.ensure_address(self.tb, self.standby)
        services.stop(self.tb, self.standby_svc)
        _wipe_state(self.tb, self.standby_svc)
        logs = self.tb.run_dir
        self.receiver = transfer.Spawned(
            transfer.container_name(self.tb, self.standby_svc),
            ["recv", self.port, self.standby_svc.state_dir, 0, f"{self.record.detect_s:.3f}"],
            logs / f"standby-{self.standby}.log")
        self.receiver.wait_for("listening", 30)
        self.sender = transfer.Spawned(
            transfer.container_name(self.tb, self.primary_svc),
            ["checkpoint", src_ip, dst_ip, self.port, self.primary_svc.state_dir, f"{self.record.interval_s:.4f}"],
            logs / f"checkpointer-{self.standby}.log")
        self.sender.wait_for("connected", 30)
        self.thread = threading.Thread(target=self._watch, name=f"standby-{self.standby}", daemon=True)
        self.thread.start()
        return (f"{self.primary_svc.host} -> {self.standby} every {1000 * self.record.interval_s:g} ms "
                f"(state transfer of {self.primary_svc.state_dir}; lost after {1000 * self.record.detect_s:g} ms)")

    def _watch(self) -> None:
        assert self.receiver is not None
        while not self._stop.is_set():
            for item in self.receiver.read(0.2):
                if "seq" in item and "received" in item:
                    self.record.checkpoints.append({k: item.get(k) for k in ("seq", "taken", "received", "bytes",
                                                                              "counter")})
                elif "lost" in item:
                    self.record.lost_at = float(item["lost"])
                    if self.record.takeover:
                        self._take_over()
                    return
            if self.receiver.popen.poll() is not None and not self.receiver.buf:
                return

    def _take_over(self) -> None:
        t0 = time.time()
        try:
            services.start(self.tb, self.standby_svc)
            t1 = time.time()
            ip = self.tb.topo.host(self.standby).ip.split("/")[0]
            self.tb.steer(ip, self.standby)
            t2 = time.time()
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            self.record.error = f"takeover failed: {exc}"
            log.error("%s: %s", self.standby, self.record.error)
            return
        self.record.phases = {"detect": t0 - (self.record.lost_at or t0), "start": t1 - t0, "steer": t2 - t1}
        self.record.served_at = t2

    def stop(self) -> dict:
        """Stop both agents and the watcher; the summary (also appended to standbys.jsonl)."""
        self._stop.set()
        if self.thread is not None:
            self.thread.join(timeout=60)
        for spawned, svc in ((self.sender, self.primary_svc), (self.receiver, self.standby_svc)):
            if spawned is None:
                continue
            try:
                pid = None if self.tb.node(svc.host).down else services.service_pid(self.tb, svc)
            except TestbedError:
                pid = None
            spawned.stop(pid)
        summary = self.record.summary()
        with open(self.tb.run_dir / "standbys.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({**summary, "checkpoint_log": self.record.checkpoints}) + "\n")
        return summary
