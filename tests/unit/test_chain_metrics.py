"""A chain's QoS from synthetic sink logs: fps per window, fluctuation, downtime, frames lost, recovery after a move."""

from __future__ import annotations

import json

import pytest

from testbed.migration.chain_metrics import add_to_run, below_rate_s, compare, read_frames, run_metrics, window_fps

T0 = 1000.0


def frames(rate: float, start: float, end: float, gap: tuple[float, float] | None = None, seq0: int = 1):
    """(seq, time) at `rate` from T0+start to T0+end; frames sent inside `gap` are lost."""
    out, n = [], int((end - start) * rate)
    for i in range(n):
        t = start + i / rate
        if gap is None or not gap[0] <= t < gap[1]:
            out.append((seq0 + i, T0 + t + 0.003))
    return out


def record(healing: str = "cold", duration: float = 20.0) -> dict:
    return {"t0": T0, "window_s": 1.0, "rate": 20.0, "below": 0.9, "duration_s": duration, "healing": healing,
            "failures": [{"t": 5.0, "host": "n1", "vf": "a"}], "decisions": [{}]}


def test_steady_chain_has_no_downtime_and_no_fluctuation():
    m = run_metrics(frames(20, 0, 20), record())
    assert m["windows"] == 20 and m["mean_fps"] == pytest.approx(20) and m["fps_std"] == pytest.approx(0)
    assert m["downtime_pct"] == 0 and m["frames_lost"] == 0


def test_an_outage_counts_its_length_plus_the_window_and_its_lost_frames():
    m = run_metrics(frames(20, 0, 20, gap=(5.0, 6.0)), record())
    assert m["frames_lost"] == 20
    # under 18 frames in the last second from 5.0 + 0.1 (2 frames missing) until 6.0 + 0.9 (fewer than 2 missing)
    assert m["downtime_pct"] == pytest.approx(100 * 1.8 / 19, abs=0.6)
    assert m["fps"][5] == 0 and m["fps_std"] > 3
    longer = run_metrics(frames(20, 0, 20, gap=(5.0, 7.0)), record())
    assert longer["downtime_pct"] > m["downtime_pct"] + 4  # one second more of outage: 1/19 of the time


def test_slow_processing_is_downtime_without_lost_frames():
    slow = frames(20, 0, 8) + [(200 + i, T0 + 8 + i / 14) for i in range(14 * 6)] + frames(20, 14, 20, seq0=400)
    m = run_metrics(slow, record())
    assert m["fps"][9] == 14 and 25 < m["downtime_pct"] < 40


def test_recovery_after_each_move():
    moves = [{"vf": "a", "src": "n1", "dst": "n3", "mode": "cold", "started": T0 + 5.5, "total_s": 0.4,
              "downtime_s": 0.4}]
    m = run_metrics(frames(20, 0, 20, gap=(5.0, 5.9)), record(), moves)
    assert m["moves"][0]["at_s"] == pytest.approx(5.9) and m["moves"][0]["recovered_after_s"] == pytest.approx(0.1)  # window [6, 7) is whole
    stuck = run_metrics(frames(20, 0, 5), record(), moves)
    assert stuck["moves"][0]["recovered_after_s"] is None


def test_window_fps_and_below_rate_are_plain_arithmetic():
    assert window_fps([(1, T0 + 0.5), (2, T0 + 0.7), (3, T0 + 2.2), (4, T0 + 9)], T0, 3.0, 1.0) == [2.0, 0.0, 1.0]
    assert below_rate_s([], T0, T0 + 2, 1.0, 1.0) == pytest.approx(2.0)


def test_compare_against_the_baseline_and_the_run_directory(tmp_path):
    for name, gap in (("cold-r0", (5.0, 6.0)), ("reset-r0", (5.0, 7.0))):
        d = tmp_path / name
        d.mkdir()
        (d / "chain-frames.json").write_text(json.dumps({**record("cold" if name.startswith("cold") else "reset"),
                                                          "chain": "frames"}))
        (d / "frames-frames.log").write_text("".join(f"{s} {t:.6f} 0\n" for s, t in frames(20, 0, 20, gap=gap)))
    assert len(read_frames(tmp_path / "cold-r0" / "frames-frames.log")) == 380
    (tmp_path / "summary.json").write_text(json.dumps({"experiment": "x"}))
    (tmp_path / "report.md").write_text("# x\n")
    sections = add_to_run(tmp_path)
    c = sections["compared"]["cold"]
    assert c["baseline"] == "reset" and 20 < c["downtime_lower_pct"] < 50
    assert json.loads((tmp_path / "summary.json").read_text())["chains"]["variants"]["reset"]["aggregate"][
        "frames_lost"]["mean"] == 40
    assert "| cold | cold | 1 |" in (tmp_path / "report.md").read_text()
    assert compare({"a": {"healing": "cold", "aggregate": {}}}) == {}  # no baseline: nothing compared
