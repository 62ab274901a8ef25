"""Draws the paper's figures from packets/events rows: RTT per request (Fig. 10), delivery (Fig. 11), bars (Fig. 12).

Each prober flow gets its own panel (RTT, delivery) or bar group (bars), named after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from testbed.experiment.metrics import NOT_FAULTS, EventRow, PacketRow, Summary  # noqa: E402

COLORS = ("tab:orange", "tab:blue", "tab:green", "tab:red", "tab:purple", "tab:brown")


def _save(fig, path: Path, grids, legends=None) -> Path:
    """Grid and legend the axes, lay the figure out, write it as PNG and free it."""
    for ax in grids:
        ax.grid(alpha=0.3)
    for ax in (grids if legends is None else legends):
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _run(packets: Sequence[PacketRow], variant: str, rep: int = 0) -> list[PacketRow]:
    return sorted((p for p in packets if p.variant == variant and p.repetition == rep), key=lambda p: p.seq)


def flows_of(packets: Sequence[PacketRow]) -> list[str]:
    """The prober flows in `packets`, in order of first appearance."""
    return list(dict.fromkeys(p.flow for p in packets))


def _by_flow(packets: Sequence[PacketRow], flows: Sequence[str] | None) -> list[tuple[str, list[PacketRow]]]:
    names = list(flows) if flows else flows_of(packets)
    return [(f, [p for p in packets if p.flow == f]) for f in names] or [("probe", [])]


def fault_windows(rows: Sequence[PacketRow], events: Sequence[EventRow], variant: str,
                  rep: int = 0) -> list[tuple[float, float]]:
    """(first, last) request numbers of each fault's window in one run (to the last request if not undone)."""
    if not rows:
        return []
    evs = sorted((e for e in events if e.variant == variant and e.repetition == rep and e.kind not in NOT_FAULTS
                  and e.action in ("apply", "undo")), key=lambda e: e.time)

    def seq_at(t: float) -> float:
        return next((p.seq for p in rows if p.send_time >= t), rows[-1].seq + 1)

    windows, open_at = [], {}
    for e in evs:
        key = (e.kind, e.target)
        if e.action == "apply":
            open_at[key] = seq_at(e.time)
        elif key in open_at:
            windows.append((open_at.pop(key), seq_at(e.time)))
    windows += [(start, rows[-1].seq) for start in open_at.values()]
    return windows


def _shade(ax, windows: list[tuple[float, float]]) -> None:
    for i, (a, b) in enumerate(windows):
        ax.axvspan(a, b, color="grey", alpha=0.15, label="fault" if i == 0 else None)


def plot_rtt(packets: Sequence[PacketRow], events: Sequence[EventRow], variants: Sequence[str], path: Path,
             title: str, flows: Sequence[str] | None = None) -> Path:
    """Fig. 10 style: RTT of each request, one panel per flow, one line per variant (first repetition), faults shaded."""
    groups = _by_flow(packets, flows)
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 3.2 * len(groups) + 0.8), squeeze=False)
    for ax, (flow, rows_of_flow) in zip(axes[:, 0], groups):
        for i, v in enumerate(variants):
            rows = _run(rows_of_flow, v)
            if not rows:
                continue
            ax.plot([p.seq for p in rows], [p.rtt_ms if p.rtt_ms is not None else float("nan") for p in rows],
                    color=COLORS[i % len(COLORS)], marker=".", markersize=3, linewidth=1, label=v)
            lost = [p.seq for p in rows if p.rtt_ms is None]
            if lost:
                ax.plot(lost, [0] * len(lost), "x", color=COLORS[i % len(COLORS)], markersize=4, label=f"{v}: lost")
        first = next((v for v in variants if _run(rows_of_flow, v)), None)
        if first:
            _shade(ax, fault_windows(_run(rows_of_flow, first), events, first))
        ax.set_xlabel(f"request number ({flow})")
        ax.set_ylabel("RTT (ms)")
        ax.set_title(f"{title}: {flow}" if len(groups) > 1 else title)
    return _save(fig, path, list(axes[:, 0]))


def delivered_per_window(rows: Sequence[PacketRow], window: int = 10) -> tuple[list[float], list[float]]:
    """(request number at the window's end, fraction answered) for consecutive windows of `window` requests."""
    xs, ys = [], []
    for i in range(0, len(rows), window):
        chunk = rows[i:i + window]
        xs.append(chunk[-1].seq)
        ys.append(sum(1 for p in chunk if p.rtt_ms is not None) / len(chunk))
    return xs, ys


def plot_delivery(packets: Sequence[PacketRow], events: Sequence[EventRow], variants: Sequence[str], path: Path,
                  title: str, window: int = 10, flows: Sequence[str] | None = None) -> Path:
    """Fig. 11 style, per flow: delivered rate per window of requests (top) and RTT per request (bottom), per variant."""
    groups = _by_flow(packets, flows)
    fig, axes = plt.subplots(2 * len(groups), 1, figsize=(8, 5.5 * len(groups) + 0.5), squeeze=False)
    for k, (flow, rows_of_flow) in enumerate(groups):
        top, bottom = axes[2 * k, 0], axes[2 * k + 1, 0]
        for i, v in enumerate(variants):
            rows = _run(rows_of_flow, v)
            if not rows:
                continue
            color = COLORS[i % len(COLORS)]
            xs, ys = delivered_per_window(rows, window)
            top.step(xs, ys, where="pre", color=color, label=v)
            bottom.plot([p.seq for p in rows], [p.rtt_ms if p.rtt_ms is not None else 0.0 for p in rows],
                        color=color, linewidth=1, label=v)
        first = next((v for v in variants if _run(rows_of_flow, v)), None)
        if first:
            for ax in (top, bottom):
                _shade(ax, fault_windows(_run(rows_of_flow, first), events, first))
        top.set_ylabel(f"delivered (per {window} requests)")
        top.set_ylim(-0.05, 1.05)
        bottom.set_ylabel("RTT (ms; 0 = lost)")
        bottom.set_xlabel(f"request number ({flow})")
        top.set_title(f"{title}: {flow}" if len(groups) > 1 else title)
    return _save(fig, path, list(axes[:, 0]))


def plot_bars(summary: Summary, path: Path, title: str) -> Path:
    """Fig. 12 style: throughput (if measured) and RTT p50/p99 per variant, mean over repetitions with spread."""
    names = list(summary.variants)
    flows = sorted({k.split(".", 1)[1] for v in summary.variants.values() for k in v.stats
                    if k.startswith("throughput_mbps.")})
    panels = (1 if flows else 0) + 1
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels + 2, 4))
    axes = list(axes) if panels > 1 else [axes]
    if flows:
        ax = axes.pop(0)
        for j, flow in enumerate(flows):
            stats = [summary[n].stats.get(f"throughput_mbps.{flow}") for n in names]
            ax.bar([i + j * 0.8 / len(flows) for i in range(len(names))], [s.mean if s else 0 for s in stats],
                   width=0.8 / len(flows), yerr=[s.std if s else 0 for s in stats], label=flow, capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=15)
        ax.set_ylabel("throughput (Mbit/s)")
        ax.legend(fontsize=8)
    ax = axes[0]
    groups = [(f.name, f.variants) for f in summary.flows.values()] or [(summary.headline, summary.variants)]
    bars = [(flow, metric, vs) for flow, vs in groups for metric in ("rtt_p50_ms", "rtt_p99_ms")]
    width = 0.8 / len(bars)
    for j, (flow, metric, vs) in enumerate(bars):
        stats = [vs[n].stats.get(metric) if n in vs else None for n in names]
        label = metric.split("_")[1] + (f" {flow}" if len(groups) > 1 else "")
        ax.bar([i + j * width for i in range(len(names))], [s.mean if s else 0 for s in stats], width=width,
               yerr=[s.std if s else 0 for s in stats], label=label, capsize=3)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=15)
    ax.set_ylabel("RTT (ms)")
    fig.suptitle(title)
    return _save(fig, path, (), legends=(ax,))
