"""pytest support: run a (shortened) experiment in a temporary directory and get its Summary back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from testbed.experiment.metrics import Summary
from testbed.experiment.spec import ExperimentSpec, load_experiment, shortened


def run_experiment(path_or_spec: str | Path | ExperimentSpec, shorten: bool = True,
                   out: Path | None = None) -> Summary:
    """Run an experiment (file or spec), shortened unless told otherwise, into `out`; returns its Summary."""
    from testbed.experiment.runner import run_experiment as run

    spec = path_or_spec if isinstance(path_or_spec, ExperimentSpec) else load_experiment(path_or_spec)
    if shorten:
        spec = shortened(spec)
    out_dir = run(spec, Path(out) if out else None, show_progress=False)
    return Summary.from_dict(json.loads((out_dir / "summary.json").read_text()))


def needs_root_testbed() -> str | None:
    """Why a whole experiment cannot run here (None when it can): root, Docker, Open vSwitch, images."""
    if os.geteuid() != 0:
        return "needs root"
    try:
        from testbed.emulation.dockerhost import docker_client

        client = docker_client()
        for image in ("testbed/echo", "testbed/probe"):
            client.images.get(image)
    except Exception as exc:  # no engine, or images not built
        return f"Docker engine or testbed images missing ({exc}); run `testbed images build`"
    from testbed.proc import which

    if which("ovs-vsctl") is None:
        return "Open vSwitch is not installed"
    return None


def assert_nothing_left(out: Path) -> None:
    """Nothing of any run of the experiment in `out` still exists: containers, bridges, interfaces, processes."""
    from testbed.testing import leftovers, live_processes

    for run in json.loads((out / "manifest.json").read_text())["runs"]:
        assert leftovers(run["rid"]) == [], f"run {run['rid']} left resources behind"
    for resources in out.rglob("resources.jsonl"):
        assert live_processes(resources.parent) == [], f"processes of {resources.parent} still run"


@pytest.fixture
def experiment_runner(tmp_path):
    """A function `(path_or_spec, shorten=True) -> Summary` writing into this test's tmp_path; skips without a testbed."""
    why = needs_root_testbed()
    if why:
        pytest.skip(why)

    def _run(path_or_spec: str | Path | ExperimentSpec, shorten: bool = True) -> Summary:
        summary = run_experiment(path_or_spec, shorten=shorten, out=tmp_path / "run")
        assert_nothing_left(tmp_path / "run")
        return summary

    return _run
