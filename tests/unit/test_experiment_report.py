"""The report's backends line: one listing where all runs agree, per variant where they differ (e.g. the NIC data path)."""

from __future__ import annotations

from testbed.experiment.report import backends_text


def _run(variant: str, rep: int, nic: str) -> dict:
    return {"variant": variant, "repetition": rep, "backends": {"link": "userspace", "nic": nic}}


def test_backends_shared_by_every_run_are_listed_once():
    text = backends_text([_run("a", 0, "testbed.failsafe (python: mec1)"), _run("b", 0, "testbed.failsafe (python: mec1)")])
    assert "Backends: link=userspace, nic=testbed.failsafe (python: mec1)" in text
    assert "by variant" not in text


def test_a_backend_that_differs_is_given_for_each_variant():
    runs = [_run("slow", r, "testbed.failsafe (python: mec1)") for r in range(2)]
    runs += [_run("fast", 0, "testbed.failsafe (bpf: mec1)"), _run("fast", 1, "testbed.failsafe (python: mec1)")]
    text = backends_text(runs)
    assert "Backends: link=userspace; by variant:" in text
    assert "\n- `slow`: nic=testbed.failsafe (python: mec1)" in text
    assert "\n- `fast`: nic=testbed.failsafe (bpf: mec1) / testbed.failsafe (python: mec1)" in text


def test_no_runs():
    assert backends_text([]) == "no run completed"
