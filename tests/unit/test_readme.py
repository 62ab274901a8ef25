"""The README's examples are real: its topology (YAML and Python) and experiment validate."""

from __future__ import annotations

import re
from pathlib import Path

from testbed.experiment.spec import load_experiment
from testbed.topology.loader import load_topology

README = Path(__file__).resolve().parents[2] / "README.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), re.S)


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "sudo make demo" in text and "sudo make test" in text


def test_readme_topology_yaml_and_python_agree(tmp_path):
    yaml_src, exp_src = blocks("yaml")
    (tmp_path / "topo.yaml").write_text(yaml_src)
    (tmp_path / "topo.py").write_text(blocks("python")[0])
    assert load_topology(tmp_path / "topo.yaml") == load_topology(tmp_path / "topo.py")


def test_readme_experiment_validates(tmp_path):
    exp_src = blocks("yaml")[1]
    (tmp_path / "exp.yaml").write_text(exp_src)
    assert load_experiment(tmp_path / "exp.yaml").name == "my-crash"
