"""One persistent TCP connection across a host crash (fatriot-tcp-carry): carried over, or reset as before."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.experiment]


def answers(run_dir: Path, variant: str) -> dict[int, str]:
    """Request number -> who answered it ('' when lost), for one variant of the persistent flow."""
    with open(run_dir / "packets.csv", newline="") as f:
        return {int(r["seq"]): r["answered_by"] for r in csv.DictReader(f)
                if r["variant"] == variant and r["flow"] == "loop"}


def resets(run_dir: Path, variant: str) -> int:
    """Connection resets the persistent prober saw in one variant."""
    with open(run_dir / "events.csv", newline="") as f:
        return sum(1 for r in csv.DictReader(f)
                   if r["variant"] == variant and r["kind"] == "tcp_reset" and r["action"] == "seen")


def test_a_persistent_connection_survives_the_crash_only_when_carried(experiment_runner, tmp_path):
    experiment_runner(ROOT / "experiments" / "fatriot-tcp-carry.yaml", shorten=False)
    run = tmp_path / "run"
    carry, reset = answers(run, "carry"), answers(run, "reset")
    assert len(carry) == len(reset) == 120
    # the crash is at request 40 of 120 (20 per second)
    assert all(carry[s] == "mec1" for s in range(1, 40)) and all(reset[s] == "mec1" for s in range(1, 40))
    assert resets(run, "carry") == 0
    assert [s for s, by in carry.items() if by == ""] == [], "carried: no request lost"
    assert all(carry[s] == "mec2" for s in range(60, 121)), "the carried connection is served by the backup"
    assert resets(run, "reset") >= 1, "without carry_tcp the backup resets the connection"
