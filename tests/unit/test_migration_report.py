"""migration.json from a run directory's files: client-seen gaps, state age and updates lost at the crash."""

from __future__ import annotations

import csv
import json

from testbed.experiment.metrics import EVENT_FIELDS, PACKET_FIELDS
from testbed.migration.report import markdown, write_report


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_standby_and_migration_summaries(tmp_path):
    run = tmp_path / "default-r0"
    run.mkdir()
    t0 = 1000.0
    # 100 req/s: answered by p until the crash at t0+1.0, lost until t0+1.5, then answered by s
    rows = []
    for i in range(200):
        t = t0 + i / 100
        by = "p" if t < t0 + 1.0 else ("s" if t >= t0 + 1.5 else "")
        rows.append(["default", 0, i + 1, f"{t:.6f}", "1.0" if by else "", by, "probe"])
    write_csv(tmp_path / "packets.csv", PACKET_FIELDS, rows)
    write_csv(tmp_path / "events.csv", EVENT_FIELDS,
              [[f"{t0 + 1.0:.6f}", "default", 0, "host_down", "apply", "p", "kill"]])
    log = [{"seq": k + 1, "taken": t0 + 0.1 * k, "received": t0 + 0.1 * k + 0.01, "bytes": 5000,
            "counter": int(10 * k)} for k in range(10)]  # the last taken at t0 + 0.9
    (run / "standbys.jsonl").write_text(json.dumps({
        "service": "c", "primary": "p", "standby": "s", "interval_ms": 100.0, "detect_ms": 300.0, "takeover": True,
        "checkpoints": 10, "first_bytes": 5000, "bytes_per_checkpoint": 5000.0, "bytes_per_s": 50000.0,
        "transfer_ms_mean": 10.0, "last_taken": t0 + 0.9, "last_counter": 90, "lost_at": t0 + 1.3,
        "served_at": t0 + 1.5, "phases_ms": {}, "error": "", "checkpoint_log": log}) + "\n")
    (run / "migrations.jsonl").write_text(json.dumps({
        "service": "c", "src": "p", "dst": "s", "mode": "state-transfer", "phases": {"stop": 0.01, "transfer": 0.3},
        "bytes": 1000, "downtime_s": 0.45, "total_s": 0.5, "counter": 90, "started": t0 + 0.95, "stopped": t0 + 1.0,
        "wan_rate_mbit": 10}) + "\n")
    summary = write_report(tmp_path)
    (sb,) = summary["standbys"]
    assert round(sb["state_age_ms"]) == 100 and sb["restored_counter"] == 90
    assert sb["primary_answered"] == 100 and sb["updates_lost"] == 10
    assert abs(sb["failover_s"] - 0.5) < 1e-6 and sb["client_lost"] == 50
    (m,) = summary["migrations"]
    assert m["client_lost"] == 50 and abs(m["client_gap_s"] - 0.49) < 1e-6 and m["phases_ms"]["transfer"] == 300
    assert json.loads((tmp_path / "migration.json").read_text()) == summary
    text = markdown(summary)
    assert "1.80 ± 0.05 s" in text and "| 74.7 |" in text
