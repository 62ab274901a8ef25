"""Turns packets.csv and events.csv rows into per-run and per-variant numbers (pure functions, no I/O but CSV)."""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterable, Sequence

PACKET_FIELDS = ("variant", "repetition", "seq", "send_time", "rtt_ms", "answered_by", "flow")
EVENT_FIELDS = ("time", "variant", "repetition", "kind", "action", "target", "detail")
NIC_KIND = "nic"  # events.csv kind of NIC transitions; action "activate" | "deactivate"
RESET_KIND = "tcp_reset"  # events.csv kind of a persistent prober's connection: action "start" | "seen" (a reset)
NOT_FAULTS = (NIC_KIND, "force_failsafe", "place", RESET_KIND)  # event kinds that are not injected faults (place: initial placement)


@dataclass(frozen=True)
class PacketRow:
    """One probe request: when it was sent, its RTT (None when lost) and who answered."""

    variant: str
    repetition: int
    seq: int
    send_time: float
    rtt_ms: float | None
    answered_by: str = ""
    flow: str = "probe"

    @property
    def reply_time(self) -> float | None:
        return None if self.rtt_ms is None else self.send_time + self.rtt_ms / 1000.0


@dataclass(frozen=True)
class EventRow:
    """A fault applied/undone, or a NIC fail-safe transition (kind "nic", action activate|deactivate)."""

    time: float
    variant: str
    repetition: int
    kind: str
    action: str
    target: str
    detail: str = ""


@dataclass(frozen=True)
class RunMetrics:
    """The numbers of one run (one variant, one repetition); None where a number does not apply."""

    variant: str
    repetition: int
    sent: int
    received: int
    delivered_ratio: float
    rtt_p50_ms: float | None
    rtt_p99_ms: float | None
    rtt_max_ms: float | None
    fault_time: float | None = None
    delivered_ratio_after_fault: float | None = None
    detection_s: float | None = None
    failover_s: float | None = None
    lost_during_failover: int | None = None
    recovery_s: float | None = None
    baseline_rtt_ms: float | None = None
    resets: int | None = None  # connection resets a persistent TCP prober saw (None: not one)
    throughput_mbps: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Stat:
    """Mean and spread of one metric over repetitions."""

    mean: float
    std: float
    min: float
    max: float
    n: int


NUMERIC = ("sent", "received", "delivered_ratio", "rtt_p50_ms", "rtt_p99_ms", "rtt_max_ms",
           "delivered_ratio_after_fault", "detection_s", "failover_s", "lost_during_failover", "recovery_s",
           "baseline_rtt_ms", "resets")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation, like numpy's default."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def run_metrics(packets: Sequence[PacketRow], events: Sequence[EventRow], *, primary: str | None = None,
                delay_fault: bool | None = None, threshold: float = 1.5, floor_ms: float = 5.0,
                throughput: dict[str, float] | None = None) -> RunMetrics:
    """Metrics of one run from its probe rows and events; `primary` is the host the probe targets.

    recovery (delay faults): baseline = median RTT before the fault; the RTT counts as back when
    under max(threshold x baseline, baseline + floor_ms) - the floor keeps sub-millisecond
    software jitter from counting as a fault - after it had been over that limit.
    """
    rows = sorted(packets, key=lambda r: r.seq)
    if not rows:
        raise ValueError("no packets")
    mine = [e for e in events if e.kind == RESET_KIND and e.target == rows[0].flow]
    resets = sum(1 for e in mine if e.action == "seen") if mine else None  # None: not a persistent prober
    answered = [r for r in rows if r.rtt_ms is not None]
    rtts = [r.rtt_ms for r in answered]
    primary = primary or _most_common([r.answered_by for r in answered]) or ""
    faults = sorted((e for e in events if e.kind not in NOT_FAULTS and e.action == "apply"), key=lambda e: e.time)
    base = dict(variant=rows[0].variant, repetition=rows[0].repetition, sent=len(rows), received=len(answered),
                delivered_ratio=len(answered) / len(rows),
                rtt_p50_ms=percentile(rtts, 50) if rtts else None, rtt_p99_ms=percentile(rtts, 99) if rtts else None,
                rtt_max_ms=max(rtts) if rtts else None, throughput_mbps=dict(throughput or {}),
                resets=resets)
    if not faults:
        return RunMetrics(**base)
    fault = faults[0]
    t0 = fault.time
    before = [r.rtt_ms for r in answered if r.send_time < t0]
    after = [r for r in rows if r.send_time >= t0]
    activations = sorted(e.time for e in events if e.kind == NIC_KIND and e.action == "activate" and e.time >= t0)
    backup_replies = sorted((r for r in answered if r.send_time >= t0 - 2.0 and r.answered_by != primary
                             and r.reply_time is not None and r.reply_time >= t0), key=lambda r: r.reply_time)
    first_backup = backup_replies[0] if backup_replies else None
    lost_window_end = first_backup.send_time if first_backup else math.inf
    is_delay = delay_fault if delay_fault is not None else fault.kind == "delay"
    baseline = statistics.median(before) if before else None
    return RunMetrics(
        **base,
        fault_time=t0,
        delivered_ratio_after_fault=(sum(1 for r in after if r.rtt_ms is not None) / len(after)) if after else None,
        detection_s=(activations[0] - t0) if activations else None,
        failover_s=(first_backup.reply_time - t0) if first_backup else None,
        lost_during_failover=sum(1 for r in after if r.rtt_ms is None and r.send_time < lost_window_end),
        recovery_s=_recovery(after, t0, baseline, threshold, floor_ms) if is_delay and baseline is not None else None,
        baseline_rtt_ms=baseline,
    )


MASKED_AFTER = 3  # replies under the limit in a row right after a fault: the fault never showed


def _recovery(after: Sequence[PacketRow], t0: float, baseline: float, threshold: float,
              floor_ms: float) -> float | None:
    """Seconds from the fault to the first reply back under the limit after RTTs went over it.

    0 when the first MASKED_AFTER replies after the fault were all under it: a later spike
    is then jitter on the path that masked the fault, not the fault showing.
    """
    limit = max(threshold * baseline, baseline + floor_ms)
    went_high = False
    low_in_a_row = 0
    for r in after:
        high = r.rtt_ms is None or r.rtt_ms > limit
        if high:
            went_high = True
        elif went_high:
            return r.reply_time - t0
        else:
            low_in_a_row += 1
            if low_in_a_row >= MASKED_AFTER:
                return 0.0
    return 0.0 if not went_high else None


def _most_common(names: Iterable[str]) -> str | None:
    counts: dict[str, int] = {}
    for n in names:
        if n:
            counts[n] = counts.get(n, 0) + 1
    return max(counts, key=counts.__getitem__) if counts else None


def aggregate(runs: Sequence[RunMetrics]) -> dict[str, Stat]:
    """Mean, std (sample; 0 for one run), min and max of every numeric metric present in the runs."""
    out: dict[str, Stat] = {}
    names = list(NUMERIC) + sorted({f"throughput_mbps.{k}" for r in runs for k in r.throughput_mbps})
    for name in names:
        values = [v for v in (_get(r, name) for r in runs) if v is not None]
        if values:
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            out[name] = Stat(statistics.fmean(values), std, min(values), max(values), len(values))
    return out


def _get(run: RunMetrics, name: str) -> float | None:
    if name.startswith("throughput_mbps."):
        return run.throughput_mbps.get(name.split(".", 1)[1])
    value = getattr(run, name)
    return None if value is None else float(value)


@dataclass(frozen=True)
class VariantSummary:
    """A variant's runs and their aggregate."""

    name: str
    runs: tuple[RunMetrics, ...]
    stats: dict[str, Stat]

    def mean(self, metric: str) -> float | None:
        stat = self.stats.get(metric)
        return stat.mean if stat else None


@dataclass(frozen=True)
class FlowSummary:
    """One prober flow's numbers in every variant."""

    name: str
    variants: dict[str, VariantSummary]

    def __getitem__(self, variant: str) -> VariantSummary:
        return self.variants[variant]


@dataclass(frozen=True)
class Summary:
    """What summary.json holds: per prober flow, every variant's runs and aggregate.

    `variants` is the headline flow's (the experiment's `headline`, else its first probe): what the
    short table shows and what `summary[variant]` gives; `flow(name)` gives any flow's.
    """

    experiment: str
    variants: dict[str, VariantSummary]
    flows: dict[str, FlowSummary] = field(default_factory=dict)
    headline: str = ""

    def __getitem__(self, variant: str) -> VariantSummary:
        return self.variants[variant]

    def flow(self, name: str) -> FlowSummary:
        """The summary of prober flow `name` (KeyError naming the flows there are)."""
        if name not in self.flows:
            raise KeyError(f"no flow {name!r} in the summary (flows: {', '.join(self.flows) or 'none'})")
        return self.flows[name]

    def to_dict(self) -> dict:
        def variants(vs: dict[str, VariantSummary]) -> dict:
            return {name: {"runs": [asdict(r) for r in v.runs],
                           "aggregate": {k: asdict(s) for k, s in v.stats.items()}} for name, v in vs.items()}
        return {"experiment": self.experiment, "headline": self.headline, "variants": variants(self.variants),
                "flows": {name: {"variants": variants(f.variants)} for name, f in self.flows.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> "Summary":
        known = {f.name for f in fields(RunMetrics)}

        def variants(raw: dict) -> dict[str, VariantSummary]:
            out = {}
            for name, v in raw.items():
                runs = tuple(RunMetrics(**{k: x for k, x in r.items() if k in known}) for r in v["runs"])
                out[name] = VariantSummary(name, runs, {k: Stat(**s) for k, s in v["aggregate"].items()})
            return out
        flows = {name: FlowSummary(name, variants(f["variants"])) for name, f in data.get("flows", {}).items()}
        return cls(data["experiment"], variants(data["variants"]), flows, data.get("headline", ""))


def summarize(name: str, packets: Sequence[PacketRow], events: Sequence[EventRow], *,
              primaries: dict[str, str] | None = None, flow: str | None = None,
              throughput: dict[tuple[str, int], dict[str, float]] | None = None,
              variant_order: Sequence[str] = (), flow_order: Sequence[str] = (),
              flow_primaries: dict[str, dict[str, str]] | None = None) -> Summary:
    """Per prober flow, group its rows by (variant, repetition), compute each run's metrics, aggregate per variant.

    `flow` is the headline (default: the first of `flow_order`, else of the flows in `packets`);
    `flow_primaries[flow][variant]` is the host that flow's requests go to (else `primaries[variant]`).
    """
    seen = list(dict.fromkeys(r.flow for r in packets))
    names = list(dict.fromkeys([*(f for f in flow_order if f in seen), *seen]))
    headline = flow or (names[0] if names else "probe")
    if headline not in names:
        names.insert(0, headline)
    flows = {f: _flow_summary(f, [r for r in packets if r.flow == f], events,
                              {**(primaries or {}), **(flow_primaries or {}).get(f, {})}, throughput, variant_order)
             for f in names}
    return Summary(name, flows[headline].variants, flows, headline)


def _flow_summary(flow: str, packets: Sequence[PacketRow], events: Sequence[EventRow], primaries: dict[str, str],
                  throughput: dict[tuple[str, int], dict[str, float]] | None,
                  variant_order: Sequence[str]) -> FlowSummary:
    groups: dict[tuple[str, int], list[PacketRow]] = {}
    for r in packets:
        groups.setdefault((r.variant, r.repetition), []).append(r)
    keys = set(groups) | set(throughput or {})
    order = list(variant_order) + sorted({v for v, _ in keys} - set(variant_order))
    variants: dict[str, VariantSummary] = {}
    for variant in order:
        runs = []
        for rep in sorted(rep for v, rep in keys if v == variant):
            evs = [e for e in events if e.variant == variant and e.repetition == rep]
            tput = (throughput or {}).get((variant, rep), {})
            if groups.get((variant, rep)):
                runs.append(run_metrics(groups[(variant, rep)], evs, primary=primaries.get(variant),
                                        throughput=tput))
            else:
                runs.append(RunMetrics(variant, rep, 0, 0, 0.0, None, None, None, throughput_mbps=tput))
        if runs:
            variants[variant] = VariantSummary(variant, tuple(runs), aggregate(runs))
    return FlowSummary(flow, variants)


def read_packets(path: Path) -> list[PacketRow]:
    """Rows of a packets.csv file."""
    with open(path, newline="", encoding="utf-8") as f:
        return [PacketRow(r["variant"], int(r["repetition"]), int(r["seq"]), float(r["send_time"]),
                          float(r["rtt_ms"]) if r["rtt_ms"] else None, r.get("answered_by") or "",
                          r.get("flow") or "probe") for r in csv.DictReader(f)]


def read_events(path: Path) -> list[EventRow]:
    """Rows of an events.csv file."""
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [EventRow(float(r["time"]), r["variant"], int(r["repetition"]), r["kind"], r["action"], r["target"],
                         r.get("detail") or "") for r in csv.DictReader(f)]
