"""Unit tests for the command door to a server (ssh argv, quoting, errors) and the preflight, without a server."""

from __future__ import annotations

import shlex

from pathlib import Path

import pytest

from testbed import proc
from testbed.cluster import preflight
from testbed.cluster.server import LOCAL, Server
from testbed.errors import CommandError, SpecError
from testbed.topology.loader import parse_topology
from testbed.topology.model import ServerSpec

REMOTE = Server("b", "10.255.0.2", user="tb", key="/k/id", port=2222, known_hosts="/k/known")


def test_local_server_runs_the_argv_itself() -> None:
    assert LOCAL.local and LOCAL.argv(["ip", "link", "show"]) == ["ip", "link", "show"]


def test_remote_argv_is_ssh_with_batchmode_key_port_and_one_quoted_command() -> None:
    argv = REMOTE.argv(["sh", "-c", "echo 'a b'; true", "x y"])
    assert argv[0] == "ssh" and argv[-3:-1] == ["tb@10.255.0.2", "--"]
    opts = argv[1:-3]
    assert "BatchMode=yes" in opts and opts[opts.index("-i") + 1] == "/k/id"
    assert opts[opts.index("-p") + 1] == "2222" and "UserKnownHostsFile=/k/known" in opts
    assert shlex.split(argv[-1]) == ["sh", "-c", "echo 'a b'; true", "x y"]  # the server's shell splits it back


def test_record_round_trip_and_spec() -> None:
    assert Server.from_record(REMOTE.record()) == REMOTE
    assert Server.of(ServerSpec("b", "10.255.0.2", "tb", "/k/id", 2222, "/k/known")) == REMOTE
    assert Server.of(None) == LOCAL


def test_run_goes_through_proc_and_keeps_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def fake(argv, **kw):
        seen.append((argv, kw["timeout"]))
        raise CommandError(argv, 255, "ssh: connect to host 10.255.0.2 port 2222: Connection refused")

    monkeypatch.setattr(proc, "run", fake)
    with pytest.raises(CommandError, match="Connection refused"):
        REMOTE.run(["true"], timeout=7)
    assert seen[0][0][0] == "ssh" and seen[0][1] == 7


def _topo(docker: bool) -> object:
    host = {"ip": "10.0.0.2", **({"image": "testbed/echo"} if docker else {})}
    return parse_topology({"name": "t", "servers": {"b": {"address": "10.255.0.2"}, "unused": {"address": "10.9.0.1"}},
                           "sites": {"a": {"hosts": {"h1": {"ip": "10.0.0.1"}}},
                                     "s2": {"server": "b", "hosts": {"h2": host}}}}, "t.yaml")


def test_tools_needed_and_used_servers() -> None:
    assert preflight.used_servers(_topo(False)) == ["b"]
    assert "docker" not in preflight.tools_needed(_topo(False), "b")
    assert "docker" in preflight.tools_needed(_topo(True), "b")


def test_preflight_unreachable_is_one_spec_error_at_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(argv, **kw):
        raise CommandError(argv, 255, "ssh: connect to host 10.255.0.2 port 22: No route to host")

    monkeypatch.setattr(proc, "run", fake)
    with pytest.raises(SpecError) as err:
        preflight.preflight(_topo(False), "t.yaml")
    assert err.value.path == "servers.b" and "No route to host" in err.value.message
    assert "\n" not in str(err.value) and err.value.exit_code == 2


def test_preflight_missing_tool_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(argv, **kw):
        remote = shlex.split(argv[-1])
        out = "6.1.0\n" if remote[0] == "uname" else ("docker\nmnexec\n" if remote[0] == "sh" else "")
        return proc.Result(argv, 0, out, "")

    monkeypatch.setattr(proc, "run", fake)
    with pytest.raises(SpecError, match=r"servers.b: server not usable: mnexec: missing; docker: missing"):
        preflight.preflight(_topo(True), "t.yaml")


def test_short_commands_use_the_runs_master_connection_long_sessions_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    door = replace(REMOTE, control_path="/run/testbed/ab/cm-b")
    seen = []
    monkeypatch.setattr(proc, "run", lambda argv, **kw: seen.append(argv) or proc.Result(argv, 0, "", ""))
    door.run(["true"])
    assert "ControlPath=/run/testbed/ab/cm-b" in seen[0] and "ControlMaster=no" in seen[0]
    assert not any("ControlPath" in o for o in door.argv(["bash"], tty=True) + door.ssh_options())
    assert "control_path" not in door.record() and Server.from_record(door.record()) == REMOTE
    REMOTE.run(["true"])
    assert not any("ControlPath" in o for o in seen[1])


def test_preflight_names_images_missing_on_the_servers_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    topo = _topo(True)
    assert preflight.images_needed(topo, "b") == ("testbed/base", "testbed/echo") and preflight.images_needed(_topo(False), "b") == ()

    def fake(argv, **kw):
        remote = shlex.split(argv[-1])
        if remote[0] == "uname":
            out = "6.1.0\n"
        elif remote[0] == "docker":
            out = "24.0.5\n"
        elif remote[:2] == ["sh", "-c"] and remote[2] == preflight.MISSING_IMAGES:
            out = "testbed/base\n"
        else:
            out = ""
        return proc.Result(argv, 0, out, "")

    monkeypatch.setattr(proc, "run", fake)
    with pytest.raises(SpecError, match=r"servers.b: server not usable: images: missing testbed/base$"):
        preflight.preflight(topo, "t.yaml")


def test_links_with_both_ends_on_one_server_need_its_emulator_a_link_between_two_others_its_first() -> None:
    from testbed.cluster.cluster import Cluster
    from testbed.errors import TestbedError
    from testbed.ledger import Ledger

    def topo(wan: dict, access: dict | None = None):
        return parse_topology({"name": "t", "servers": {"b": {"address": "10.255.0.2"}, "c": {"address": "10.255.0.3"}},
                               "sites": {"a": {"hosts": {"h1": {"ip": "10.0.0.1"}}},
                                         "b": {"server": "b", "hosts": {"h2": {"ip": "10.0.0.2", **(access or {})}}},
                                         "c": {"server": "c", "hosts": {"h3": {"ip": "10.0.0.3"}}}},
                               "wan": [{"between": ["a", "b"]}, wan]}, "t.yaml")

    plain = topo({"between": ["a", "c"]})
    assert not preflight.emulates_links(plain, "b") and not preflight.emulates_links(plain, "c")
    shaped = topo({"between": ["a", "c"], "delay": "5ms"}, {"access": {"delay": "2ms"}})
    assert preflight.emulates_links(shaped, "b") and not preflight.emulates_links(shaped, "c")
    Cluster(shaped, Ledger("ab12")).check(nics=True)  # an access link there, a WAN link to here: fine
    across = topo({"between": ["b", "c"]})  # between two other servers: emulated on the first (b), not refused
    Cluster(across, Ledger("ab12")).check(nics=True)
    assert [(first, second) for _, first, second in preflight.remote_pairs(across)] == [("b", "c")]
    assert preflight.emulates_links(across, "b") and not preflight.emulates_links(across, "c")
    assert preflight.remote_pairs(plain) == []


def test_preflight_a_wan_between_two_other_servers_needs_the_first_to_log_in_to_the_second(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("b", "c"):
        (tmp_path / name).write_text("key\n")
    topo = parse_topology({"name": "t", "servers": {"b": {"address": "10.255.0.2", "key": str(tmp_path / "b")},
                                                    "c": {"address": "10.255.0.6", "key": str(tmp_path / "c")}},
                           "sites": {"b": {"server": "b", "hosts": {"h2": {"ip": "10.0.0.2"}}},
                                     "c": {"server": "c", "hosts": {"h3": {"ip": "10.0.0.3"}}}},
                           "wan": [{"between": ["b", "c"]}]}, "t.yaml")
    seen = []

    def fake(argv, **kw):
        remote = shlex.split(argv[-1]) if argv[0] == "ssh" else argv
        seen.append((argv, remote))
        if remote[0] == "uname":
            return proc.Result(argv, 0, "6.1.0\n", "")
        if remote[0] == "ssh":  # b logging in to c, with c's key
            return proc.Result(argv, 255, "", "root@10.255.0.6: Permission denied (publickey).\n")
        return proc.Result(argv, 0, "", "")

    monkeypatch.setattr(proc, "run", fake)
    with pytest.raises(SpecError, match=r"wan\[0\]: server b cannot log in to server c .*Permission denied"):
        preflight.preflight(topo, "t.yaml")
    (argv, remote), = [(a, r) for a, r in seen if r[0] == "ssh"]
    assert "root@10.255.0.2" in argv and str(tmp_path / "b") in argv  # run on b through b's door
    assert remote[-2:] == ["root@10.255.0.6", "true"] and str(tmp_path / "c") in remote  # with c's key
