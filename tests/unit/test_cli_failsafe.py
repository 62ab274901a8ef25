"""`testbed failsafe`: argument parsing, simple_switch_CLI-style table_add, output, errors."""

from __future__ import annotations

import argparse
import json
import select
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from testbed import cli_failsafe
from testbed.cli_failsafe import parse_table_add, parse_table_delete
from testbed.errors import UsageError
from testbed.failsafe import control
from testbed.failsafe.control import ControlServer


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="testbed", exit_on_error=False)
    sub = p.add_subparsers(dest="verb")
    cli_failsafe.add_parser(sub)
    return p


def req(*argv: str) -> tuple[str, dict]:
    args = parser().parse_args(["failsafe", "mec1", *argv])
    assert args.func is cli_failsafe.run
    return cli_failsafe.request(args)


def test_table_add_simple_switch_style() -> None:
    assert parse_table_add(["target", "set_service", "10.0.0.11", "udp", "5000", "=>", "1"]) == {
        "table": "target", "action": "set_service", "match": ["10.0.0.11", "udp", "5000"], "params": ["1"]}
    assert parse_table_add(["service", "to_backups", "*", "=>", "10.0.0.12:5000", "10.0.0.13"]) == {
        "table": "service", "action": "to_backups", "match": ["*"], "params": ["10.0.0.12:5000", "10.0.0.13"]}
    assert parse_table_add(["t", "a", "0x0a&&&0xff", "=>"]) == {
        "table": "t", "action": "a", "match": ["0x0a&&&0xff"], "params": []}
    assert parse_table_add(["t", "a", "1", "=>", "p", "priority=7"])["priority"] == 7


@pytest.mark.parametrize("tokens, message", [
    ([], "needs TABLE ACTION"),
    (["target"], "needs TABLE ACTION"),
    (["target", "set_service", "10.0.0.11", "udp", "5000", "1"], "exactly one '=>'"),
    (["target", "set_service", "1", "=>", "2", "=>", "3"], "exactly one '=>'"),
    (["target", "set_service", "=>", "1"], "at least one match field"),
    (["target", "=>", "1", "=>"], "TABLE and ACTION"),
    (["t", "a", "1", "=>", "priority=high"], "priority must be an integer"),
])
def test_table_add_rejects_malformed(tokens: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_table_add(tokens)


def test_table_delete() -> None:
    assert parse_table_delete(["target", "10.0.0.11", "udp", "5000"]) == {
        "table": "target", "match": ["10.0.0.11", "udp", "5000"]}
    with pytest.raises(UsageError):
        parse_table_delete(["target"])
    with pytest.raises(UsageError):
        parse_table_delete(["target", "1", "=>", "2"])


def test_every_command_builds_its_request() -> None:
    assert req("show") == ("show", {})
    assert req("counters") == ("counters", {})
    assert req("heartbeat_show") == ("heartbeat_show", {})
    assert req("table_dump", "service") == ("table_dump", {"table": "service"})
    assert req("table_add", "target", "set_service", "10.0.0.11", "udp", "5000", "=>", "1") == (
        "table_add", {"table": "target", "action": "set_service", "match": ["10.0.0.11", "udp", "5000"],
                      "params": ["1"], "priority": 0})
    assert req("table_add", "--priority", "5", "t", "a", "1", "=>")[1]["priority"] == 5
    assert req("table_delete", "service", "*") == ("table_delete", {"table": "service", "match": ["*"]})
    assert req("heartbeat_add", "svc1", "udp", "100ms", "1.5", "--port", "5000", "--payload", "ping",
               "--expect", "pong") == ("heartbeat_add", {
                   "target": "svc1", "message": "udp", "interval": 0.1, "threshold": 1.5,
                   "port": 5000, "payload": "ping", "expect": "pong"})
    assert req("heartbeat_add", "platform", "icmp", "10ms", "2") == ("heartbeat_add", {
        "target": "platform", "message": "icmp", "interval": 0.01, "threshold": 2.0})
    assert req("heartbeat_delete", "svc1") == ("heartbeat_delete", {"target": "svc1"})
    assert req("mode", "svc1", "on") == ("mode", {"service": "svc1", "mode": "on"})
    assert req("events") == ("events", {})
    assert req("events", "--since", "12.5") == ("events", {"since": 12.5})
    cmd, args = req("events", "--since", "-10")
    assert time.time() - 10.5 < args["since"] < time.time() - 9.5


@pytest.mark.parametrize("argv, message", [
    (["heartbeat_add", "svc", "udp", "zero", "1.5"], "INTERVAL"),
    (["heartbeat_add", "svc", "udp", "0.1", "1.5"], "INTERVAL: a duration needs a unit"),
    (["heartbeat_add", "svc", "udp", "100ms", "-1"], "THRESHOLD"),
    (["heartbeat_add", "svc", "udp", "100ms", "nan"], "THRESHOLD"),
    (["heartbeat_add", "svc", "icmp", "100ms", "1.5", "--port", "80"], "not icmp"),
    (["heartbeat_add", "svc", "udp", "100ms", "1.5", "--port", "70000"], "not a port"),
    (["heartbeat_add", "platform", "udp", "100ms", "1.5"], "needs --port"),
    (["table_add", "target", "set_service", "1", "2"], "'=>'"),
])
def test_bad_usage_raises_usage_error(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        req(*argv)
    assert UsageError("x").exit_code == 2


@pytest.mark.parametrize("argv", [
    ["mode", "svc1", "sideways"],
    ["heartbeat_add", "svc1", "sctp", "100ms", "1.5"],
    ["nonsense"],
    [],
])
def test_argparse_rejects_bad_choices(argv: list[str]) -> None:
    with pytest.raises((argparse.ArgumentError, SystemExit)):
        parser().parse_args(["failsafe", "mec1", *argv])


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("show", "counters", "table_dump", "table_add", "table_delete", "heartbeat_show",
                 "heartbeat_add", "heartbeat_delete", "mode", "events"):
        with pytest.raises(SystemExit) as done:
            parser().parse_args(["failsafe", "mec1", name, "--help"])
        assert done.value.code == 0
        out = capsys.readouterr().out
        assert f"failsafe NODE {name}" in out or name in out.splitlines()[0]
        assert len(out.splitlines()) > 2


# -- against a control server with fake handlers ---------------------------------------------
@pytest.fixture
def nic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, dict]]]:
    """A fake NIC for node mec1 in run ab12: records requests, answers like the real one might."""
    monkeypatch.setattr(control, "RUN_ROOT", tmp_path)
    seen: list[tuple[str, dict]] = []

    def handler(name: str, answer: object):
        def h(args: dict) -> object:
            seen.append((name, args))
            if name == "table_add" and args["table"] == "nosuch":
                raise ValueError("no table 'nosuch' (have target, service)")
            return answer
        return h

    answers = {
        "counters": {"services": {"svc1": {"packets": 10, "bytes": 640, "mode": "normal", "rtt_last_ms": 0.31,
                                           "rtt_avg_ms": 0.29, "transitions": 0}},
                     "ports": {"host": {"rx": 5, "tx": 6}, "net": {"rx": 7, "tx": 8}}},
        "events": [{"time": 12.5, "target": "svc1", "active": True, "reason": "timeout after 0.75 ms"}],
        "table_dump": {"name": "target", "keys": [{"name": "dst_ip", "kind": "exact", "width": 32},
                                                  {"name": "proto", "kind": "exact", "width": 8},
                                                  {"name": "dst_port", "kind": "exact", "width": 16}],
                       "actions": ["set_service"], "entries": [
                           {"match": ["10.0.0.11", "17", "5000"], "action": "set_service", "params": ["1"],
                            "priority": 0, "hits": 42}],
                       "default": {"action": "NoAction", "params": []}, "misses": 3},
        "table_add": None,
        "mode": {"service": "svc1", "mode": "failsafe"},
    }
    server = ControlServer(tmp_path / "ab12" / "nic-mec1.sock", {k: handler(k, v) for k, v in answers.items()})
    stop = threading.Event()

    def loop() -> None:
        ep = select.epoll()
        ep.register(server.fileno(), select.EPOLLIN)
        while not stop.is_set():
            for fd, _ in ep.poll(0.01):
                server.on_readable(fd)
        ep.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield seen
    stop.set()
    thread.join(2)
    server.close()


def main(*argv: str) -> int:
    args = parser().parse_args(["failsafe", *argv])
    return args.func(args)


def test_run_prints_tables(nic: list, capsys: pytest.CaptureFixture[str]) -> None:
    assert main("mec1", "counters") == 0
    out = capsys.readouterr().out
    assert "svc1" in out and "640" in out and "0.31" in out and "net" in out
    assert main("mec1", "--run", "ab12", "events") == 0
    out = capsys.readouterr().out
    assert "timeout after 0.75 ms" in out and "12.5" in out
    assert main("mec1", "table_dump", "target") == 0
    out = capsys.readouterr().out
    assert "dst_ip" in out and "proto" in out and "10.0.0.11" in out and "42" in out and "misses: 3" in out
    assert main("mec1", "table_add", "target", "set_service", "10.0.0.11", "udp", "5000", "=>", "1") == 0
    assert "ok" in capsys.readouterr().out
    assert nic[-1] == ("table_add", {"table": "target", "action": "set_service",
                                     "match": ["10.0.0.11", "udp", "5000"], "params": ["1"], "priority": 0})


def test_run_json(nic: list, capsys: pytest.CaptureFixture[str]) -> None:
    assert main("mec1", "--json", "mode", "svc1", "on") == 0
    assert json.loads(capsys.readouterr().out) == {"service": "svc1", "mode": "failsafe"}
    assert nic[-1] == ("mode", {"service": "svc1", "mode": "on"})


def test_run_reports_nic_errors_and_missing_nics(nic: list) -> None:
    from testbed.errors import TestbedError as NicError

    with pytest.raises(NicError, match="no table 'nosuch'"):
        main("mec1", "table_add", "nosuch", "a", "1", "=>")
    with pytest.raises(NicError, match="unknown command 'heartbeat_show'"):
        main("mec1", "heartbeat_show")
    with pytest.raises(UsageError, match="no running fail-safe NIC for 'mec9'"):
        main("mec9", "show")
    with pytest.raises(UsageError, match="in run ffff"):
        main("mec1", "--run", "ffff", "show")


def test_main_cli_wires_the_verb() -> None:
    from testbed import cli

    args = cli.build_parser().parse_args(["failsafe", "mec1", "mode", "svc1", "auto"])
    assert args.func is cli_failsafe.run
    assert cli_failsafe.request(args) == ("mode", {"service": "svc1", "mode": "auto"})


def test_nested_answers_become_several_narrow_tables(capsys: pytest.CaptureFixture[str]) -> None:
    counters = {"services": {"echo": {"packets": 3, "bytes": 300, "mode": "normal"}},
                "platform": {"mode": "normal", "rtt_avg_ms": 0.24},
                "failsafe_handler": {"translated": 5, "per_backup": {"10.0.0.12": 5}}}
    cli_failsafe.show("counters", counters, title="mec1 counters")
    out = capsys.readouterr().out
    assert "mec1 counters services" in out and "mec1 counters platform" in out
    assert "per_backup" in out and "10.0.0.12" in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_wide_records_are_transposed_and_times_readable(capsys: pytest.CaptureFixture[str]) -> None:
    status = {t: {f"field{i}": i for i in range(15)} for t in ("platform", "echo")}
    cli_failsafe.show("heartbeat_show", status, title="hb")
    out = capsys.readouterr().out
    assert "platform" in out and "echo" in out and "field14" in out and "…" not in out
    cli_failsafe.show("events", [{"time": 1795313212.5, "target": "echo", "active": True, "reason": "x"}])
    out = capsys.readouterr().out
    assert "1.79531e+09" not in out and ":" in out and "yes" in out


def test_failover_and_passive_subcommands_make_their_requests() -> None:
    import argparse

    from testbed import cli_failsafe

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli_failsafe.add_parser(sub)
    args = parser.parse_args(["failsafe", "mec1", "failover"])
    assert cli_failsafe.request(args) == ("failover", {})
    args = parser.parse_args(["failsafe", "mec1", "passive", "off"])
    assert cli_failsafe.request(args) == ("passive", {"mode": "off"})
