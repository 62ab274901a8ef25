"""Unit tests for fail-safe NICs on another server (testbed/cluster/nics.py): the data path there, the
config written there, the NIC started in its node's namespace there and recorded with its server,
its control socket forwarded to the usual place here, its events copied back, and the refusals."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from testbed import control, proc
from testbed.cluster import nics, preflight
from testbed.cluster.server import Server
from testbed.errors import TestbedError
from testbed.failsafe.config import NicConfig
from testbed.ledger import RUN_ROOT, Ledger
from testbed.topology.loader import parse_topology

REMOTE = Server("far", "10.255.0.2", key="/k/id", known_hosts="/k/known")


def _config(tmp: Path, datapath: str = "auto") -> NicConfig:
    return NicConfig(node="mec1", rid="abcd", host_ip="10.0.0.11", nic_ip="10.0.0.111", nic_mac="02:00:00:00:01:11",
                     datapath=datapath, control_socket=str(tmp / "sock" / "nic-mec1.sock"),
                     events_path=str(tmp / "events-mec1.jsonl"))


def test_datapath_there_is_python_and_bpf_is_refused(tmp_path: Path) -> None:
    assert nics.remote_datapath(_config(tmp_path, "auto"), REMOTE) == "python"
    assert nics.remote_datapath(_config(tmp_path, "python"), REMOTE) == "python"
    with pytest.raises(TestbedError, match="NIC mec1 on server far: datapath bpf is not checked there"):
        nics.remote_datapath(_config(tmp_path, "bpf"), REMOTE)


class FakeSession:
    def __init__(self, argv, output, on_start):
        self.argv, self.pid, self.returncode = argv, 4242, None
        on_start(self.pid)
        if "testbed.failsafe.nic" in argv[-1]:
            output.write_text(f"{nics.PID_MARK} 777\nnic starting\n")

    def poll(self):
        return self.returncode


def test_started_there_recorded_with_its_server_forwarded_here_and_stopped(monkeypatch: pytest.MonkeyPatch,
                                                                           tmp_path: Path) -> None:
    book = Ledger("abcd", tmp_path, state_dir=tmp_path / "state")
    remote: list[list[str]] = []
    written: dict[str, str] = {}
    alive = {"nic": True}

    def fake_run(argv, **kw):
        assert argv[0] == "ssh" and "root@10.255.0.2" in argv
        args = shlex.split(argv[-1])
        remote.append(args)
        if args[:2] == ["sh", "-c"] and args[2] == 'cat > "$1"':
            written[args[-1]] = kw["input"]
        if args[0] == "cat" and args[1].startswith("/proc/"):
            return proc.Result(argv, 0, "777 (python3) S " + " ".join(["0"] * 18) + " 9999 0\n", "")
        if args[0] == "cat":  # the events log there
            return proc.Result(argv, 0, '{"node": "mec1", "active": true}\n', "")
        if args[:2] == ["kill", "-0"]:
            return proc.Result(argv, 0 if alive["nic"] else 1, "", "")
        if args[0] == "kill":
            alive["nic"] = False
        return proc.Result(argv, 0, "", "")

    spawned: list[FakeSession] = []
    monkeypatch.setattr(proc, "run", fake_run)
    monkeypatch.setattr(proc, "spawn", lambda argv, output, on_start, **kw: spawned.append(
        FakeSession(argv, output, on_start)) or spawned[-1])
    monkeypatch.setattr(proc, "stop", lambda p, timeout=5: 0)
    monkeypatch.setattr(control, "call", lambda sock, cmd, timeout=2: {"ok": True})
    config = _config(tmp_path)
    nic = nics.start_remote_nic(REMOTE, 555, config, book, tmp_path)
    there = f"{RUN_ROOT}/abcd/nic-mec1-far"
    cfg = json.loads(written[f"{there}/nic.json"])
    assert cfg["datapath"] == "python" and cfg["control_socket"] == f"{there}/ctl.sock"
    assert cfg["events_path"] == f"{there}/events.jsonl"
    session, forward = spawned
    started = shlex.split(session.argv[-1])
    assert started[started.index("nsenter"):started.index("nsenter") + 4] == ["nsenter", "-t", "555", "-n"]
    assert started[-3:] == ["testbed.failsafe.nic", "--config", f"{there}/nic.json"][-3:]
    assert forward.argv[forward.argv.index("-L") + 1] == f"{config.control_socket}:{there}/ctl.sock"
    assert nic.socket == Path(config.control_socket) and nic.pid == 777
    rows = [json.loads(x) for x in (tmp_path / "resources.jsonl").read_text().splitlines()]
    assert {"kind": "process", "name": "777", "server": "far"}.items() <= \
        next(r for r in rows if r["name"] == "777").items()
    assert next(r for r in rows if r["name"] == "777")["start"] == 9999
    assert any(r["kind"] == "file" and r["name"] == there and r.get("server") == "far" for r in rows)
    assert nic.alive()
    nic.stop()
    assert ["kill", "777"] in remote and ["rm", "-rf", "--", there] in remote
    assert Path(config.events_path).read_text() == '{"node": "mec1", "active": true}\n'  # copied here
    assert nic.pid is None


def test_cluster_check_lets_a_nic_run_there_but_not_bpf_and_preflight_checks_it_imports() -> None:
    from testbed.cluster.cluster import Cluster

    def topo(datapath: str):
        return parse_topology({"name": "t", "servers": {"far": {"address": "10.255.0.2"}},
                               "sites": {"a": {"hosts": {"h1": {"ip": "10.0.0.1", "image": "testbed/echo"}}},
                                         "b": {"server": "far", "hosts": {"h2": {
                                             "ip": "10.0.0.2", "image": "testbed/echo", "nic": {"ip": "10.0.0.102", "datapath": datapath,
                                                                       "backups": ["h1"]}}}}},
                               "wan": [{"between": ["a", "b"]}]}, "t.yaml")

    Cluster(topo("auto"), Ledger("ab12")).check(nics=True)
    Cluster(topo("bpf"), Ledger("ab12")).check(nics=False)  # no NICs in this run
    with pytest.raises(TestbedError, match=r"sites.b.hosts.h2.nic.datapath: bpf is not checked on server far"):
        Cluster(topo("bpf"), Ledger("ab12")).check(nics=True)
    assert preflight.has_nics(topo("auto"), "far") and not preflight.has_nics(topo("auto"), "localhost")


def test_server_checks_ask_for_the_nic_program_when_it_runs_there(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []

    def fake(argv, **kw):
        args = shlex.split(argv[-1])
        asked.append(args)
        ok = not (args[1:2] == ["-c"] and args[2] == "import testbed.failsafe.nic")
        return proc.Result(argv, 0 if ok else 1, "6.1.0\n" if args[0] == "uname" else "", "")

    monkeypatch.setattr(proc, "run", fake)
    checks = preflight.server_checks(REMOTE, preflight.TOOLS, nics=True)
    (nic,) = [c for c in checks if c.name == "fail-safe NIC"]
    assert not nic.ok and nic.required and "cannot import testbed.failsafe.nic" in nic.value
    assert not [c for c in preflight.server_checks(REMOTE, preflight.TOOLS) if c.name == "fail-safe NIC"]
