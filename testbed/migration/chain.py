"""Runs a virtual-function chain for one run: its VFs, the orchestrator's loop (polls, healing), stress and failures.

The source sends numbered frames to the first VF; each VF burns its CPU cost per frame and
forwards to the address in its `next` file (images/vf/vf.py); the sink logs every frame. Every
`period` the orchestrator (testbed/migration/orchestrator.py) gets each node's CPU and memory use
from its container's cgroup; a node whose cgroup does not answer has failed. Its decisions are
carried out by testbed/migration/primitives.py (`cold`, `state-transfer`), the chain's neighbours
re-pointed by rewriting their `next` files; `reset` restarts every VF on a new placement. Each step
is a row of events.csv (kind `chain`); the sink's frames are copied to <run_dir>/frames-<chain>.log.
Stress and failures run in a thread of their own (`Schedule`), so they land at their seeded times
whatever the orchestrator is doing: the same times in every variant.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from testbed import proc
from testbed.errors import TestbedError
from testbed.experiment import services
from testbed.experiment.spec import ServiceRun
from testbed.migration.chain_spec import SINK, ChainFlow
from testbed.migration.orchestrator import NodeState, Orchestrator, make_predictor
from testbed.migration.primitives import migrate

log = logging.getLogger(__name__)
STATE = "/srv/vf"
KIND = "chain"
#: CPU hogs: `workers` busy processes that end by themselves after `seconds` (killed with their node otherwise).
HOG = ("import os, sys, time\nend = time.monotonic() + float(sys.argv[2])\n"
       "for _ in range(int(sys.argv[1]) - 1):\n    if os.fork() == 0:\n        break\n"
       "while time.monotonic() < end:\n    pass\n")
Event = Callable[..., None]


def failure_times(seed: int, rep: int, flow: ChainFlow) -> list[tuple[float, int]]:
    """(time, VF index) of each failure: a Poisson process of mean gap `mean_s` from `from_s` (pure, seeded)."""
    if flow.failures is None:
        return []
    rng = random.Random(f"chain-failures:{seed}:{rep}:{flow.name}")
    out, t = [], flow.failures.from_s
    while True:
        t += rng.expovariate(1.0 / flow.failures.mean_s)
        if t >= flow.duration_s:
            return out
        out.append((t, rng.randrange(len(flow.vfs))))


def vf_command(role: str, cost_s: float = 0.0, rate: float = 0.0, size: int = 200,
               deadline_s: float = 0.0) -> tuple[str, ...]:
    """The command of a chain node (pure)."""
    return ("python3", "/app/vf.py", "--role", role, "--cost", f"{cost_s:g}", "--rate", f"{rate:g}",
            "--size", str(size), "--deadline", f"{deadline_s:g}")


class CgroupPoller:
    """A node's CPU (share of its limit, over the last period) and memory use, read from its container's cgroup."""

    def __init__(self, tb: Any) -> None:
        self.tb = tb
        self.last: dict[str, tuple[float, int]] = {}

    @staticmethod
    def read(pid: int) -> tuple[int, int, int]:
        """CPU time (ns), memory used and memory limit (bytes) of the cgroups of process `pid` (v1, else v2)."""
        root, v1, unified = Path("/sys/fs/cgroup"), {}, None
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, names, path = line.split(":", 2)
            for name in names.split(","):
                v1[name] = root / names / path.lstrip("/")
            if names == "":
                unified = root / path.lstrip("/")
        if "cpuacct" in v1 and "memory" in v1 and (v1["cpuacct"] / "cpuacct.usage").exists():
            mem = v1["memory"]
            return (int((v1["cpuacct"] / "cpuacct.usage").read_text()),
                    int((mem / "memory.usage_in_bytes").read_text()), int((mem / "memory.limit_in_bytes").read_text()))
        if unified is None:
            raise OSError(f"no cgroup found for pid {pid}")
        stat = dict(line.split() for line in (unified / "cpu.stat").read_text().splitlines())
        limit = (unified / "memory.max").read_text().strip()
        return (int(stat["usage_usec"]) * 1000, int((unified / "memory.current").read_text()),
                0 if limit == "max" else int(limit))

    def poll(self, host: str, now: float) -> NodeState | None:
        """The node's state, or None when it does not answer twice in a row (its container and cgroup are gone)."""
        node = self.tb.node(host)
        for attempt in (1, 2):  # a failed node fails both; one slow or broken engine answer is not a failure
            try:
                node.container.reload()
                pid = int(node.container.attrs["State"]["Pid"])
                if not pid:
                    raise OSError("container not running")
                usage, used, limit = self.read(pid)
                read_at = time.monotonic()  # the rate's interval is between reads, not between polling rounds
                break
            except Exception as exc:  # noqa: BLE001 - any failure to read is "no answer"
                if attempt == 2:
                    if host in self.last:
                        log.info("node %s does not answer: %s: %s", host, type(exc).__name__, exc)
                    self.last.pop(host, None)
                    return None
        cores = self.tb.topo.host(host).cpu or os.cpu_count() or 1
        # a round polls the nodes one after another, each after a Docker call that a loaded machine can
        # slow: dividing by the rounds' `now` made a node's CPU share jump above its limit (a false overload)
        prev, self.last[host] = self.last.get(host), (read_at, usage)
        cpu = 0.0 if prev is None or read_at <= prev[0] else (usage - prev[1]) / 1e9 / (read_at - prev[0]) / cores
        return NodeState(now, max(cpu, 0.0), used / limit if limit else 0.0)


@dataclass
class ChainRun:
    """One chain in one run: where each VF is, and how to start, stop and re-point them."""

    tb: Any
    flow: ChainFlow
    healing: str
    run_dir: Path
    event: Event
    placement: dict[str, str] = dataclasses.field(default_factory=dict)

    def ip(self, host: str) -> str:
        return self.tb.topo.host(host).ip.split("/")[0]

    def service(self, vf: str, host: str) -> ServiceRun:
        spec = next(v for v in self.flow.vfs if v.name == vf)
        return ServiceRun(host, "vf", command=vf_command("vf", spec.cost_s, deadline_s=self.flow.deadline_s))

    def write_next(self, host: str, to: str) -> None:
        """Point `host`'s VF at `to`'s (its `next` file, replaced atomically)."""
        root = services.container_path(self.tb.node(host).cpid, STATE)
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / ".next.tmp"
        tmp.write_text(f"{self.ip(to)} 7200\n")
        os.replace(tmp, root / "next")

    def hops(self) -> list[str]:
        """The chain's nodes in frame order: source, each VF's node, sink."""
        return [self.flow.src, *(self.placement[v] for v in self.flow.order), self.flow.dst]

    def repoint(self, vf: str) -> str:
        """Re-point `vf`'s node and its neighbour before it at their next hops (Algorithm 2, step 5)."""
        hops, i = self.hops(), self.flow.order.index(vf) + 1
        self.write_next(hops[i], hops[i + 1])
        self.write_next(hops[i - 1], hops[i])
        return f"{hops[i - 1]} -> {hops[i]} -> {hops[i + 1]}"

    def start(self) -> None:
        """Start every VF, point the chain's hops, then start the source (and sink)."""
        ends = [(self.flow.src, "source,sink" if self.flow.src == self.flow.dst else "source")]
        if self.flow.dst != self.flow.src:
            services.start(self.tb, ServiceRun(self.flow.dst, "vf", command=vf_command("sink")))
        for vf in self.flow.vfs:
            self.placement[vf.name] = vf.host
            services.start(self.tb, self.service(vf.name, vf.host))
        hops = self.hops()
        for a, b in zip(hops[1:-1], hops[2:]):
            self.write_next(a, b)
        host, role = ends[0]
        self.write_next(host, hops[1])
        services.start(self.tb, ServiceRun(host, "vf", command=vf_command(role, rate=self.flow.rate, size=self.flow.size)))
        self.event("start", " -> ".join(hops), f"{self.healing}: {self.flow.rate:g} frames/s, VFs "
                   + ", ".join(f"{v.name}@{v.host} {1000 * v.cost_s:g} ms" for v in self.flow.vfs))

    def move(self, vf: str, src: str, dst: str, mode: str, why: str) -> None:
        """Carry out one decision: `vf` from `src` to `dst` in `mode`, its neighbours re-pointed."""
        label = {"cold": "cold (restarted from the image, state lost)",
                 "state-transfer": "state-transfer (application-level: state_dir copied, no CRIU)"}[mode]
        try:
            result = migrate(self.tb, self.service(vf, src), dst, mode, log_dir=self.run_dir,
                             repoint=lambda: self.repoint(vf), note={"vf": vf, "why": why, "chain": self.flow.name})
            self.event("migrate", f"{vf}:{src}->{dst}", f"{label}; {why}; {result.detail()}")
        except Exception as exc:  # noqa: BLE001 - recorded; the VFO tries again at its next poll
            self.placement[vf] = src
            self.event("migrate", f"{vf}:{src}->{dst}", f"FAILED {label}; {why}: {exc}")

    def reset(self, placement: dict[str, str], why: str) -> None:
        """The baseline: stop every VF, start each on the new placement (from its image), re-point the chain."""
        started = time.time()
        for vf, host in self.placement.items():
            if not self.tb.node(host).down:
                services.stop(self.tb, self.service(vf, host))
        old, self.placement = self.placement, dict(placement)
        for vf in self.flow.order:
            dst = self.placement.get(vf, old[vf])
            self.placement[vf] = dst
            try:
                migrate(self.tb, self.service(vf, old[vf]), dst, "cold", log_dir=self.run_dir,
                        repoint=lambda v=vf: self.repoint(v), note={"vf": vf, "why": why, "chain": self.flow.name,
                                                                    "reset": True})
            except Exception as exc:  # noqa: BLE001
                self.event("reset", vf, f"FAILED to start {vf} on {dst}: {exc}")
        self.event("reset", " -> ".join(self.hops()),
                   f"whole chain rebuilt ({why}) in {1000 * (time.time() - started):.0f} ms")

    def collect(self) -> Path:
        """Copy the sink's frame log into the run directory; its path."""
        out = self.run_dir / f"frames-{self.flow.name}.log"
        src = services.container_path(self.tb.node(self.flow.dst).cpid, f"{STATE}/frames.log")
        out.write_text(src.read_text() if src.exists() else "")
        return out


def run_chain(tb: Any, flow: ChainFlow, variant: Any, rep: int, seed: int, run_dir: Path, event: Event,
              clock: Callable[[], float] = time.time) -> dict:
    """Run `flow` for its duration under the variant's healing mode; what happened (also in chain-<name>.json)."""
    healing = flow.healing(variant)
    run = ChainRun(tb, flow, healing, run_dir, lambda action, target, detail: event(KIND, action, target, detail))
    run.start()
    params = dict(flow.vfo.params)
    vfo = Orchestrator(make_predictor(flow.vfo.predictor, **params), flow.vfo.k, flow.vfo.period_s, per_node=1)
    poller = CgroupPoller(tb)
    nodes = [*(v.host for v in flow.vfs), *flow.spares]
    t0 = clock()
    for n in nodes:  # the CPU baseline: the first poll that counts is one period later
        poller.poll(n, 0.0)
    vfo.last_poll = 0.0
    record: dict[str, Any] = {"chain": flow.name, "healing": healing, "t0": t0, "duration_s": flow.duration_s,
                              "rate": flow.rate, "window_s": flow.window_s, "below": flow.below, "polls": 0,
                              "failures": [], "decisions": []}
    schedule = Schedule(tb, run, record, lambda: clock() - t0, seed, rep)
    schedule.start()
    try:
        while (now := clock() - t0) < flow.duration_s:
            if vfo.poll_due(now):
                answers = {n: poller.poll(n, now) for n in nodes}
                record["polls"] += 1
                _heal(run, vfo, answers, now, record)  # failures land on time meanwhile (a move they hit fails, is retried)
            wake = min(vfo.last_poll + vfo.period_s, flow.duration_s)
            time.sleep(max(min(wake - (clock() - t0), 0.5), 0.0))
    finally:
        schedule.stop()
    record["frames_log"] = str(run.collect())
    record["t_end"] = clock()
    (run_dir / f"chain-{flow.name}.json").write_text(json.dumps(record, indent=1))
    return record


def _heal(run: ChainRun, vfo: Orchestrator, answers: dict[str, NodeState | None], now: float, record: dict) -> None:
    """One poll's decisions, carried out in the run's healing mode."""
    before = dict(run.placement)
    decisions = vfo.step(now, answers, run.placement)
    for d in decisions:
        record["decisions"].append({**dataclasses.asdict(d), "t": now, "healing": run.healing})
    if run.healing == "none" or not decisions:
        run.placement = before
        for d in decisions:
            run.event("predict", d.src, f"{d.kind} of {d.vf} not done (healing none): {d.reason}")
        return
    if run.healing == "reset":
        run.placement = before
        if any(d.kind == "cold" for d in decisions):
            failed = ", ".join(sorted({d.src for d in decisions if d.kind == "cold"}))
            run.reset(vfo.rebuild(answers, run.flow.order), f"{failed} not answering")
        return
    for d in decisions:
        mode = "state-transfer" if d.kind == "pre-emptive" and run.healing == "state-transfer" else "cold"
        run.move(d.vf, d.src, d.dst, mode, d.reason)


class Schedule(threading.Thread):
    """Stress and failures at their own times, in a thread of their own, whatever the orchestrator is doing."""

    def __init__(self, tb: Any, run: ChainRun, record: dict, elapsed: Callable[[], float], seed: int, rep: int) -> None:
        super().__init__(name=f"chain-{run.flow.name}-schedule", daemon=True)
        self.tb, self.run_, self.record, self.elapsed = tb, run, record, elapsed
        self.todo: list[tuple[float, str, Any]] = [(s.at_s, "stress", s) for s in run.flow.stress]
        self.todo += [(t, "fail", i) for t, i in failure_times(seed, rep, run.flow)]
        self.todo.sort(key=lambda x: x[0])
        self.done = threading.Event()
        self.hogs: list[Any] = []

    def run(self) -> None:
        while not self.done.is_set():
            due = self.todo[0][0] - self.elapsed() if self.todo else 0.2
            if not self.todo or due > 0:
                self.done.wait(min(max(due, 0.0), 0.2))
                continue
            _, what, arg = self.todo.pop(0)
            try:
                self.apply(what, arg)
            except Exception as exc:  # noqa: BLE001 - recorded; the schedule goes on
                self.run_.event(what, str(arg), f"FAILED: {exc}")

    def apply(self, what: str, arg: Any) -> None:
        if what == "stress":
            self.hogs.append(_stress(self.tb, arg, self.run_.run_dir, self.run_.event))
        elif what == "fail":
            back = _fail(self.tb, self.run_, arg, self.record, self.elapsed())
            if back is not None:
                self.todo.append(back)
                self.todo.sort(key=lambda x: x[0])
        else:
            _recover(self.tb, arg, self.run_.event)

    def stop(self) -> None:
        """End the schedule (what is still due is dropped) and its CPU hogs."""
        self.done.set()
        self.join(30)
        for hog in self.hogs:
            proc.stop(hog, 2.0)


def _stress(tb: Any, s: Any, run_dir: Path, event: Callable[[str, str, str], None]) -> Any:
    """Start the CPU hogs in the node's container (its cgroup); they end after `for`."""
    popen = proc.popen_in(tb.node(s.host), ["python3", "-c", HOG, str(s.workers), f"{s.duration_s:g}"],
                          stderr=run_dir / f"stress-{s.host}.log")
    event("stress", s.host, f"{s.workers} busy workers for {s.duration_s:g} s in {s.host}'s container")
    return popen


def _fail(tb: Any, run: ChainRun, vf_index: int, record: dict, now: float) -> tuple[float, str, str] | None:
    """The node hosting VF number `vf_index` crashes (silent, containers killed); its recovery, if `down` is given."""
    vf = run.flow.vfs[vf_index].name
    host = run.placement[vf]
    node = tb.node(host)
    if node.down:
        run.event("fail", host, f"{host} (VF {vf}) is down already")
        return None
    try:
        node.crash()
    except TestbedError as exc:
        run.event("fail", host, f"FAILED crash of {host}: {exc}")
        return None
    record["failures"].append({"t": now, "host": host, "vf": vf})
    run.event("fail", host, f"node of VF {vf} crashed (interfaces down, containers killed)")
    if run.flow.failures is not None and run.flow.failures.down_s is not None:
        return (now + run.flow.failures.down_s, "recover", host)
    return None


def _recover(tb: Any, host: str, event: Callable[[str, str, str], None]) -> None:
    try:
        tb.node(host).recover()
        event("recover", host, f"{host} booted again (an idle node from its image)")
    except TestbedError as exc:
        event("recover", host, f"FAILED: {exc}")
