"""Per-switch and per-move numbers on synthetic packets: T_q - T_p, requests lost, background delivery."""

from __future__ import annotations

import json
from pathlib import Path

from testbed.experiment.metrics import PACKET_FIELDS, PacketRow
from testbed.experiment.mobility_metrics import add_to_run, move_metrics, switch_metrics


def rows(flow: str, start: float, rate: float, n: int, who) -> list[PacketRow]:
    """n requests from `start` at `rate`/s, 2 ms RTT; who(i) names the answering host ('' = lost)."""
    out = []
    for i in range(n):
        by = who(i)
        out.append(PacketRow("v", 0, i + 1, start + i / rate, 2.0 if by else None, by, flow))
    return out


def test_switch_interruption_is_last_old_reply_to_first_new_reply() -> None:
    # video at 100/s from t=100: meca answers requests 0..49, 50..59 are lost, mecb answers from 60
    video = rows("video", 100.0, 100, 100, lambda i: "meca" if i < 50 else ("" if i < 60 else "mecb"))
    bg = rows("bg", 100.0, 100, 100, lambda i: "bgc" if i != 55 else "")
    rec = {"service_ip": "10.0.0.50", "from": "meca", "to": "mecb", "mode": "break-before-make",
           "started": 100.49, "ended": 100.6, "steps_ms": {}}
    m = switch_metrics(rec, {"video": video, "bg": bg}, {"video"})
    assert m["interruption_ms"] == 110.0  # reply to 49 at 100.492, reply to 60 at 100.602
    assert m["lost"] == 10
    assert m["total_ms"] == 110.0
    window = [r for r in bg if 100.49 - 0.5 <= r.send_time <= 100.602 + 0.5]
    assert m["background_delivered"]["bg"] == round((len(window) - 1) / len(window), 4)


def test_make_before_break_overlap_counts_the_last_old_reply_even_after_the_switch_began() -> None:
    # the old instance keeps answering while the new one starts: p is its last reply, whenever sent
    video = rows("video", 0.0, 100, 100, lambda i: "meca" if i < 70 else "mecb")
    rec = {"service_ip": "x", "from": "meca", "to": "mecb", "mode": "make-before-break", "started": 0.3,
           "ended": 0.72, "steps_ms": {}}
    m = switch_metrics(rec, {"video": video}, {"video"})
    assert m["interruption_ms"] == 10.0 and m["lost"] == 0


def test_no_reply_from_the_new_instance_gives_no_number() -> None:
    video = rows("video", 0.0, 100, 50, lambda i: "meca" if i < 30 else "")
    rec = {"service_ip": "x", "from": "meca", "to": "mecb", "mode": "m", "started": 0.3, "ended": 0.4}
    m = switch_metrics(rec, {"video": video}, {"video"})
    assert m["interruption_ms"] is None and m["lost"] is None


def test_move_interruption_for_the_devices_flows() -> None:
    ping = rows("probe", 0.0, 100, 400, lambda i: "" if 40 <= i < 48 else "srv")
    rec = {"host": "ue1", "src": "edge1", "dst": "edge2", "gap_s": 0.05, "detached": 0.395, "acked": 0.47, "detach_ms": 5,
           "unattached_ms": 50, "controller_ms": 3}
    m = move_metrics(rec, {"probe": ping}, {"probe"})
    assert m["interruption_ms"] == 90.0 and m["lost"] == 8
    assert m["rtt_after_ms"] == 2.0 and m["handovers"] == []


def test_sections_are_added_to_summary_and_report(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "a-r0").mkdir(parents=True)
    spec = {"topology": {"sites": [{"hosts": [{"name": "meca", "ip": "10.0.0.50/24"},
                                               {"name": "ue", "ip": "10.0.0.1/24"}]}]},
            "traffic": [{"name": "video", "src": "ue", "dst": "meca", "rate": 100}]}
    (run / "manifest.json").write_text(json.dumps({"spec": spec, "runs": [
        {"variant": "a", "repetition": 0, "run_dir": "/elsewhere/a-r0"}]}))
    video = rows("video", 0.0, 100, 100, lambda i: "meca" if i < 50 else "mecb")
    with open(run / "packets.csv", "w") as f:
        f.write(",".join(PACKET_FIELDS) + "\n")
        for r in video:
            f.write(f"a,0,{r.seq},{r.send_time},{r.rtt_ms},{r.answered_by},video\n")
    (run / "a-r0" / "switches.jsonl").write_text(json.dumps(
        {"service_ip": "10.0.0.50", "from": "meca", "to": "mecb", "mode": "make-before-break", "started": 0.45,
         "ended": 0.5, "steps_ms": {"steer": 5}}) + "\n")
    (run / "summary.json").write_text(json.dumps({"experiment": "x", "flows": {}}))
    (run / "report.md").write_text("# x\n")
    add_to_run(run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["flows"] == {} and summary["switches"]["by_variant"]["a"]["interruption_ms"]["max"] == 10.0
    text = (run / "report.md").read_text()
    assert "## Traffic switches" in text and "Paper: Han et al." in text and "`a` (make-before-break)" in text
