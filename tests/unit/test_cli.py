"""The command line: verbs exist, bad usage and bad files are one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
VERBS = ("run", "topo", "validate", "doctor", "clean", "images", "report", "failsafe", "deploy", "inspect",
         "destroy", "exec")


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=60)


def test_help_lists_every_verb():
    out = run_cli("--help").stdout
    for verb in VERBS:
        assert verb in out
    for verb in VERBS:
        assert run_cli(verb, "--help").returncode == 0


@pytest.mark.parametrize("args", [["bogus"], ["run"], ["clean", "--run", "zz"], ["images", "frobnicate"],
                                  ["report", "/nonexistent"]])
def test_bad_usage_is_one_line_and_exit_2(args):
    done = run_cli(*args)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("path", sorted((DATA / "bad_topologies").glob("*.yaml"))[:5]
                         + sorted((DATA / "bad_experiments").glob("*.yaml"))[:5], ids=lambda p: p.name)
def test_bad_files_exit_2_and_leave_nothing(path, tmp_path):
    for verb in ("validate", "run") if "experiments" in str(path.parent) else ("validate", "topo"):
        done = run_cli(verb, str(path), cwd=tmp_path)
        assert done.returncode == 2, (verb, done.stderr)
        assert path.name in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # no run directory was made


def test_shipped_files_validate():
    root = Path(__file__).resolve().parents[2]
    files = [str(p) for p in sorted((root / "experiments").glob("*.yaml"))]
    files += [str(p) for p in sorted((root / "topologies").glob("*.*"))]
    done = run_cli("validate", *files, cwd=root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("ok:") == len(files)


@pytest.mark.parametrize("args", [
    ["deploy"], ["deploy", "/nonexistent.yaml"], ["inspect", "zz"], ["inspect", "ffff"], ["destroy"],
    ["destroy", "zz"], ["destroy", "ffff"], ["exec", "abcd"], ["exec", "zz", "node", "--", "true"],
    ["exec", "abcd", "node"], ["exec", "ffff", "node", "--", "true"], ["validate", "--json"],
    ["report", "/nonexistent", "--json"], ["images", "list", "--frobnicate"]])
def test_new_verbs_bad_usage_is_one_line_and_exit_2(args, tmp_path):
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing made (no run directory)


def test_validate_json_lists_each_file():
    import json

    root = Path(__file__).resolve().parents[2]
    done = run_cli("validate", "--json", "experiments/fatriot-fig11.yaml", "topologies/fatriot.yaml", cwd=root)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["kind"], r["file"]) for r in rows] == [("experiment", "experiments/fatriot-fig11.yaml"),
                                                      ("topology", "topologies/fatriot.yaml")]


def test_images_list_includes_the_base():
    import json

    done = run_cli("images", "list", "--json")
    assert done.returncode == 0, done.stderr
    tags = [r["tag"] for r in json.loads(done.stdout)]
    assert tags[0] == "testbed/base" and "testbed/echo" in tags


def test_every_verb_that_prints_results_has_json():
    for verb in ("validate", "run", "topo", "report", "images", "doctor", "clean", "deploy", "inspect", "destroy"):
        assert "--json" in run_cli(verb, "--help").stdout, verb
