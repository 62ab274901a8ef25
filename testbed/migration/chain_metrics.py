"""A chain's QoS from its sink's frames: fps per window, fluctuation, downtime, frames lost, recovery after each move.

Per run (chain-<name>.json and frames-<name>.log in each run's directory, migrations.jsonl for
the moves): processed frames per second at the sink in windows of `window_s` from the chain's
start; its mean and standard deviation over the windows (the fluctuation of Fig. 11b); downtime,
the share of time (after the first window) during which the rate over the last window was under
`below` x the requested rate (a sliding window, so no alignment of windows to outages; Fig. 11a); frames lost, the sequence
numbers missing up to the last one received; and for each migration, the seconds from its end to
the first window at the requested rate again. `add_to_run` puts them, per variant with mean and
spread over repetitions and each variant against the baseline (`reset` or `none`), into
summary.json (key `chains`) and report.md.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Sequence

from testbed.experiment.report import add_sections

METRICS = ("mean_fps", "fps_std", "downtime_pct", "frames_lost")
BASELINES = ("reset", "none")


def read_frames(path: Path) -> list[tuple[int, float]]:
    """(seq, receive time) of each frame the sink logged."""
    out = []
    for line in path.read_text().splitlines() if path.exists() else ():
        parts = line.split()
        if len(parts) >= 2:
            out.append((int(parts[0]), float(parts[1])))
    return out


def window_fps(frames: Sequence[tuple[int, float]], t0: float, duration_s: float, window_s: float) -> list[float]:
    """Frames per second in each whole window of `window_s` from `t0` to `t0 + duration_s` (pure)."""
    n = int(duration_s // window_s)
    counts = [0] * n
    for _, t in frames:
        i = int((t - t0) // window_s)
        if 0 <= i < n:
            counts[i] += 1
    return [c / window_s for c in counts]


def below_rate_s(times: Sequence[float], start: float, end: float, window_s: float, threshold: float,
                 step_s: float = 0.01) -> float:
    """Seconds of [start, end] during which the rate over the last `window_s` was under `threshold` frames/s (pure)."""
    times, lo, hi, below, n = sorted(times), 0, 0, 0, int((end - start) / step_s)
    for i in range(n):
        t = start + i * step_s
        while hi < len(times) and times[hi] <= t:
            hi += 1
        while lo < hi and times[lo] <= t - window_s:
            lo += 1
        below += (hi - lo) / window_s < threshold
    return below * step_s


def run_metrics(frames: Sequence[tuple[int, float]], record: dict, moves: Sequence[dict] = ()) -> dict:
    """The numbers of one run of a chain (pure)."""
    t0, window, rate = record["t0"], record["window_s"], record["rate"]
    fps = window_fps(frames, t0, record["duration_s"], window)
    good = record["below"] * rate
    seqs = {s for s, _ in frames}
    lost = (max(seqs) - min(seqs) + 1 - len(seqs)) if seqs else 0
    after = []
    for m in moves:
        end = m["started"] + m["total_s"]
        first = next((t0 + i * window for i, f in enumerate(fps) if t0 + i * window >= end and f >= good), None)
        after.append({"vf": m.get("vf"), "src": m["src"], "dst": m["dst"], "mode": m["mode"], "reset": m.get("reset", False),
                      "at_s": round(end - t0, 3), "downtime_s": round(m["downtime_s"], 3),
                      "recovered_after_s": None if first is None else round(max(first - end, 0.0), 3)})
    return {"healing": record["healing"], "windows": len(fps), "fps": fps,
            "mean_fps": statistics.fmean(fps) if fps else 0.0,
            "fps_std": statistics.pstdev(fps) if len(fps) > 1 else 0.0,
            "downtime_pct": 100.0 * below_rate_s([t for _, t in frames], t0 + window, t0 + record["duration_s"],
                                                 window, good) / max(record["duration_s"] - window, 1e-9),
            "frames_lost": lost, "frames": len(frames), "failures": record.get("failures", []),
            "decisions": len(record.get("decisions", [])), "moves": after}


def _stat(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def compute(out: Path) -> dict[str, Any]:
    """The `chains` section for run directory `out` (empty when it ran no chain)."""
    variants: dict[str, dict] = {}
    for run_dir in sorted(p for p in Path(out).iterdir() if p.is_dir()):
        moves = [json.loads(line) for line in (run_dir / "migrations.jsonl").read_text().splitlines()
                 if line.strip()] if (run_dir / "migrations.jsonl").exists() else []
        for rec_path in sorted(run_dir.glob("chain-*.json")):
            record = json.loads(rec_path.read_text())
            name = record["chain"]
            frames = read_frames(run_dir / f"frames-{name}.log")
            mine = [m for m in moves if m.get("chain") == name]
            variant, _, rep = run_dir.name.rpartition("-r")
            entry = variants.setdefault(variant, {"healing": record["healing"], "runs": []})
            entry["runs"].append({"repetition": int(rep or 0), "chain": name, **run_metrics(frames, record, mine)})
    for entry in variants.values():
        entry["aggregate"] = {k: _stat([float(r[k]) for r in entry["runs"]]) for k in METRICS}
    if not variants:
        return {}
    return {"variants": variants, "compared": compare(variants)}


def compare(variants: dict[str, dict]) -> dict[str, dict]:
    """Each variant against the baseline (the first whose healing is reset or none): relative changes in % (pure)."""
    base = next((n for n, v in variants.items() if v["healing"] in BASELINES), None)
    if base is None:
        return {}
    b = {k: variants[base]["aggregate"][k]["mean"] for k in METRICS}
    out = {}
    for name, v in variants.items():
        if name == base:
            continue
        m = {k: v["aggregate"][k]["mean"] for k in METRICS}
        out[name] = {"baseline": base,
                     "downtime_lower_pct": 100 * (1 - m["downtime_pct"] / b["downtime_pct"]) if b["downtime_pct"] else None,
                     "mean_fps_better_pct": 100 * (m["mean_fps"] / b["mean_fps"] - 1) if b["mean_fps"] else None,
                     "fluctuation_lower_pct": 100 * (1 - m["fps_std"] / b["fps_std"]) if b["fps_std"] else None}
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f} %"


def report_section(sections: dict) -> str:
    """report.md's chain section: a row per variant, then each variant against the baseline."""
    lines = ["## Virtual-function chains (the VFO's healing)", "",
             "| variant | healing | runs | mean fps | fluctuation (fps std) | downtime % | frames lost | moves |"
             " recovered after each move (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, v in sections["variants"].items():
        a = v["aggregate"]
        moves = [m for r in v["runs"] for m in r["moves"]]
        rec = ", ".join("—" if m["recovered_after_s"] is None else f"{m['recovered_after_s']:g}" for m in moves)
        lines.append(f"| {name} | {v['healing']} | {a['mean_fps']['n']} | {a['mean_fps']['mean']:.2f} "
                     f"| {a['fps_std']['mean']:.2f} | {a['downtime_pct']['mean']:.1f} | {a['frames_lost']['mean']:.0f} "
                     f"| {len(moves)} | {rec or 'none'} |")
    lines.append("")
    for name, c in sections["compared"].items():
        lines.append(f"- Here: `{name}` against `{c['baseline']}`: downtime {_pct(c['downtime_lower_pct'])} lower, "
                     f"mean fps {_pct(c['mean_fps_better_pct'])} better, fluctuation {_pct(c['fluctuation_lower_pct'])} "
                     "lower.")
    lines += ["", "Downtime = share of time during which the rate over the last window was under the `below` fraction "
              "of the requested rate. `cold` restarts a VF "
              "from its image; `state-transfer` copies its state directory (application-level, not CRIU live "
              "migration, which fails on this machine); `reset` restarts every VF of the chain one after another."]
    return "\n".join(lines)


def add_to_run(out: Path) -> dict[str, Any]:
    """Add the `chains` section to summary.json and report.md of `out` (nothing when it ran no chain)."""
    out = Path(out)
    sections = compute(out)
    if not sections:
        return sections
    add_sections(out, sections, report_section(sections), key="chains")
    return sections
