"""Runs an experiment: for each variant x repetition build the Testbed, start services and traffic, inject faults, collect.

Artifacts in the run directory: manifest.json, packets.csv, events.csv, summary.json, plots
(PNG) and report.md; each run's own testbed directory is <out>/<variant>-r<rep>/.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import platform
import selectors
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

from testbed import proc
from testbed.errors import TestbedError
from testbed.experiment import services
from testbed.experiment.faults import Fault, make_fault, pick_service
from testbed.experiment.metrics import EVENT_FIELDS, PACKET_FIELDS, NIC_KIND, RESET_KIND
from testbed.experiment.schedule import FaultSchedule
from testbed.experiment.values import Trigger
from testbed.experiment.spec import (BulkFlow, ExperimentSpec, FaultSpec, ProbeFlow, Readiness, ServiceRun,
                                     Variant)
from testbed.experiment.traffic import (Running, iperf_client_argv, iperf_mbps, iperf_server_argv,
                                        parse_probe_line, probe_argv, start_on, wait_listening)

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


def default_out(spec: ExperimentSpec) -> Path:
    """runs/<name>-<timestamp>."""
    return Path("runs") / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"


class Records:
    """Appends packets.csv and events.csv rows as they happen (header written once)."""

    def __init__(self, out: Path) -> None:
        self.packets_path = out / "packets.csv"
        self.events_path = out / "events.csv"
        for path, header in ((self.packets_path, PACKET_FIELDS), (self.events_path, EVENT_FIELDS)):
            if not path.exists():
                with open(path, "w", newline="", encoding="utf-8") as f:
                    csv.writer(f).writerow(header)

    def packet(self, variant: str, rep: int, flow: str, seq: int, send_time: float, rtt_ms: float | None,
               answered_by: str) -> None:
        self._append(self.packets_path, [variant, rep, seq, f"{send_time:.6f}",
                                         "" if rtt_ms is None else f"{rtt_ms:.3f}", answered_by, flow])

    def event(self, when: float, variant: str, rep: int, kind: str, action: str, target: str, detail: str) -> None:
        self._append(self.events_path, [f"{when:.6f}", variant, rep, kind, action, target, detail])

    @staticmethod
    def _append(path: Path, row: list) -> None:
        with open(path, "a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow(row)


def ip_of(spec: ExperimentSpec, host: str) -> str:
    """A host's address without prefix length."""
    return spec.topology.host(host).ip.split("/")[0]


# -- services ------------------------------------------------------------------------------------
def start_service(tb: Any, svc: ServiceRun, timeout: float | None = None) -> None:
    """Make sure `svc` runs on its host and is ready (any image: testbed/experiment/services.py)."""
    services.start(tb, svc if timeout is None else replace_timeout(tb, svc, timeout))


def replace_timeout(tb: Any, svc: ServiceRun, timeout: float) -> ServiceRun:
    """`svc` (resolved) with its readiness timeout set to `timeout` seconds."""
    svc = services.resolved(tb, svc)
    return dataclasses.replace(svc, ready=dataclasses.replace(svc.ready or Readiness(), timeout_s=timeout))


# -- NIC -----------------------------------------------------------------------------------------
def _still_learning(status: object) -> bool:
    if isinstance(status, dict):
        return status.get("mode") == "learning" or any(_still_learning(v) for v in status.values())
    if isinstance(status, list):
        return any(_still_learning(v) for v in status)
    return False


def wait_nics_learned(tb: Any, hosts: list[str], timeout: float) -> None:
    """Wait until the NICs of `hosts` have learned RTT_avg for all their heartbeat targets (detection is live)."""
    from testbed.failsafe.control import call

    deadline = time.monotonic() + timeout
    for host in sorted(hosts):
        sock = tb.nic_socket(host)
        while True:
            try:
                learning = _still_learning(call(sock, "heartbeat_show"))
            except TestbedError as exc:
                log.warning("%s NIC: heartbeat_show failed (%s); waiting the timeout instead", host, exc)
                time.sleep(max(deadline - time.monotonic(), 0))
                return
            if not learning:
                break
            if time.monotonic() > deadline:
                raise TestbedError(f"{host}'s NIC still learning RTT_avg after {timeout:g} s")
            time.sleep(0.1)


def force_failsafe(tb: Any, host: str) -> list[str]:
    """Force every critical service of host's NIC into fail-safe (control API `mode SERVICE on`)."""
    from testbed.failsafe.control import call

    nic = tb.topo.host(host).nic
    names = [s.name for s in nic.services] if nic else []
    for name in names:
        call(tb.nic_socket(host), "mode", service=name, mode="on")
    return names


# -- one run -------------------------------------------------------------------------------------
@dataclasses.dataclass
class RunContext:
    """What one variant x repetition needs while it runs."""

    spec: ExperimentSpec
    variant: Variant
    rep: int
    records: Records
    progress: Callable[[str, int], None] = lambda flow, n: None

    def event(self, kind: str, action: str, target: str, detail: str, when: float | None = None) -> None:
        self.records.event(time.time() if when is None else when, self.variant.name, self.rep, kind, action,
                           target, detail)


def run_once(ctx: RunContext, run_dir: Path, testbed_factory: Callable[..., Any] | None = None) -> dict:
    """Build the testbed for one variant x repetition, run traffic and faults, tear down; returns run info."""
    if testbed_factory is None:
        from testbed.emulation.testbed import Testbed as testbed_factory
    spec, variant = ctx.spec, ctx.variant
    nic_hosts = [h for h in spec.topology.hosts() if h.nic is not None and h.name not in variant.force_failsafe] \
        if variant.nic else []
    tb = testbed_factory(spec.topology, run_dir, nics=variant.nic, nic_overrides=variant.nic_overrides(),
                         shaped_access=spec.shape_access_hosts(),
                         seed=spec.seed * 1000 + ctx.rep)  # same in every variant; repetitions (< 1000) differ
    info: dict[str, Any] = {"variant": variant.name, "repetition": ctx.rep, "run_dir": str(run_dir)}
    with tb:
        for fault in spec.faults:  # a kill's host gets its namespace holder now, before the NICs learn (prelaunch.py)
            if fault.kind == "host_down" and fault.mode == "kill" and hasattr(tb.node(fault.host), "hold_namespace"):
                tb.node(fault.host).hold_namespace()
        info.update(rid=tb.rid, backends=tb.backends(), selfcheck=tb.selfcheck())
        for svc in spec.services:
            start_service(tb, svc)
        if nic_hosts:
            interval = max((variant.heartbeat_interval_s or h.nic.interval_s) for h in nic_hosts)
            learn = max(h.nic.learn for h in nic_hosts)
            wait_nics_learned(tb, [h.name for h in nic_hosts], timeout=(learn + 5) * interval + 10)
        for host in variant.force_failsafe:
            ctx.event("force_failsafe", "apply", host, "mode on: " + ",".join(force_failsafe(tb, host)))
        if spec.schedule:  # switched addresses steered to their first host (testbed/experiment/mobility_actions.py)
            from testbed.experiment.mobility_actions import prepare
            for done in prepare(tb, spec):
                ctx.event("schedule", "prepare", done.split()[0], done)
        if spec.replica_sets:  # replicated services: roles, syncs, handovers (testbed/replication/runtime.py)
            from testbed.replication.runtime import start_all
            start_all(tb, spec.replica_sets, spec.services, variant.replication, ctx.event)
        try:
            chains = [f for f in spec.traffic if not isinstance(f, (ProbeFlow, BulkFlow))]
            if chains:  # virtual-function chains and their orchestrator (testbed/migration/chain.py)
                from testbed.migration.chain import run_chain
                info["chains"] = [run_chain(tb, f, variant, ctx.rep, spec.seed, run_dir, ctx.event) for f in chains]
            if spec.probes or spec.bulk:
                info["throughput_mbps"] = drive_traffic(ctx, tb, run_dir)
        finally:
            from testbed.replication.runtime import stop_all
            stop_all(tb)
        for e in tb.nic_events():
            ctx.event(NIC_KIND, "activate" if e.get("active") else "deactivate",
                      f"{e.get('node', '')}/{e.get('target', '')}", str(e.get("reason", "")),
                      when=float(e.get("time", 0)))
        from testbed.failsafe.counters import save_nic_counters
        save_nic_counters(tb, ctx.records.packets_path.parent, variant.name, ctx.rep)
    return info


def drive_traffic(ctx: RunContext, tb: Any, run_dir: Path) -> dict[str, float]:
    """Start probes and bulk flows, trigger faults on `# sent N` and on time, wait for the end."""
    spec, variant = ctx.spec, ctx.variant
    from testbed.experiment.mobility_actions import effective_schedule
    entries = (*spec.faults, *effective_schedule(spec, variant))  # faults, then moves and switches
    faults: list[Fault] = [make_fault(f, lambda host: _restart(tb, spec, host), spec.services) for f in entries]
    schedule = FaultSchedule(entries, spec.probes[0].name if spec.probes else None,
                             [f.can_undo and f.spec.has_undo for f in faults])
    sel = selectors.DefaultSelector()
    with ExitStack() as stack:
        for flow in spec.bulk:
            server = start_on(tb.node(flow.server), f"{flow.name}-server", iperf_server_argv(flow),
                              run_dir / f"{flow.name}-server.log")
            stack.callback(server.stop)
            if not wait_listening(tb.node(flow.server), flow.port):
                log.warning("%s: iperf3 server on %s:%d not listening", flow.name, flow.server, flow.port)
        t0 = time.monotonic()
        for flow in spec.probes:
            dst = variant.to or flow.dst
            argv = probe_argv(flow, ip_of(spec, dst), spec.topology.host(flow.src).is_docker)
            p = start_on(tb.node(flow.src), flow.name, argv, run_dir / f"{flow.name}.log")
            stack.callback(p.stop)
            sel.register(p.popen.stdout, selectors.EVENT_READ, p)
        clients: dict[str, Running] = {}
        pending_bulk = sorted(spec.bulk, key=lambda f: f.start_s)
        end_by = t0 + max([f.count / f.rate + f.timeout_s + 30 for f in spec.probes] +
                          [f.start_s + f.duration_s + 30 for f in spec.bulk])
        while sel.get_map() or pending_bulk or any(c.popen.poll() is None for c in clients.values()):
            now = time.monotonic()
            if now > end_by:
                log.warning("traffic did not finish in time; stopping it")
                break
            while pending_bulk and now - t0 >= pending_bulk[0].start_s:
                flow = pending_bulk.pop(0)
                argv = iperf_client_argv(flow, ip_of(spec, variant.to or flow.dst))
                c = start_on(tb.node(flow.src), flow.name, argv, run_dir / f"{flow.name}.log")
                stack.callback(c.stop)
                clients[flow.name] = c
            wake = min([schedule.next_deadline() + t0, now + 0.2] + [t0 + f.start_s for f in pending_bulk])
            for key, _ in sel.select(max(wake - time.monotonic(), 0)):
                p: Running = key.data
                for line in p.read_lines():
                    _on_probe_line(ctx, tb, faults, schedule, p.name, line, t0)
                if p.eof:
                    sel.unregister(key.fileobj)
            _execute(ctx, tb, faults, schedule.poll(time.monotonic() - t0))
        _execute(ctx, tb, faults, schedule.leftovers())
        for i in schedule.never_applied():
            log.warning("fault %d (%s at %s) never fell due", i, entries[i].kind, entries[i].at)
        out: dict[str, float] = {}
        for name, c in clients.items():
            report = c.output(timeout=max(end_by - time.monotonic(), 1))
            mbps = iperf_mbps(report.decode(errors="replace") if report else "")
            if mbps is not None:
                out[name] = mbps
            (run_dir / f"{name}.json").write_bytes(report or b"")
        return out


def _on_probe_line(ctx: RunContext, tb: Any, faults: list[Fault], schedule: FaultSchedule, flow: str,
                   line: str, t0: float) -> None:
    parsed = parse_probe_line(line)
    if parsed is None:
        return
    if parsed.reset is not None:  # a persistent prober (reset 0) and each reset of its connection
        ctx.event(RESET_KIND, "seen" if parsed.reset else "start", flow,
                  f"connection reset #{parsed.reset}" if parsed.reset else "one connection for every request")
    elif parsed.sent is not None:
        ctx.progress(flow, parsed.sent)
        _execute(ctx, tb, faults, schedule.on_sent(flow, parsed.sent, time.monotonic() - t0))
    elif parsed.seq is not None and parsed.send_time is not None:
        ctx.records.packet(ctx.variant.name, ctx.rep, flow, parsed.seq, parsed.send_time, parsed.rtt_ms,
                           parsed.answered_by)


def _execute(ctx: RunContext, tb: Any, faults: list[Fault], dues: list) -> None:
    for due in dues:
        fault = faults[due.index]
        started = time.time()
        try:
            detail = fault.apply(tb, started) if due.action == "apply" else fault.undo(tb, started)
        except Exception as exc:  # a fault that cannot be applied is recorded, the run goes on
            log.error("fault %s %s on %s failed: %s", fault.spec.kind, due.action, fault.target, exc)
            detail = f"FAILED: {exc}"
        # stamped when the fault was issued: the effect lands somewhere during the call (a NIC can
        # see a `docker kill` before it returns); how long applying took is kept in the detail
        detail = f"{detail} (took {1000 * (time.time() - started):.0f} ms)"
        ctx.event(fault.spec.kind, due.action, fault.target, f"{fault.spec.mode}: {detail}", when=started)


def _restart(tb: Any, spec: ExperimentSpec, host: str) -> None:
    """After a host came back: start each of its services again and wait until each is ready."""
    declared = [s for s in spec.services if s.host == host]
    for svc in declared:
        start_service(tb, svc)
    if not declared:  # the host's own service, as its image declares it
        services.wait_ready(tb, pick_service(tb, FaultSpec("host_down", "kill", Trigger(), host=host), ()))


# -- whole experiment ----------------------------------------------------------------------------
def tool_versions() -> dict[str, str]:
    """Versions of the tools a run depends on (first line of each `--version`)."""
    out = {"python": platform.python_version(), "kernel": platform.release()}
    for name, argv in (("ovs", ["ovs-vsctl", "--version"]), ("iperf3", ["iperf3", "--version"]),
                       ("docker", ["docker", "version", "--format", "{{.Server.Version}}"])):
        try:
            res = proc.run(argv, timeout=10, check=False)
            lines = (res.stdout or res.stderr).strip().splitlines()
            out[name] = lines[0] if lines else ""
        except TestbedError as exc:
            out[name] = f"unavailable: {exc}"
    try:
        import mininet.net
        out["mininet"] = mininet.net.VERSION
    except ImportError:
        pass
    return out


def git_revision() -> str:
    """HEAD of the source tree, with "-dirty" when it has uncommitted changes."""
    try:
        rev = proc.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], timeout=10, check=False).stdout.strip()
        dirty = proc.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                         timeout=10, check=False).stdout.strip()
    except TestbedError:
        return "unknown"
    return (rev or "unknown") + ("-dirty" if dirty else "")


def manifest(spec: ExperimentSpec, runs: list[dict]) -> dict:
    """What manifest.json records: source revision, the resolved spec, machine, tools, placement, backends, self-checks."""
    from testbed.cluster.facts import placement_section

    return {
        "experiment": spec.name,
        "description": spec.description,
        "git_revision": git_revision(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"kernel": platform.release(), "host": platform.node(), "cpus": os.cpu_count()},
        "tools": tool_versions(),
        "spec": json.loads(json.dumps(dataclasses.asdict(spec), default=lambda o: o.decode() if isinstance(o, bytes) else str(o))),
        "primaries": {v.name: v.to or (spec.probes[0].dst if spec.probes else "") for v in spec.variants},
        **placement_section(spec.topology, runs),  # site -> server; each server's kernel, versions, backends
        "runs": runs,
    }


def run_experiment(spec: ExperimentSpec, out: Path | None = None, *, testbed_factory: Callable[..., Any] | None = None,
                   show_progress: bool | None = None) -> Path:
    """Run every variant x repetition of `spec` into `out`, then write summary, plots and report; returns `out`."""
    from testbed.experiment.report import report_main

    out = Path(out or default_out(spec))
    out.mkdir(parents=True, exist_ok=True)
    records = Records(out)
    runs: list[dict] = []
    log.info("experiment %s (seed %d) into %s", spec.name, spec.seed, out)
    (out / "manifest.json").write_text(json.dumps(manifest(spec, runs), indent=2))
    with _Progress(spec, show_progress) as progress:
        for rep in range(spec.repetitions):
            for variant in spec.variants:
                progress.start(variant.name, rep)
                ctx = RunContext(spec, variant, rep, records, progress.advance)
                try:
                    runs.append(run_once(ctx, out / f"{variant.name}-r{rep}", testbed_factory))
                finally:
                    (out / "manifest.json").write_text(json.dumps(manifest(spec, runs), indent=2))
    report_main(out)
    if any(getattr(f, "kind", "") in ("migrate", "standby") for f in spec.faults):  # testbed/migration/report.py
        from testbed.migration.report import write_report
        write_report(out)
    from testbed.migration.chain_metrics import add_to_run  # chains' fps, downtime, fluctuation
    add_to_run(out)
    return out


class _Progress:
    """A rich progress bar on a terminal (not in CI), log lines otherwise."""

    def __init__(self, spec: ExperimentSpec, show: bool | None) -> None:
        self.spec = spec
        self.show = sys.stdout.isatty() and not os.environ.get("CI") if show is None else show
        self.bar: Any = None
        self.task: Any = None
        self.total = spec.probes[0].count if spec.probes else 1

    def __enter__(self) -> "_Progress":
        if self.show:
            from rich.progress import Progress
            self.bar = Progress()
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def start(self, variant: str, rep: int) -> None:
        label = f"{self.spec.name} {variant} rep {rep + 1}/{self.spec.repetitions}"
        if self.bar is not None:
            self.task = self.bar.add_task(label, total=self.total)
        else:
            log.info("run %s", label)

    def advance(self, flow: str, n: int) -> None:
        if self.bar is not None and self.task is not None and self.spec.probes and flow == self.spec.probes[0].name:
            self.bar.update(self.task, completed=n)


def run_command(args: Any) -> int:
    """`testbed run FILE [--out DIR] [--short] [--repetitions N] [--seed S]`: validate, run, print where results are."""
    from testbed.experiment.spec import load_experiment, shortened

    spec = load_experiment(args.experiment)  # SpecError (exit 2) before anything starts (or is imported)
    from testbed.experiment.metrics import Summary
    from testbed.experiment.report import summary_table

    if getattr(args, "short", False):
        spec = shortened(spec)
    if getattr(args, "repetitions", None):
        spec = dataclasses.replace(spec, repetitions=args.repetitions)
    if getattr(args, "seed", None) is not None:
        spec = dataclasses.replace(spec, seed=args.seed)
    out = run_experiment(spec, Path(args.out) if getattr(args, "out", None) else None)
    summary = Summary.from_dict(json.loads((out / "summary.json").read_text()))
    chains = json.loads((out / "summary.json").read_text()).get("chains")
    if chains:  # a chain's QoS per variant (testbed/migration/chain_metrics.py)
        from testbed.migration.chain_metrics import report_section
        print(report_section(chains))
    else:
        print(summary_table(summary))
    print(f"results: {out}/report.md")
    return 0
