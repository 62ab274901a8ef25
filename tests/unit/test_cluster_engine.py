"""Unit tests for Docker hosts on another server: the engine's socket forward, the shell over the door,
the namespaces reached there, and the ledger's server of their containers (no server, no engine)."""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
from pathlib import Path

import pytest

from testbed import proc
from testbed.cluster import engine
from testbed.cluster.server import LOCAL, Server
from testbed.emulation import prelaunch
from testbed.ledger import Ledger
from testbed.topology.model import LOCAL_SERVER

REMOTE = Server("far", "10.255.0.2", key="/k/id", known_hosts="/k/known")


def _plan(server: str = "far") -> prelaunch.ContainerPlan:
    holder = prelaunch.holder_args("d2", "tbab-d2", "ab")
    args = prelaunch.run_args("d2", "tbab-d2", "ab", "testbed/echo", ["sh"], [], None, None, {}, (), netns=holder["name"])
    return prelaunch.ContainerPlan("d2", "tbab-d2", "testbed/echo", args, holder, server)


def test_forward_is_one_ssh_with_the_doors_options_to_the_engine_socket(tmp_path: Path) -> None:
    argv = engine.forward_argv(REMOTE, tmp_path / "docker-far.sock")
    assert argv[0] == "ssh" and argv[-1] == "root@10.255.0.2" and "-N" in argv
    assert argv[argv.index("-L") + 1] == f"{tmp_path / 'docker-far.sock'}:{engine.REMOTE_SOCKET}"
    assert "BatchMode=yes" in argv and argv[argv.index("-i") + 1] == "/k/id" and "UserKnownHostsFile=/k/known" in argv


def test_shell_is_docker_exec_over_ssh_tt_on_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr(proc, "spawn_pty", lambda argv: seen.append(argv) or (0, 0, None))
    prelaunch.spawn_shell("tbab-d2", "d2", REMOTE)
    prelaunch.spawn_shell("tbab-d2", "d2")
    remote, local = seen
    assert remote[0] == "ssh" and "-tt" in remote and shlex.split(remote[-1]) == prelaunch.shell_argv("tbab-d2", "d2")
    assert local == prelaunch.shell_argv("tbab-d2", "d2") and LOCAL.argv(local, tty=True) == local


def test_remote_containers_are_recorded_with_their_server(tmp_path: Path) -> None:
    book = Ledger("abcd", tmp_path, state_dir=tmp_path / "state")
    prelaunch.record(book, _plan("far"))
    prelaunch.record(book, _plan(LOCAL_SERVER))
    rows = [json.loads(x) for x in (tmp_path / "resources.jsonl").read_text().splitlines()]
    assert [r.get("server") for r in rows] == ["far", "far", None, None]
    assert {r["name"] for r in rows} == {"tbab-d2", "tbab-d2-ns"}


def test_prelaunch_refuses_a_remote_plan_without_its_engine_before_recording(tmp_path: Path) -> None:
    from testbed.errors import TestbedError

    class Book:
        recorded: list = []

        def record(self, *a, **k):
            self.recorded.append(a)

    book = Book()
    with pytest.raises(TestbedError, match="no Docker engine for server far"):
        prelaunch.prelaunch(None, [_plan("far")], book)  # type: ignore[arg-type]
    assert book.recorded == []


def test_namespaces_on_a_server_go_through_its_door(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    links = json.dumps([{"ifname": "lo"}, {"ifname": "d2-eth0"}])
    routes = json.dumps([{"dst": "default", "gateway": "10.0.0.1", "dev": "d2-eth0"},
                         {"dst": "10.0.0.0/24", "dev": "d2-eth0", "protocol": "kernel"}])

    def run(self, args, **kw):
        seen.append(list(args))
        out = links if "link" in args and "show" in args else routes if "route" in args and "show" in args else ""
        return proc.Result(list(args), 0, out, "")

    monkeypatch.setattr(Server, "run", run)
    ns = engine.Namespaces(REMOTE)
    state = ns.links_down(42)
    assert [r["dst"] for r in state.routes] == ["default"]
    assert ["nsenter", "-t", "42", "-n", "ip", "link", "set", "dev", "d2-eth0", "down"] in seen
    ns.links_up(42, state)
    assert ["nsenter", "-t", "42", "-n", "ip", "route", "replace", "default", "via", "10.0.0.1", "dev", "d2-eth0"] in seen


def test_wait_ports_script_reads_proc_of_the_pid_it_is_given() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        wanted = {"up": [os.getpid(), [["tcp", port]]], "down": [os.getpid(), [["udp", port]]]}
        res = proc.run([sys.executable, "-c", engine.WAIT_PORTS, json.dumps(wanted), "0.1"], timeout=10)
    assert json.loads(res.stdout) == ["down"]
