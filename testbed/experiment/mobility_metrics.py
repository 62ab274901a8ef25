"""Numbers per traffic switch and per user move, from packets.csv and the runs' switches/moves logs.

Per switch (Han et al.'s definition, at the receiver: the prober that gets the replies):
`interruption_ms` = T_q - T_p, where p is the last reply from the old instance and q the first
reply from the new one; `lost` = requests sent between p and q that got no reply; for every
other prober flow, `background_delivered` = the share of its requests sent while the switch was
under way (from its start, or p, to its end, or q, whichever is wider, 0.5 s each side) that got a
reply. Per move: the same interruption and loss for the flows the moved device sends; per service
handover (a replica switch or a migration that followed the user): the same T_q - T_p between the old
and the new replica on the followed device's flows. The
sections go into summary.json under `switches` and `moves`, beside the per-flow summary
(metrics.py), and into report.md with the paper's numbers.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Iterable, Sequence

from testbed.experiment.metrics import PacketRow, read_packets
from testbed.experiment.mobility_actions import MOVES_FILE, SWITCHES_FILE
from testbed.replication.runtime import HANDOVERS, SYNCS

MARGIN_S = 0.5  # background delivery is counted this long before and after a switch
PAPER_REPLICATION = ("Farris et al.: proactive replicas avoid the long reactive migration (start-up about 1 s with "
                     "the image pre-cached; over 20 s / over 70 s when the 204 MB image must be transferred).")
PAPER_SWITCH = ("Han et al. (EdgePlex): make-before-break cuts T_M = T_q - T_p from longer than a second to "
                "less than 100 ms; the video traffic and the background traffic between two other locations "
                "were not affected.")


def _gap(rows: Sequence[PacketRow], old: Iterable[str] | None, new: Iterable[str] | None,
         after: float) -> dict[str, Any]:
    """T_q - T_p over `rows` (one flow): q = the first reply by `new` (any answer when None) to a request
    sent at or after `after`, p = the last reply by `old` (any) before q; lost requests between them."""
    answered = sorted((r for r in rows if r.reply_time is not None), key=lambda r: r.reply_time)
    new_set, old_set = (set(new) if new else None), (set(old) if old else None)
    q = next((r for r in answered if r.send_time >= after and (new_set is None or r.answered_by in new_set)), None)
    if q is None:
        return {"interruption_ms": None, "lost": None, "t_p": None, "t_q": None}
    before = [r for r in answered if r.reply_time < q.reply_time and (old_set is None or r.answered_by in old_set)]
    p = before[-1] if before else None
    if p is None:
        return {"interruption_ms": None, "lost": None, "t_p": None, "t_q": q.reply_time}
    lost = sum(1 for r in rows if r.rtt_ms is None and p.send_time < r.send_time < q.send_time)
    return {"interruption_ms": round((q.reply_time - p.reply_time) * 1000, 3), "lost": lost,
            "t_p": p.reply_time, "t_q": q.reply_time}


def _delivered(rows: Sequence[PacketRow], start: float, end: float) -> float | None:
    sent = [r for r in rows if start <= r.send_time <= end]
    return round(sum(r.rtt_ms is not None for r in sent) / len(sent), 4) if sent else None


def switch_metrics(record: dict, flows: dict[str, Sequence[PacketRow]], to_service: set[str]) -> dict:
    """The numbers of one switch: `flows` maps flow name to its rows in this run; `to_service` names the
    flows sent to the switched address."""
    out: dict[str, Any] = {k: record.get(k) for k in ("service_ip", "from", "to", "mode", "steps_ms")}
    out["total_ms"] = round((record["ended"] - record["started"]) * 1000, 3)
    per_flow = {name: _gap(rows, [record["from"]], [record["to"]], record["started"])
                for name, rows in flows.items() if name in to_service}
    out["flows"] = per_flow
    known = [g for g in per_flow.values() if g["interruption_ms"] is not None]
    out["interruption_ms"] = max((g["interruption_ms"] for g in known), default=None)
    out["lost"] = sum(g["lost"] for g in known) if known else None
    start = min([record["started"]] + [g["t_p"] for g in known]) - MARGIN_S
    end = max([record["ended"]] + [g["t_q"] for g in known]) + MARGIN_S
    out["background_delivered"] = {name: _delivered(rows, start, end) for name, rows in flows.items()
                                   if name not in to_service}
    return out


def move_metrics(record: dict, flows: dict[str, Sequence[PacketRow]], from_device: set[str]) -> dict:
    """The numbers of one move, for the flows the moved device sends."""
    out: dict[str, Any] = {k: record.get(k) for k in ("host", "src", "dst", "gap_s", "detach_ms", "unattached_ms",
                                                       "controller_ms")}
    per_flow = {name: _gap(rows, None, None, record["detached"]) for name, rows in flows.items()
                if name in from_device}
    out["flows"] = per_flow
    known = [g for g in per_flow.values() if g["interruption_ms"] is not None]
    out["interruption_ms"] = max((g["interruption_ms"] for g in known), default=None)
    out["lost"] = sum(g["lost"] for g in known) if known else None
    settled = record.get("handover_ended", record["acked"])  # the move, and any service handover it caused, done
    after = [r.rtt_ms for name, rows in flows.items() if name in from_device for r in rows
             if r.rtt_ms is not None and settled + 0.5 <= r.send_time <= settled + 2.5]
    out["rtt_after_ms"] = round(statistics.median(after), 3) if after else None
    out["handovers"] = record.get("handovers", [])
    return out


def handover_gap(record: dict, flows: dict[str, Sequence[PacketRow]], probes: list[dict]) -> dict:
    """T_q - T_p of one service handover on the followed device's flows: the last reply from the old
    replica (`from`) to the first from the new one (`to`), and the requests lost between."""
    gaps = [_gap(rows, [record["from"]], [record["to"]], record["started"]) for name, rows in flows.items()
            if any(t["name"] == name and t["src"] == record.get("device") for t in probes)]
    known = [g for g in gaps if g["interruption_ms"] is not None]
    return {"interruption_ms": max((g["interruption_ms"] for g in known), default=None),
            "lost": sum(g["lost"] for g in known) if known else None}


def _handovers(items: list[dict]) -> dict[str, dict]:
    """Per variant: handovers made, their total and per-phase times (ms), bytes copied."""
    out: dict[str, dict] = {}
    for variant in dict.fromkeys(i["variant"] for i in items):
        mine = [i for i in items if i["variant"] == variant]
        phases = sorted({k for i in mine for k in i["phases_ms"]})
        out[variant] = {"count": len(mine), "mode": mine[0]["mode"],
                        "total_ms": _stats([(i["ended"] - i["started"]) * 1000 for i in mine]),
                        "phases_ms": {k: _stats([i["phases_ms"][k] for i in mine if k in i["phases_ms"]])
                                      for k in phases},
                        "bytes": _stats([i["bytes"] for i in mine]),
                        "interruption_ms": _stats([i["interruption_ms"] for i in mine
                                                   if i.get("interruption_ms") is not None]),
                        "lost": _stats([i["lost"] for i in mine if i.get("lost") is not None])}
    return out


def _syncs(items: list[dict]) -> dict[str, dict]:
    """Per variant: state copies, bytes and time each."""
    return {v: {"count": len(mine), "bytes": _stats([i["bytes"] for i in mine]), "ms": _stats([i["ms"] for i in mine])}
            for v in dict.fromkeys(i["variant"] for i in items)
            for mine in [[i for i in items if i["variant"] == v]]}


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _stats(values: list[float]) -> dict[str, float] | None:
    return {"mean": round(statistics.fmean(values), 3), "max": round(max(values), 3)} if values else None


def _by_variant(items: list[dict], extra: Iterable[str] = ()) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for variant in dict.fromkeys(i["variant"] for i in items):
        mine = [i for i in items if i["variant"] == variant]
        entry: dict[str, Any] = {"count": len(mine)}
        for key in ("interruption_ms", "lost", *extra):
            entry[key] = _stats([i[key] for i in mine if i.get(key) is not None])
        if any("background_delivered" in i for i in mine):
            values = [v for i in mine for v in i["background_delivered"].values() if v is not None]
            entry["background_delivered_min"] = min(values) if values else None
        entry["mode"] = mine[0].get("mode")
        out[variant] = entry
    return out


def compute(run_dir: Path) -> dict[str, Any]:
    """The `switches` and `moves` sections of one experiment's run directory (empty when it had none)."""
    man = json.loads((run_dir / "manifest.json").read_text()) if (run_dir / "manifest.json").exists() else {}
    spec = man.get("spec", {})
    ips = {h["name"]: h["ip"].split("/")[0] for s in spec.get("topology", {}).get("sites", []) for h in s["hosts"]}
    probes = [t for t in spec.get("traffic", []) if "rate" in t]
    packets = read_packets(run_dir / "packets.csv") if (run_dir / "packets.csv").exists() else []
    switches, moves, handovers, syncs = [], [], [], []
    for run in man.get("runs", []):
        variant, rep = run["variant"], int(run["repetition"])
        here = run_dir / Path(run.get("run_dir") or f"{variant}-r{rep}").name
        flows = {t["name"]: [r for r in packets if r.variant == variant and r.repetition == rep and r.flow == t["name"]]
                 for t in probes}
        for rec in _read_jsonl(here / SWITCHES_FILE):
            to_service = {t["name"] for t in probes if ips.get(t["dst"]) == rec["service_ip"]}
            switches.append({"variant": variant, "repetition": rep, **switch_metrics(rec, flows, to_service)})
        for rec in _read_jsonl(here / MOVES_FILE):
            mine = {t["name"] for t in probes if t["src"] == rec["host"]}
            moves.append({"variant": variant, "repetition": rep, **move_metrics(rec, flows, mine)})
        handovers += [{"variant": variant, "repetition": rep, **h, **handover_gap(h, flows, probes)}
                      for h in _read_jsonl(here / HANDOVERS)]
        syncs += [{"variant": variant, "repetition": rep, **s} for s in _read_jsonl(here / SYNCS)]
    out: dict[str, Any] = {}
    if switches:
        out["switches"] = {"by_variant": _by_variant(switches, ("total_ms",)), "each": switches}
    if moves:
        out["moves"] = {"by_variant": _by_variant(moves, ("unattached_ms", "controller_ms", "rtt_after_ms")),
                        "each": moves}
    if handovers:
        out["handovers"] = {"by_variant": _handovers(handovers), "each": handovers}
    if syncs:
        out["syncs"] = {"by_variant": _syncs(syncs)}
    return out


def _fmt(stats: dict | None, unit: str = "") -> str:
    return "–" if not stats else f"{stats['mean']:.1f}{unit} (max {stats['max']:.1f})"


def report_section(sections: dict[str, Any]) -> str:
    """Markdown for report.md: a table per section, and the paper's claim next to ours."""
    parts = []
    if "switches" in sections:
        rows = ["| variant | mode | switches | interruption T_q-T_p ms | lost | background delivered (min) | "
                "total ms |", "|---|---|---|---|---|---|---|"]
        for name, v in sections["switches"]["by_variant"].items():
            bg = v.get("background_delivered_min")
            rows.append(f"| {name} | {v['mode']} | {v['count']} | {_fmt(v['interruption_ms'])} | "
                        f"{_fmt(v['lost'])} | {'–' if bg is None else f'{bg:.1%}'} | {_fmt(v['total_ms'])} |")
        ours = "; ".join(f"`{n}` ({v['mode']}): T_q-T_p {_fmt(v['interruption_ms'], ' ms')}"
                         for n, v in sections["switches"]["by_variant"].items())
        parts += ["## Traffic switches (T_q - T_p at the receiver)", "\n".join(rows),
                  f"- Paper: {PAPER_SWITCH}", f"- Here: {ours}"]
    if "moves" in sections:
        rows = ["| variant | moves | interruption ms | lost | unattached ms | controller ms | RTT after ms |",
                "|---|---|---|---|---|---|---|"]
        for name, v in sections["moves"]["by_variant"].items():
            rows.append(f"| {name} | {v['count']} | {_fmt(v['interruption_ms'])} | {_fmt(v['lost'])} | "
                        f"{_fmt(v['unattached_ms'])} | {_fmt(v['controller_ms'])} | {_fmt(v['rtt_after_ms'])} |")
        parts += ["## User moves (last reply before the detach to the first after)", "\n".join(rows),
                  "RTT after = median RTT of requests sent 0.5-2.5 s after the move and any handover it caused ended."]
    if "handovers" in sections:
        rows = ["| variant | mode | handovers | interruption T_q-T_p ms | lost | total ms | phases ms | bytes copied |",
                "|---|---|---|---|---|---|---|---|"]
        for name, v in sections["handovers"]["by_variant"].items():
            phases = ", ".join(f"{k} {_fmt(s)}" for k, s in v["phases_ms"].items())
            rows.append(f"| {name} | {v['mode']} | {v['count']} | {_fmt(v.get('interruption_ms'))} | "
                        f"{_fmt(v.get('lost'))} | {_fmt(v['total_ms'])} | {phases} | {_fmt(v['bytes'])} |")
        parts += ["## Service handovers (replica switch or migration)", "\n".join(rows),
                  f"- Paper: {PAPER_REPLICATION}",
                  "- Here: " + "; ".join(f"`{n}` ({v['mode']}): {_fmt(v['total_ms'], ' ms')} per handover, "
                                         f"the user's interruption {_fmt(v.get('interruption_ms'), ' ms')}"
                                         for n, v in sections["handovers"]["by_variant"].items())]
    if "syncs" in sections:
        parts.append("State syncs: " + "; ".join(f"`{n}`: {v['count']} copies, {_fmt(v['bytes'], ' B')}, "
                                                 f"{_fmt(v['ms'], ' ms')}" for n, v in sections["syncs"]["by_variant"].items()))
    return "\n\n".join(parts)


def add_to_run(run_dir: Path) -> dict[str, Any]:
    """Add the sections to summary.json and report.md of `run_dir` (nothing when it had no switch or move)."""
    run_dir = Path(run_dir)
    sections = compute(run_dir)
    if not sections:
        return sections
    from testbed.experiment.report import add_sections  # report imports this module: imported when used

    add_sections(run_dir, sections, report_section(sections))
    return sections
