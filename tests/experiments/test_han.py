"""han-mbb, shortened: make-before-break interrupts the video flow < 100 ms and less than break-before-make;
the background flow between two other sites is delivered during every switch (Han et al.'s claims)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.experiment.spec import load_experiment, shortened

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.experiment]


def test_make_before_break_interrupts_less_than_break_before_make(experiment_runner, tmp_path):
    spec = shortened(load_experiment(ROOT / "experiments" / "han-mbb.yaml"), tail=750)  # 3 s after the switch
    experiment_runner(spec, shorten=False)
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    by = summary["switches"]["by_variant"]
    print(json.dumps(by, indent=1))
    mbb, bbm = by["make-before-break"], by["break-before-make"]
    assert mbb["count"] == bbm["count"] == 1
    for each in summary["switches"]["each"]:
        assert (each["from"], each["to"], each["mode"]) == ("meca", "mecb", each["variant"]), each
        assert each["interruption_ms"] is not None, each  # the new instance answered before the end
    assert mbb["interruption_ms"]["max"] < 100, mbb
    assert mbb["interruption_ms"]["mean"] < bbm["interruption_ms"]["mean"], by
    assert mbb["lost"]["mean"] <= bbm["lost"]["mean"], by
    assert mbb["background_delivered_min"] >= 0.99 and bbm["background_delivered_min"] >= 0.99, by
    report = (run / "report.md").read_text()
    assert "## Traffic switches" in report and "less than 100 ms" in report
