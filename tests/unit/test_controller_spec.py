"""Unit tests of the topology's `controller` key: app choice, config, the tree check, anycast hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.errors import SpecError
from testbed.topology import checks, schema
from testbed.topology.api import MecTopo
from testbed.topology.loader import load_topology, parse_topology
from testbed.topology.model import ControllerSpec

REPO = Path(__file__).resolve().parents[2]
SIMPLE = "controllers/simple_switch_13.py"
LOOP = {"name": "loop", "sites": {"a": {}, "b": {}, "c": {}},
        "wan": [{"between": ["a", "b"]}, {"between": ["b", "c"]}, {"between": ["c", "a"]}]}


def topo(**extra) -> dict:
    return {"name": "t", "sites": {"a": {"hosts": {"h1": {}, "h2": {}}}}, **extra}


def test_default_is_the_learning_app() -> None:
    spec = parse_topology(topo(), "t.yaml")
    assert spec.controller == ControllerSpec() and spec.controller.is_learning
    assert spec.controller.config == {}


def test_user_app_is_resolved_from_the_repository_root_and_config_kept() -> None:
    spec = parse_topology(topo(controller={"app": SIMPLE, "config": {"idle_timeout": 5, "x": [1, "a"]}}),
                          "t.yaml")
    assert spec.controller.app == str(REPO / SIMPLE) and not spec.controller.is_learning
    assert spec.controller.config == {"idle_timeout": 5, "x": [1, "a"]}
    hash(spec)  # frozen all the way down


def test_the_learning_app_named_by_its_file_is_the_learning_app() -> None:
    spec = parse_topology(topo(controller={"app": "controllers/l2_switch.py"}), "t.yaml")
    assert spec.controller.is_learning


def test_learning_config_is_typed_whole_seconds() -> None:
    spec = parse_topology(topo(controller={"config": {"idle_timeout": "10s", "mac_timeout": "300s"}}), "t.yaml")
    assert spec.controller.config == {"idle_timeout": 10, "mac_timeout": 300}
    with pytest.raises(SpecError) as err:
        parse_topology(topo(controller={"config": {"idle_timeout": "1.5s"}}), "t.yaml")
    assert err.value.path == "controller.config.idle_timeout"


@pytest.mark.parametrize("controller, path, message", [
    ({"app": "x.py"}, "controller.app", "no such file 'x.py'"),
    ({"app": "switch"}, "controller.app", "expected learning or the path"),
    ({"app": 3}, "controller.app", "expected learning or the path"),
    ({"app": SIMPLE, "config": {"f": float("nan")}}, "controller.config.f", "finite"),
    ({"app": SIMPLE, "config": {"s": {1, 2}}}, "controller.config.s", "plain data"),
    ({"app": SIMPLE, "config": [1]}, "controller.config", "expected a mapping"),
    ("learning", "controller", "expected a mapping"),
])
def test_bad_controller_names_its_path(controller, path: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_topology(topo(controller=controller), "t.yaml")
    assert err.value.path == path and message in err.value.message, str(err.value)
    assert str(err.value).startswith("t.yaml: ")


def test_an_unported_ryu_app_is_refused_with_the_fix(tmp_path: Path) -> None:
    app = tmp_path / "ryuapp.py"
    app.write_text("from ryu.base import app_manager\n")
    with pytest.raises(SpecError, match="imports ryu .line 1.*renaming ryu to os_ken"):
        parse_topology(topo(controller={"app": str(app)}), "t.yaml")
    app.write_text("def broken(:\n")
    with pytest.raises(SpecError, match="not valid Python"):
        parse_topology(topo(controller={"app": str(app)}), "t.yaml")


def test_a_wan_loop_is_refused_only_for_the_learning_app(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(SpecError, match="closes a loop"):
        parse_topology(LOOP, "t.yaml")
    spec = parse_topology({**LOOP, "controller": {"app": SIMPLE}}, "t.yaml")
    assert len(spec.wan) == 3 and "closes a loop" in caplog.text


def test_with_controller_rechecks_for_the_new_app() -> None:
    spec = parse_topology({**LOOP, "controller": {"app": SIMPLE}}, "t.yaml")
    with pytest.raises(SpecError, match="closes a loop"):
        checks.with_controller(spec, ControllerSpec())
    tree = load_topology("mec-sites")
    other = checks.with_controller(tree, schema.controller({"app": SIMPLE}, "--controller"))
    assert other.controller.app.endswith(SIMPLE) and other.sites == tree.sites


def test_controller_app_error_for_the_command_line() -> None:
    with pytest.raises(SpecError) as err:
        schema.controller_app("nope.py", "--controller")
    assert str(err.value) == "--controller: no such file 'nope.py'"


def test_builder_add_controller_matches_yaml() -> None:
    t = MecTopo("t")
    t.addSite("a")
    t.addHost("h1", site="a")
    t.addHost("h2", site="a")
    assert t.addController(SIMPLE, config={"k": 1}) == SIMPLE
    yaml_spec = parse_topology(topo(controller={"app": SIMPLE, "config": {"k": 1}}), "x")
    assert t.build() == yaml_spec
    with pytest.raises(SpecError, match="already chosen"):
        t.addController("learning")


def test_anycast_hosts_may_share_an_ip_and_nothing_else_may() -> None:
    t = MecTopo("t", subnet="10.0.0.0/24")
    t.addSite("a")
    t.addHost("cli", site="a", ip="10.0.0.1")
    t.addHost("r1", site="a", ip="10.0.0.50", anycast=True)
    t.addHost("r2", site="a", ip="10.0.0.50", anycast=True)
    t.addHost("h", site="a")
    spec = t.build()
    assert spec.host("r1").ip == spec.host("r2").ip == "10.0.0.50/24"
    assert spec.host("r1").anycast and not spec.host("cli").anycast
    assert spec.host("h").ip == "10.0.0.2/24"  # the shared address is not handed out
    with pytest.raises(SpecError) as err:
        parse_topology(topo(sites={"a": {"hosts": {"r1": {"ip": "10.0.0.5", "anycast": True},
                                                   "h": {"ip": "10.0.0.5"}}}}), "t.yaml")
    assert err.value.path == "sites.a.hosts.h.ip" and "anycast: true" in err.value.message
    with pytest.raises(SpecError, match="needs an explicit ip"):
        parse_topology(topo(sites={"a": {"hosts": {"r1": {"anycast": True}}}}), "t.yaml")
    with pytest.raises(SpecError, match="expected true or false"):
        parse_topology(topo(sites={"a": {"hosts": {"r1": {"ip": "10.0.0.5", "anycast": "yes"}}}}), "t.yaml")


def test_topo_command_line_takes_a_controller_file_and_checks_it_first() -> None:
    from testbed.cli import build_parser
    from testbed.emulation.run import topo_command

    args = build_parser().parse_args(["topo", "fatriot", "--controller", "nope.py", "--no-cli"])
    assert args.controller == "nope.py"
    with pytest.raises(SpecError, match="^--controller: no such file 'nope.py'$"):
        topo_command(args)  # refused before anything is brought up
