"""A crashed host comes back (host_down kill with `for:`): packets.csv shows the main host answering again."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.experiment]


def answers(run_dir: Path, variant: str) -> dict[int, str]:
    """Request number -> who answered it ('' when lost), for one variant of the probe flow."""
    with open(run_dir / "packets.csv", newline="") as f:
        return {int(r["seq"]): r["answered_by"] for r in csv.DictReader(f)
                if r["variant"] == variant and r["flow"] == "probe"}


def test_crashed_host_answers_again_after_its_restart(experiment_runner, tmp_path):
    experiment_runner(ROOT / "experiments" / "fatriot-crash-recovery.yaml", shorten=False)
    run = tmp_path / "run"
    with_nic, without = answers(run, "with-nic"), answers(run, "without-nic")
    # the crash is at request 30, the restart 5 s (50 requests) later, the run ends at 120
    assert all(with_nic[s] == "mec1" for s in range(1, 30)) and all(without[s] == "mec1" for s in range(1, 30))
    outage = range(40, 76)
    assert sum(with_nic[s] == "mec2" for s in outage) >= 0.9 * len(outage), "the backup serves the outage"
    assert all(without[s] == "" for s in outage), "without the NIC the outage is lost"
    tail = range(111, 121)
    assert all(with_nic[s] == "mec1" for s in tail), "traffic returns to the restarted main host"
    assert all(without[s] == "mec1" for s in tail), "the restarted main host answers again"
    with open(run / "events.csv", newline="") as f:
        kinds = [(r["kind"], r["action"]) for r in csv.DictReader(f) if r["variant"] == "with-nic"]
    assert ("host_down", "apply") in kinds and ("host_down", "undo") in kinds
