"""Service entries as data: defaults from the image's service.yaml, overrides, readiness checks, bad entries."""

from __future__ import annotations

import pytest

from testbed.errors import SpecError
from testbed.experiment.service_defaults import image_defaults, resolve
from testbed.experiment.spec import Readiness, ServicePort, ServiceRun, parse_experiment
from tests.unit.test_experiment_spec import fake_loader

TRAFFIC = [{"name": "probe", "from": "gen", "to": "mec1"}]


def experiment(services: list, faults: list | None = None) -> object:
    doc = {"name": "t", "topology": "fatriot", "traffic": TRAFFIC, "services": services, "faults": faults or []}
    return parse_experiment(doc, "exp.yaml", load_topology=fake_loader)


def test_echo_defaults_come_from_its_service_yaml():
    echo = image_defaults("testbed/echo")
    assert echo["command"] == ("python3", "/app/echo.py")
    assert echo["ports"] == (ServicePort("udp", 7000), ServicePort("tcp", 7001))
    assert echo["ready"].kind == "udp" and echo["ready"].send == "ping"
    assert echo["delay_control"] == "/run/echo/delay_ms"
    assert image_defaults("testbed/probe") == {} and image_defaults("somebody/else") == {}
    svc = resolve(ServiceRun("mec1", "echo"), "testbed/echo")
    assert svc.image == "testbed/echo" and svc.delay_control == "/run/echo/delay_ms"


def test_a_full_entry_overrides_the_image_defaults():
    spec = experiment([{"host": "mec2", "name": "web", "image": "testbed/web",
                        "command": ["python3", "-m", "http.server", "8080"],
                        "ports": [{"proto": "tcp", "port": 8080}],
                        "ready": {"http": 8080, "path": "/index.html", "timeout": "3s"},
                        "env": {"MODE": "fast", "N": 3}, "state_dir": "/srv/state"}])
    web = spec.services[0]
    assert web.image == "testbed/web" and web.command[-1] == "8080"
    assert web.ready == Readiness("http", port=8080, path="/index.html", timeout_s=3.0)
    assert web.env == (("MODE", "fast"), ("N", "3")) and web.state_dir == "/srv/state"
    assert web.delay_control is None
    echo = experiment([{"host": "mec1", "name": "echo", "ready": {"tcp": 7001, "send": "x", "expect": "x"}}]).services[0]
    assert echo.ready.kind == "tcp" and echo.delay_control == "/run/echo/delay_ms"


@pytest.mark.parametrize("entry, where", [
    ({"ready": {"tcp": 7001, "udp": 7000}}, "services[0].ready: needs exactly one"),
    ({"ready": {"udp": 7000}}, "services[0].ready.send"),
    ({"ready": {"http": 80, "send": "x"}}, "services[0].ready.send"),
    ({"ready": {"command": []}}, "services[0].ready.command"),
    ({"state_dir": "relative/dir"}, "services[0].state_dir"),
    ({"ports": [{"proto": "sctp", "port": 1}]}, "services[0].ports[0].proto"),
    ({"ports": [{"port": 70000}]}, "services[0].ports[0].port"),
    ({"args": ["--x"]}, "services[0].args"),
    ({"host": "cli"}, "services[0].host"),
    ({"ports": [{"proto": "tcp", "port": 8080, "critical": True}]}, "services[0].ports"),
])
def test_bad_service_entries_name_the_path(entry, where):
    with pytest.raises(SpecError) as err:
        experiment([{"host": "mec1", "name": "echo", **entry}])
    assert where in str(err.value)


def test_delay_app_needs_a_service_with_a_delay_control():
    fault = {"kind": "delay", "mode": "app", "host": "mec2", "delay": "5ms", "at": "packet 2", "service": "web"}
    with pytest.raises(SpecError, match=r"faults\[0\]\.mode: delay app needs .*services\[0\]\.delay_control"):
        experiment([{"host": "mec2", "name": "web", "image": "testbed/web"}], [fault])
    with pytest.raises(SpecError, match=r"faults\[0\]\.service: no service 'nope'"):
        experiment([], [{**fault, "service": "nope"}])
    ok = experiment([], [{k: v for k, v in fault.items() if k != "service"}])
    assert ok.faults[0].service == "main"  # the host's own service, from its image's service.yaml
