"""farris-replication, shortened: a user walks edge1 -> edge2 -> edge3; proactive replicas hand the service over
faster than reactive migration, and without mobility support the service stays far away (Farris et al.)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from testbed.experiment.spec import load_experiment, shortened

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.experiment]


def test_replicas_follow_the_user_faster_than_migration(experiment_runner, tmp_path):
    spec = shortened(load_experiment(ROOT / "experiments" / "farris-replication.yaml"), tail=200)  # 4 s after
    experiment_runner(spec, shorten=False)
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    print(json.dumps({k: summary[k]["by_variant"] for k in ("moves", "handovers", "syncs") if k in summary}, indent=1))
    moves, handovers = summary["moves"]["by_variant"], summary["handovers"]["by_variant"]
    assert all(moves[v]["count"] == 2 for v in ("proactive", "reactive", "no-mobility")), moves
    for each in summary["moves"]["each"]:
        assert each["interruption_ms"] is not None, each  # the walk goes on: replies resume after every move
        assert each["handovers"] == ({"proactive": [["r2"], ["r3"]], "reactive": [["r2"], ["r3"]]}
                                     .get(each["variant"], [[], []])[0 if each["dst"] == "edge2" else 1]), each
    assert "no-mobility" not in handovers
    pro, rea = handovers["proactive"], handovers["reactive"]
    assert set(rea["phases_ms"]) == {"start", "copy", "switch", "stop"}, rea
    assert rea["bytes"]["mean"] >= 1_000_000 and pro["bytes"]["mean"] >= 1_000_000  # the 1 MB state is copied
    assert pro["total_ms"]["mean"] < rea["total_ms"]["mean"], handovers
    assert summary["syncs"]["by_variant"]["proactive"]["count"] > 2  # periodic syncs ran
    # without mobility support the far replica keeps serving: 2 x 25 ms more each way at edge3
    assert moves["no-mobility"]["rtt_after_ms"]["max"] > moves["proactive"]["rtt_after_ms"]["max"] + 50, moves
    with open(run / "events.csv", newline="") as f:
        kinds = {(r["kind"], r["action"]) for r in csv.DictReader(f)}
    assert {("replica", "role"), ("replica", "sync"), ("replica", "handover"), ("move", "apply")} <= kinds
    assert "## Service handovers" in (run / "report.md").read_text()


def test_fig4_and_fig5_image_start_and_shipment(tmp_path):
    """Pre-cached start-up is about a second; the shipped image's transfer takes its bytes / the link's rate."""
    from testbed.experiment.pytest_helpers import needs_root_testbed

    why = needs_root_testbed()
    if why:
        pytest.skip(why)
    import importlib.util

    spec = importlib.util.spec_from_file_location("farris_fig5", ROOT / "experiments" / "farris_fig5.py")
    fig = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fig)
    starts = fig.fig4(tmp_path, ["testbed/echo"])
    results = fig.fig5(tmp_path, "testbed/echo")
    print(json.dumps({"fig4": starts, "fig5": results}, indent=1))
    assert 0 < starts["testbed/echo"] < 5, starts
    for name, r in results.items():
        assert set(r["phases_s"]) == {"save", "compress", "transfer", "load", "run"}, r
        assert r["sent_bytes"] >= r["archive_bytes"] > 10_000_000, r  # the compressed image, tar-framed
        assert abs(r["phases_s"]["transfer"] - r["expected_transfer_s"]) <= 0.15 * r["expected_transfer_s"], r
    assert results["25mbit-50ms"]["phases_s"]["transfer"] > 3 * results["100mbit"]["phases_s"]["transfer"]
