"""Migration and standby results of a run directory: measured numbers next to the papers' (migration.json, migration.md).

Per migration (migrations.jsonl of each run): the WAN rate, bytes sent, each phase, the downtime
from the source's stop to the destination's steer, and what the client saw (requests unanswered
around it, in the prober's packets.csv). Per standby (standbys.jsonl): bytes per checkpoint and
per second; at the primary's crash (its host_down event), the age of the latest checkpoint, the
updates lost (requests the primary answered minus the restored count) and the failover time to
the first request the standby answered.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

#: Cozzolino et al., Publication III, Table 1 (Podman/CRIU, 100 Mbit/s, 200 migrations).
COZZOLINO = {"downtime_s": 1.80, "downtime_sd": 0.05, "total_s": 1.96, "total_sd": 0.06, "state_bytes": 195175,
             "bw_mbit": 100}
#: Han et al., EdgePlex Table 1: MB transferred at each checkpoint interval (ms), 200 BGP updates/s.
HAN_MB = {100: 74.7, 200: 39.6, 500: 33.2, 1000: 36.6}


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _run_rows(rows: list[dict], run: str) -> list[dict]:
    variant, _, rep = run.rpartition("-r")
    return [r for r in rows if r["variant"] == variant and r["repetition"] == rep]


def client_gap(packets: list[dict], start: float, end: float) -> dict:
    """Requests sent in [start, end] that got no answer, and the span from the first to the last of them."""
    lost = sorted(float(p["send_time"]) for p in packets if not p["rtt_ms"] and start <= float(p["send_time"]) <= end)
    return {"lost": len(lost), "gap_s": (lost[-1] - lost[0]) if lost else 0.0}


def migrations(run_dir: Path, packets: list[dict]) -> list[dict]:
    out = []
    for m in _jsonl(run_dir / "migrations.jsonl"):
        seen = client_gap(packets, m["stopped"] - 0.05, m["started"] + m["total_s"] + 0.5)
        out.append({"run": run_dir.name, "mode": m["mode"], "src": m["src"], "dst": m["dst"],
                    "wan_rate_mbit": m.get("wan_rate_mbit"), "bytes": m["bytes"], "counter": m["counter"],
                    "phases_ms": {k: round(1000 * v, 1) for k, v in m["phases"].items()},
                    "downtime_s": m["downtime_s"], "total_s": m["total_s"], "client_lost": seen["lost"],
                    "client_gap_s": seen["gap_s"]})
    return out


def standbys(run_dir: Path, packets: list[dict], events: list[dict]) -> list[dict]:
    out = []
    for s in _jsonl(run_dir / "standbys.jsonl"):
        kill = next((float(e["time"]) for e in events if e["kind"] == "host_down" and e["action"] == "apply"
                     and e["target"] == s["primary"]), None)
        row = {k: v for k, v in s.items() if k != "checkpoint_log"}
        row["run"] = run_dir.name
        ckpts = [c for c in s["checkpoint_log"] if kill is None or c["taken"] <= kill]
        transfers = [c["received"] - c["taken"] for c in s["checkpoint_log"][1:]]
        row["transfer_ms_max"] = 1000 * max(transfers) if transfers else 0.0
        if kill is not None and ckpts:
            last = ckpts[-1]
            answered = sum(1 for p in packets if p["answered_by"] == s["primary"])
            row.update(crash_at=kill, state_age_ms=1000 * (kill - last["taken"]), restored_counter=last["counter"],
                       primary_answered=answered, updates_lost=answered - (last["counter"] or 0))
            if s["takeover"]:
                after = sorted(float(p["send_time"]) for p in packets if p["answered_by"] == s["standby"])
                row["failover_s"] = (after[0] - kill) if after else None
                row["client_lost"] = sum(1 for p in packets if not p["rtt_ms"] and float(p["send_time"]) >= kill - 0.05
                                         and (not after or float(p["send_time"]) <= after[0]))
        out.append(row)
    return out


def summarize(out: Path) -> dict:
    """migration.json's content for run directory `out`."""
    packets, events = _csv(out / "packets.csv"), _csv(out / "events.csv")
    result: dict = {"migrations": [], "standbys": [], "mode": "state-transfer (application-level, not CRIU)"}
    for run_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        run_packets, run_events = _run_rows(packets, run_dir.name), _run_rows(events, run_dir.name)
        result["migrations"] += migrations(run_dir, run_packets)
        result["standbys"] += standbys(run_dir, run_packets, run_events)
    return result


def markdown(summary: dict) -> str:
    """migration.md: each migration and standby, the paper's numbers beside them."""
    lines = []
    if summary["migrations"]:
        lines += ["## Migrations (" + summary["mode"] + ")", "",
                  f"Paper (Cozzolino et al., Podman/CRIU, {COZZOLINO['bw_mbit']} Mbit/s): downtime "
                  f"{COZZOLINO['downtime_s']:.2f} ± {COZZOLINO['downtime_sd']:.2f} s, total {COZZOLINO['total_s']:.2f} ± "
                  f"{COZZOLINO['total_sd']:.2f} s, state {COZZOLINO['state_bytes']} B.", "",
                  "| run | mode | from → to | WAN Mbit/s | bytes | phases (ms) | downtime s | total s | client lost | client gap s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for m in summary["migrations"]:
            phases = ", ".join(f"{k} {v:g}" for k, v in m["phases_ms"].items())
            lines.append(f"| {m['run']} | {m['mode']} | {m['src']} → {m['dst']} | {m['wan_rate_mbit'] or ''} | {m['bytes']} "
                         f"| {phases} | {m['downtime_s']:.3f} | {m['total_s']:.3f} | {m['client_lost']} "
                         f"| {m['client_gap_s']:.3f} |")
        lines.append("")
    if summary["standbys"]:
        lines += ["## Checkpointed standbys (" + summary["mode"] + ")", "",
                  "| run | standby | interval ms | checkpoints | B/checkpoint | B/s | paper MB | state age ms | updates lost | failover s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for s in summary["standbys"]:
            paper = HAN_MB.get(int(s["interval_ms"]), "")
            fail = s.get("failover_s")
            lines.append(f"| {s['run']} | {s['standby']} | {s['interval_ms']:g} | {s['checkpoints']} "
                         f"| {s['bytes_per_checkpoint']:.0f} | {s['bytes_per_s']:.0f} | {paper} "
                         f"| {s.get('state_age_ms', float('nan')):.0f} | {s.get('updates_lost', '')} "
                         f"| {'' if fail is None else f'{fail:.3f}'} |")
        lines.append("")
    return "\n".join(lines)


def write_report(out: Path) -> dict:
    """Write migration.json and migration.md into `out` when it holds migrations or standbys; the summary."""
    summary = summarize(out)
    if summary["migrations"] or summary["standbys"]:
        (out / "migration.json").write_text(json.dumps(summary, indent=2))
        (out / "migration.md").write_text(markdown(summary))
    return summary
