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
    args = prelaunch.run_args("d2", "tbab-d2", "ab", "testbed/echo", ["sh"], [], None, None, {}, ())
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
    for plan in (_plan("far"), _plan(LOCAL_SERVER)):
        prelaunch.record(book, plan)  # the service container, at start-up
        prelaunch.record_holder(book, plan)  # its namespace holder, when first needed
    rows = [json.loads(x) for x in (tmp_path / "resources.jsonl").read_text().splitlines()]
    assert [r.get("server") for r in rows] == ["far", "far", None, None]
    assert [r["name"] for r in rows] == ["tbab-d2", "tbab-d2-ns"] * 2


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
        out = routes if args[-3:] == ["sh", "-c", engine.LINKS_DOWN] else links if "link" in args and "show" in args \
            else routes if "route" in args and "show" in args else ""
        return proc.Result(list(args), 0, out, "")

    monkeypatch.setattr(Server, "run", run)
    ns = engine.Namespaces(REMOTE)
    state = ns.links_down(42)
    assert [r["dst"] for r in state.routes] == ["default"]
    assert seen == [["nsenter", "-t", "42", "-n", "sh", "-c", engine.LINKS_DOWN]]  # routes, then down: one round trip
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


def test_probe_script_answers_for_a_udp_echo_and_not_for_a_silent_port() -> None:
    import threading

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as echo, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        echo.bind(("127.0.0.1", 0))
        mute.bind(("127.0.0.1", 0))

        def answer() -> None:
            data, peer = echo.recvfrom(256)
            echo.sendto(data, peer)

        threading.Thread(target=answer, daemon=True).start()
        check = {"kind": "udp", "port": echo.getsockname()[1], "send": "ping", "expect": "ping", "path": "/"}
        ok = proc.run([sys.executable, "-c", engine.PROBE, json.dumps(check), "2"], timeout=10)
        check["port"] = mute.getsockname()[1]
        silent = proc.run([sys.executable, "-c", engine.PROBE, json.dumps(check), "0.3"], timeout=10)
    assert ok.stdout.strip() == "1"
    assert silent.stdout.strip() == "0"


def test_find_pid_and_write_scripts_run_standalone(tmp_path: Path) -> None:
    me = str(os.getpid())
    assert proc.run([sys.executable, "-c", engine.FIND_PID, me, me], timeout=20).stdout.strip() == me
    assert proc.run([sys.executable, "-c", engine.FIND_PID, str(2**22 + 12345), "1"], timeout=20).stdout.strip() == ""
    target = tmp_path / "a" / "delay_ms"
    proc.run([sys.executable, "-c", engine.WRITE, str(target)], input="12.5\n", timeout=10)
    assert target.read_text() == "12.5\n"


def test_remote_readiness_pids_signals_and_files_go_through_the_door(monkeypatch: pytest.MonkeyPatch) -> None:
    from testbed.experiment.spec import Readiness

    seen: list[tuple[list[str], str | None]] = []

    def run(self, args, check=True, input=None, **kw):
        args = list(args)
        seen.append((args, input))
        out = {"cat": "7\n", "python3": "4242\n"}.get(args[0], "1\n" if "nsenter" == args[0] else "")
        return proc.Result(args, 0, out, "")

    monkeypatch.setattr(Server, "run", run)
    monkeypatch.setattr(engine.netns, "listening", lambda *a: pytest.fail("read this machine's /proc"))
    monkeypatch.setattr(engine.netns, "in_netns", lambda *a: pytest.fail("entered a namespace here"))
    monkeypatch.setattr(engine.os, "kill", lambda *a: pytest.fail("signalled a process here"))
    ns = engine.namespaces_of(type("Node", (), {"door": REMOTE})())
    assert ns.door is REMOTE
    assert ns.probe(42, Readiness("udp", 7000, send="ping", expect="ping"), 3.0)
    argv, _ = seen[-1]
    assert argv[:6] == ["nsenter", "-t", "42", "-n", "python3", "-c"] and argv[6] == engine.PROBE
    assert json.loads(argv[7]) == {"kind": "udp", "port": 7000, "send": "ping", "expect": "ping", "path": "/"}
    assert ns.read_text(40, "/run/testbed/main.pid") == "7\n"
    assert seen[-1][0] == ["cat", "/proc/40/root/run/testbed/main.pid"]
    assert ns.host_pid(40, 7) == 4242
    assert seen[-1][0][-2:] == ["40", "7"]
    ns.write_text(40, "/run/echo/delay_ms", "5\n")
    assert seen[-1] == (["python3", "-c", engine.WRITE, "/proc/40/root/run/echo/delay_ms"], "5\n")
    ns.kill(4242)
    assert seen[-1][0] == ["kill", "-KILL", "4242"]


def test_services_and_traffic_use_the_hosts_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from testbed.experiment import services, traffic
    from testbed.experiment.spec import Readiness, ServicePort, ServiceRun

    calls: list[tuple] = []

    class FakeNs:
        def wait_ports(self, wanted, timeout):
            calls.append(("wait_ports", dict(wanted), timeout))
            return []

        def probe(self, pid, check, timeout):
            calls.append(("probe", pid, check.kind, timeout))
            return True

        def read_text(self, pid, path):
            calls.append(("read", pid, path))
            return "9\n"

        def host_pid(self, cpid, inner):
            return 900 + inner

        def kill(self, pid):
            calls.append(("kill", pid))

        def write_text(self, pid, path, text):
            calls.append(("write", pid, path, text))

    node = SimpleNamespace(name="mec2", pid=77, cpid=78, namespaces=FakeNs(), sidecars={})
    host = SimpleNamespace(image="testbed/echo", is_docker=True)
    tb = SimpleNamespace(node=lambda name: node, topo=SimpleNamespace(host=lambda name: host))
    monkeypatch.setattr(services, "resolved", lambda tb, svc: svc)
    listen = ServiceRun(host="mec2", name="echo", ports=(ServicePort("udp", 7000),))
    services.wait_ready(tb, listen)
    assert calls[-1] == ("wait_ports", {"echo": (77, [("udp", 7000)])}, 15.0)
    services.wait_ready(tb, ServiceRun(host="mec2", name="echo", ready=Readiness("udp", 7000, timeout_s=4)))
    assert calls[-1] == ("probe", 77, "udp", 4)
    assert services.ready_once(tb, ServiceRun(host="mec2", name="echo", ready=Readiness("tcp", 7001)))
    assert calls[-1] == ("probe", 77, "tcp", 0.0)
    assert services.main_pid(node) == 909
    assert services.kill(tb, listen) == "kill -9 echo (pid 909)"
    assert calls[-1] == ("kill", 909)
    services.set_delay(tb, ServiceRun(host="mec2", name="echo", delay_control="/run/echo/delay_ms"), 20)
    assert calls[-1] == ("write", 78, "/run/echo/delay_ms", "20\n")
    assert traffic.wait_listening(node, 5201)
    assert calls[-1] == ("wait_ports", {"mec2": (77, [("tcp", 5201)])}, 10.0)


def test_cluster_links_answer_tunnel_links_and_hand_the_rest_to_the_runs_backend() -> None:
    from testbed.cluster.links import ClusterLinks, TunnelShaping
    from testbed.topology.model import Shape

    sent: list[tuple] = []

    class Backend:
        name = "userspace"
        netns = "tbab-le"

        def request(self, cmd, **args):
            sent.append(("emulator", cmd, args))

        def set_up(self, link_id, up):
            sent.append(("backend set_up", link_id, up))

        def shape(self, link_id, forward=None, reverse=None):
            sent.append(("backend shape", link_id, forward, reverse))

    backend = Backend()
    links = ClusterLinks(backend, {"wan-a-b": TunnelShaping(backend, "wan-a-b", "s1-eth2", "wt1s", "wt1t")})
    assert links.name == "userspace" and links.netns == "tbab-le"
    links.set_up("wan-a-b", False)
    links.shape("wan-a-b", forward=Shape(delay_ms=40.0))
    links.set_up("wan-a-c", True)
    assert sent[0] == ("emulator", "down", {"link_id": "wan-a-b"})
    assert sent[1][:2] == ("emulator", "set") and sent[1][2]["forward"]["delay_ms"] == 40.0
    assert "reverse" not in sent[1][2]
    assert sent[2] == ("backend set_up", "wan-a-c", True)


def test_a_host_starts_as_one_container_and_its_holder_joins_that_namespace_later() -> None:
    plan = _plan(LOCAL_SERVER)
    assert plan.run_args["network_mode"] == "none" and plan.run_args["hostname"] == "d2"
    assert plan.holder_args["network_mode"] == "container:tbab-d2" and "hostname" not in plan.holder_args
    assert plan.holder_args["labels"]["testbed.role"] == "netns"
    again = prelaunch.joined(plan.run_args, plan.holder_name)  # a recovered service container
    assert again["network_mode"] == "container:tbab-d2-ns" and "hostname" not in again
    assert {k: v for k, v in again.items() if k not in ("network_mode",)} == \
        {k: v for k, v in plan.run_args.items() if k not in ("network_mode", "hostname")}
    assert plan.run_args["network_mode"] == "none", "the plan itself is left as it was"
