"""Regenerates summary.json, the plots and report.md of a run directory from its CSVs and manifest."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

from testbed.experiment.metrics import (NIC_KIND, EventRow, Summary, VariantSummary, read_events, read_packets,
                                        summarize)
from testbed.failsafe.counters import COUNTERS_FILE, COUNTER_COLUMNS, read_nic_counters
from testbed.experiment.plots import plot_bars, plot_delivery, plot_rtt

log = logging.getLogger(__name__)

COLUMNS = (("delivered_ratio", "delivered", "{:.3f}"), ("delivered_ratio_after_fault", "delivered after fault", "{:.3f}"),
           ("rtt_p50_ms", "RTT p50 ms", "{:.2f}"), ("rtt_p99_ms", "RTT p99 ms", "{:.2f}"),
           ("detection_s", "detection s", "{:.3f}"), ("failover_s", "failover s", "{:.3f}"),
           ("lost_during_failover", "lost in failover", "{:.1f}"), ("recovery_s", "recovery s", "{:.3f}"),
           ("resets", "TCP resets", "{:.1f}"))


def _cell(v: VariantSummary, metric: str, fmt: str) -> str:
    stat = v.stats.get(metric)
    if stat is None:
        return "-"
    text = fmt.format(stat.mean)
    return text + (f" ± {fmt.format(stat.std)}" if stat.n > 1 else "")


def summary_table(summary: Summary, all_flows: bool = False) -> str:
    """The summary as a Markdown table, mean ± std over repetitions: one row per variant of the headline
    flow, or (`all_flows`) one row per prober flow and variant, with a flow column."""
    rows: list[tuple[str, VariantSummary]] = []
    if all_flows and summary.flows:
        rows = [(f.name, v) for f in summary.flows.values() for v in f.variants.values()]
    else:
        rows = [(summary.headline, v) for v in summary.variants.values()]
    cols = [c for c in COLUMNS if any(c[0] in v.stats for _, v in rows)]
    tput = sorted({k for _, v in rows for k in v.stats if k.startswith("throughput_mbps.")})
    lead = ["flow", "variant"] if all_flows else ["variant"]
    head = [*lead, "runs", *[c[1] for c in cols], *[f"{k.split('.', 1)[1]} Mbit/s" for k in tput]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for flow, v in rows:
        cells = [*([flow] if all_flows else []), v.name, str(len(v.runs)),
                 *[_cell(v, m, f) for m, _, f in cols], *[_cell(v, k, "{:.1f}") for k in tput]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def counters_table(rows: Sequence[dict]) -> str:
    """The NICs' failover counters (nic_counters.jsonl rows) as a Markdown table, one row per NIC and run."""
    if not rows:
        return "No NIC counters were saved."
    names = [k for k in COUNTER_COLUMNS if any(k in r.get("counters", {}) for r in rows)]
    lines = ["| run | NIC | per backup | " + " | ".join(n.replace("_", " ") for n in names) + " |",
             "|" + "---|" * (3 + len(names))]
    for r in rows:
        c = r.get("counters", {})
        if "error" in r:
            lines.append(f"| {r['variant']} r{r['repetition']} | {r['node']} | {r['error'][:60]} |"
                         + " |" * len(names))
            continue
        per = ", ".join(f"{ip}: {n}" for ip, n in c.get("per_backup", {}).items()) or "-"
        lines.append(f"| {r['variant']} r{r['repetition']} | {r['node']} | {per} | "
                     + " | ".join(str(c.get(n, "-")) for n in names) + " |")
    return "\n".join(lines)


def events_table(events: Sequence[EventRow], t0: float | None) -> str:
    """Faults and NIC transitions as a Markdown table, times relative to the first event of each run."""
    lines = ["| run | t (s) | kind | action | target | detail |", "|---|---|---|---|---|---|"]
    starts: dict[tuple[str, int], float] = {}
    for e in sorted(events, key=lambda e: (e.variant, e.repetition, e.time)):
        base = starts.setdefault((e.variant, e.repetition), e.time)
        detail = e.detail.replace("|", "/")[:90]
        lines.append(f"| {e.variant} r{e.repetition} | {e.time - base:.3f} | {e.kind} | {e.action} | {e.target} | {detail} |")
    return "\n".join(lines)


def backends_text(runs: list[dict]) -> str:
    """The emulation backends the runs used: once where all runs agree, by variant where they differ."""
    if not runs:
        return "no run completed"
    b = runs[0].get("backends", {})
    notes = []
    if b.get("link") == "userspace":
        notes.append("links emulated by the testbed's userspace link emulator (this kernel has no sch_netem)")
    elif b.get("link"):
        notes.append(f"links emulated by {b['link']}")
    if b.get("ovs_datapath") == "userspace":
        notes.append("Open vSwitch with the userspace datapath (netdev; no kernel module here)")
    elif b.get("ovs_datapath"):
        notes.append(f"Open vSwitch {b['ovs_datapath']} datapath")
    same = {k: v for k, v in b.items() if all(r.get("backends", {}).get(k) == v for r in runs)}
    listing = ", ".join(f"{k}={v}" for k, v in same.items())
    per_variant: dict[str, dict[str, list]] = {}  # what differs between runs (e.g. a variant's NIC data path)
    for r in runs:
        mine = per_variant.setdefault(r.get("variant", "?"), {})
        for k, v in r.get("backends", {}).items():
            if k not in same and v not in mine.setdefault(k, []):
                mine[k].append(v)
    extra = "".join(f"\n- `{name}`: " + ", ".join(f"{k}={' / '.join(map(str, vs))}" for k, vs in d.items())
                    for name, d in per_variant.items() if d)
    return "; ".join(notes) + f".\n\nBackends: {listing}" + (f"; by variant:{extra}" if extra else "")


def _topology_text(spec: dict) -> str:
    topo = spec.get("topology", {})
    lines = []
    for site in topo.get("sites", []):
        hosts = ", ".join(f"{h['name']} ({h['ip']}{', NIC ' + h['nic']['ip'] if h.get('nic') else ''})"
                          for h in site.get("hosts", []))
        lines.append(f"- site `{site['name']}` ({site.get('kind', 'mec')}): {hosts}")
    for w in topo.get("wan", []):
        lines.append(f"- WAN {w['a']}-{w['b']}: forward {w['forward']}, reverse {w['reverse']}")
    return "\n".join(lines)


def report_main(run_dir: Path) -> Path:
    """Recompute summary.json, plots and report.md in `run_dir` from packets.csv/events.csv; returns report.md."""
    run_dir = Path(run_dir)
    man = json.loads((run_dir / "manifest.json").read_text()) if (run_dir / "manifest.json").exists() else {}
    spec = man.get("spec", {})
    packets = read_packets(run_dir / "packets.csv")
    events = read_events(run_dir / "events.csv")
    order = [v["name"] for v in spec.get("variants", [])]
    throughput: dict[tuple[str, int], dict[str, float]] = {}
    for r in man.get("runs", []):
        if r.get("throughput_mbps"):
            throughput[(r["variant"], int(r["repetition"]))] = r["throughput_mbps"]
    name = man.get("experiment", run_dir.name)
    probes = [t for t in spec.get("traffic", []) if "rate" in t]
    flow_primaries = {t["name"]: {v["name"]: v.get("to") or t.get("dst", "") for v in spec.get("variants", [])}
                      for t in probes}
    summary = summarize(name, packets, events, primaries=man.get("primaries"), throughput=throughput,
                        variant_order=order, flow=spec.get("headline"), flow_order=[t["name"] for t in probes],
                        flow_primaries=flow_primaries)
    (run_dir / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2))
    variants = list(summary.variants)
    plots = []
    if packets:
        flows = list(summary.flows) or None
        plots.append(plot_rtt(packets, events, variants, run_dir / "rtt.png", f"{name}: RTT per request",
                              flows=flows))
        plots.append(plot_delivery(packets, events, variants, run_dir / "delivery.png",
                                   f"{name}: delivered rate and RTT", flows=flows))
    if summary.variants:
        plots.append(plot_bars(summary, run_dir / "bars.png", f"{name}: throughput and latency"))
    text = _report_text(man, spec, summary, events, plots, read_nic_counters(run_dir / COUNTERS_FILE))
    path = run_dir / "report.md"
    path.write_text(text)
    from testbed.experiment.mobility_metrics import add_to_run  # switches and moves: a section of their own
    add_to_run(run_dir)
    log.info("report written to %s", path)
    return path


def add_sections(run_dir: Path, sections: dict, markdown: str, key: str | None = None) -> None:
    """Merge `sections` into the run's summary.json (under `key`, or at the top) and append `markdown` to report.md."""
    path = Path(run_dir) / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    summary.update({key: sections} if key else sections)
    path.write_text(json.dumps(summary, indent=2))
    report = Path(run_dir) / "report.md"
    if report.exists():
        report.write_text(report.read_text().rstrip("\n") + "\n\n" + markdown + "\n")


def _report_text(man: dict, spec: dict, summary: Summary, events: list[EventRow], plots: list[Path],
                 counters: Sequence[dict] = ()) -> str:
    faults = spec.get("faults", [])
    nic_events = sum(1 for e in events if e.kind == NIC_KIND)
    parts = [
        f"# {man.get('experiment', summary.experiment)}",
        man.get("description", ""),
        "## What ran",
        f"- source revision `{man.get('git_revision', '?')}`, created {man.get('created', '?')}, kernel "
        f"{man.get('machine', {}).get('kernel', '?')}",
        f"- topology `{spec.get('topology_ref', '?')}`, seed {spec.get('seed', '?')}, "
        f"{spec.get('repetitions', '?')} repetition(s), variants: "
        + ", ".join(f"`{v['name']}` (NIC {'on' if v.get('nic') else 'off'})" for v in spec.get("variants", [])),
        "- traffic: " + "; ".join(
            f"{t['name']} {t['src']}→{t['dst']}" + (f" {t['proto']}:{t['port']} {t['rate']:g}/s x {t['count']}"
                                                    if "rate" in t else f" iperf3 {t.get('duration_s', '?')} s")
            for t in spec.get("traffic", [])),
        "- faults: " + ("; ".join(f"{f['kind']} {f['mode']} on {f.get('host') or f.get('site') or f.get('link')} "
                                   f"at {_trigger(f['at'])}" + (f" until {_trigger(f['until'])}" if f.get("until") else "")
                                   + (f" for {f['duration_s']:g} s" if f.get("duration_s") else "") for f in faults)
                        or "none"),
        "## Topology",
        _topology_text(spec),
        "## Emulation backends",
        backends_text(man.get("runs", [])),
        "## Results",
        f"Headline flow `{summary.headline}`; every prober flow:" if len(summary.flows) > 1 else None,
        summary_table(summary, all_flows=True),
        "Times in seconds from the first fault; detection = first NIC fail-safe activation; failover = first reply "
        "from a host other than the probed one; recovery (delay faults) = first RTT back under max(1.5 x baseline, "
        "baseline + 5 ms).",
        "## The paper's claim next to ours",
        *[f"- Paper: {c}" for c in spec.get("claims", [])],
        "- Here: " + _our_claim(summary),
        "## Fail-safe NIC counters (end of each run)",
        counters_table(counters),
        "per backup = packets sent to each backup; relayed = packets redirected for a client that is itself a NIC; "
        "dropped = critical packets with no way out; no backup = flows that found no healthy backup; passive = "
        "failures seen from a RST or ICMP unreachable; the rest are bounds hit (early drops, replay store overflows, "
        "evicted neighbours).",
        "## Plots",
        *[f"![{p.stem}]({p.name})" for p in plots],
        f"## Events ({nic_events} NIC transitions)",
        events_table(events, None),
        "",
    ]
    return "\n\n".join(p for p in parts if p is not None)


def _trigger(t: dict | None) -> str:
    if not t:
        return "?"
    return f"packet {t['packet']}" if t.get("packet") is not None else f"{t.get('time_s', 0):g}s"


def _our_claim(summary: Summary) -> str:
    bits = []
    for name, v in summary.variants.items():
        after = v.mean("delivered_ratio_after_fault")
        rec = v.mean("recovery_s")
        p50 = v.mean("rtt_p50_ms")
        text = f"`{name}`: "
        if after is not None:
            text += f"{after:.0%} delivered after the fault"
        if rec is not None:
            text += f", RTT back to normal {rec:.2f} s after the fault"
        if p50 is not None:
            text += f"{', ' if after is not None or rec is not None else ''}median RTT {p50:.2f} ms"
        bits.append(text)
    return "; ".join(bits) or "no data"
