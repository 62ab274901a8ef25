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
    yaml_src = blocks("yaml")[0]
    (tmp_path / "topo.yaml").write_text(yaml_src)
    (tmp_path / "topo.py").write_text(blocks("python")[0])
    assert load_topology(tmp_path / "topo.yaml") == load_topology(tmp_path / "topo.py")


def test_readme_experiment_validates(tmp_path):
    exp_src = next(b for b in blocks("yaml") if b.startswith("name: my-crash"))
    (tmp_path / "exp.yaml").write_text(exp_src)
    assert load_experiment(tmp_path / "exp.yaml").name == "my-crash"


def test_readme_service_entry_validates(tmp_path):
    svc_src = next(b for b in blocks("yaml") if b.startswith("services:"))
    (tmp_path / "exp.yaml").write_text("name: svc\ntopology: fatriot\n"
                                       "traffic: [{name: p, from: gen, to: mec1}]\n" + svc_src)
    web = load_experiment(tmp_path / "exp.yaml").services[0]
    assert web.image == "testbed/web" and web.ready.kind == "http" and web.delay_control
