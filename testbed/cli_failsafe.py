"""The `testbed failsafe NODE CMD ...` verb: talks to a running fail-safe NIC, in the spirit of simple_switch_CLI.

Each command becomes one control request (testbed.control's protocol); the request args (the wire format the NIC's
handlers receive) are:

    show                                  {}
    counters                              {}
    table_dump TABLE                      {"table"}
    table_add TABLE ACTION M... => P...   {"table", "action", "match": [str], "params": [str], "priority": int}
    table_delete TABLE M...               {"table", "match": [str]}
    heartbeat_show                        {}
    heartbeat_add T MSG INTERVAL THRESH   {"target", "message", "interval", "threshold",
                                           optional "port", "payload", "expect" (text)}
    heartbeat_delete TARGET               {"target"}
    mode SERVICE on|off|auto              {"service", "mode"}
    events [--since T]                    {"since": float} (only when given; wall-clock seconds,
                                           a negative T means "the last -T seconds")

Match and parameter values are passed as text, exactly as typed ("10.0.0.0/24", "udp",
"0x0a&&&0xff", "10.0.0.12:5000"); the NIC parses them against the table's key kinds.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import datetime
from typing import Any, Sequence

from testbed.errors import UsageError

ARROW = "=>"
MODES = ("on", "off", "auto")
MESSAGES = ("icmp", "udp", "tcp")
#: records with more columns than this are printed one column per record
WIDE = 8


def parse_table_add(tokens: Sequence[str]) -> dict[str, Any]:
    """`TABLE ACTION MATCH... => PARAMS... [PRIORITY]` as request args (UsageError if malformed).

    As in simple_switch_CLI, "=>" separates the match fields from the action parameters and
    is required even when there are no parameters. A priority (for ternary tables) may be
    given with --priority, or as a trailing "priority=N" token.
    """
    tokens = list(tokens)
    if len(tokens) < 2:
        raise UsageError("table_add needs TABLE ACTION MATCH... => PARAMS...")
    table, action, rest = tokens[0], tokens[1], tokens[2:]
    if ARROW in (table, action):
        raise UsageError("table_add needs TABLE and ACTION before the match fields")
    if rest.count(ARROW) != 1:
        raise UsageError(f"table_add: put exactly one {ARROW!r} between the match fields and the action parameters "
                         f"(got {rest.count(ARROW)}); e.g. table_add target set_service 10.0.0.11 udp 5000 => 1")
    cut = rest.index(ARROW)
    match, params = rest[:cut], rest[cut + 1:]
    if not match:
        raise UsageError("table_add: at least one match field is needed before '=>'")
    out: dict[str, Any] = {"table": table, "action": action, "match": match, "params": params}
    if params and params[-1].startswith("priority="):
        out["priority"] = _int(params.pop()[len("priority="):], "priority")
    return out


def parse_table_delete(tokens: Sequence[str]) -> dict[str, Any]:
    """`TABLE MATCH...` as request args."""
    tokens = list(tokens)
    if len(tokens) < 2:
        raise UsageError("table_delete needs TABLE MATCH...")
    if ARROW in tokens:
        raise UsageError("table_delete takes match fields only (no '=>')")
    return {"table": tokens[0], "match": tokens[1:]}


def request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """(command, request args) for parsed command-line `args`."""
    cmd = args.fs_cmd
    if cmd in ("show", "counters", "heartbeat_show", "failover"):
        return cmd, {}
    if cmd == "passive":
        return cmd, {"mode": args.mode}
    if cmd == "table_dump":
        return cmd, {"table": args.table}
    if cmd == "table_add":
        req = parse_table_add([args.table, args.action, *args.rest])
        if args.priority is not None:
            if "priority" in req:
                raise UsageError("table_add: priority given twice")
            req["priority"] = args.priority
        req.setdefault("priority", 0)
        return cmd, req
    if cmd == "table_delete":
        return cmd, parse_table_delete([args.table, *args.match])
    if cmd == "heartbeat_add":
        return cmd, _heartbeat_request(args)
    if cmd == "heartbeat_delete":
        return cmd, {"target": args.target}
    if cmd == "mode":
        return cmd, {"service": args.service, "mode": args.mode}
    if cmd == "events":
        if args.since is None:
            return cmd, {}
        return cmd, {"since": args.since if args.since >= 0 else time.time() + args.since}
    raise UsageError(f"unknown failsafe command {cmd!r}")


def _heartbeat_request(args: argparse.Namespace) -> dict[str, Any]:
    interval = _duration(args.interval, "INTERVAL")
    threshold = _positive(args.threshold, "THRESHOLD (ratio)")
    if args.message == "icmp" and args.port is not None:
        raise UsageError("heartbeat_add: --port is for udp and tcp heartbeats, not icmp")
    if args.message in ("udp", "tcp") and args.port is None and args.target == "platform":
        raise UsageError(f"heartbeat_add: a {args.message} platform heartbeat needs --port")
    req: dict[str, Any] = {"target": args.target, "message": args.message, "interval": interval,
                           "threshold": threshold}
    for name in ("port", "payload", "expect"):
        value = getattr(args, name)
        if value is not None:
            req[name] = value
    if "port" in req and not 0 < req["port"] < 65536:
        raise UsageError(f"heartbeat_add: --port {req['port']} is not a port number")
    return req


def _positive(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{what} must be a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"{what} must be > 0, got {text!r}")
    return value


def _duration(text: str, what: str) -> float:
    """A duration > 0 in the testbed's one grammar (`100ms`, `1s`, `250us`), in seconds."""
    from testbed.errors import SpecError
    from testbed.topology.units import positive_duration_s

    try:
        return positive_duration_s(text, what)
    except SpecError as exc:
        raise UsageError(f"{what}: {exc.message}") from None


def _int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"{what} must be an integer, got {text!r}") from None


# -- the argparse side ---------------------------------------------------------------------
def add_parser(subparsers: Any) -> None:
    """Add the `failsafe` verb and its commands to the main CLI's subparsers."""
    p = subparsers.add_parser(
        "failsafe", help="inspect and configure a running fail-safe NIC (tables, heartbeats, modes)",
        description="Talk to the fail-safe NIC in front of NODE through its control socket "
                    "(/run/testbed/RID/nic-NODE.sock), like simple_switch_CLI for a P4 switch.")
    p.add_argument("node", metavar="NODE", help="the host whose NIC to talk to, e.g. mec1")
    p.add_argument("--run", metavar="RID", help="run id (default: the only run with a NIC for NODE)")
    p.add_argument("--json", action="store_true", help="print the NIC's raw JSON answer")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the NIC (default 5)")
    p.set_defaults(func=run)
    sub = p.add_subparsers(dest="fs_cmd", metavar="CMD", required=True)

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help)

    cmd("show", "configuration, per-target modes and a summary of the tables")
    cmd("counters", "per service: packets, bytes, mode, RTT last/avg, transitions; and port counters")
    sp = cmd("table_dump", "every entry of a table with its hit count, and the default action")
    sp.add_argument("table", metavar="TABLE", help="target (classifier) or service (fail-safe handler)")
    sp = cmd("table_add", "add an entry: table_add TABLE ACTION MATCH... => PARAMS...")
    sp.add_argument("--priority", type=int, help="entry priority (ternary tables; higher wins)")
    sp.add_argument("table", metavar="TABLE", help="target or service")
    sp.add_argument("action", metavar="ACTION", help="set_service (target) or to_backups (service)")
    sp.add_argument("rest", nargs=argparse.REMAINDER, metavar="MATCH... => PARAMS...",
                    help="match fields, '=>', action parameters; e.g. "
                         "`table_add target set_service 10.0.0.11 udp 5000 => 1` or "
                         "`table_add service to_backups '*' => 10.0.0.12:5000 10.0.0.13:5000`")
    sp = cmd("table_delete", "delete the entry with these match fields: table_delete TABLE MATCH...")
    sp.add_argument("table", metavar="TABLE")
    sp.add_argument("match", nargs="+", metavar="MATCH")
    cmd("heartbeat_show", "the heartbeat table: target, message, interval, threshold, RTTs, mode")
    sp = cmd("heartbeat_add", "add or replace a heartbeat: <target, message, interval, threshold>")
    sp.add_argument("target", metavar="TARGET", help="'platform' or a service name")
    sp.add_argument("message", metavar="MESSAGE", choices=MESSAGES, help="icmp, udp or tcp")
    sp.add_argument("interval", metavar="INTERVAL", help="time between heartbeats, with its unit, e.g. 100ms")
    sp.add_argument("threshold", metavar="THRESHOLD", help="RTT_last / RTT_avg above this is a failure, e.g. 1.5")
    sp.add_argument("--port", type=int, help="destination port (udp, tcp)")
    sp.add_argument("--payload", help="request payload, as text (udp)")
    sp.add_argument("--expect", help="text the reply must contain (udp); default: any reply")
    sp = cmd("heartbeat_delete", "stop sending heartbeats to TARGET")
    sp.add_argument("target", metavar="TARGET")
    sp = cmd("mode", "force a service into fail-safe (on), out of it (off), or back to detection (auto)")
    sp.add_argument("service", metavar="SERVICE", help="a service name, or 'platform'")
    sp.add_argument("mode", metavar="MODE", choices=MODES, help="on, off or auto")
    cmd("failover", "what the NIC did for failover: packets per backup, relayed, dropped, no backup, bounds hit")
    sp = cmd("passive", "turn passive failure evidence (RST / ICMP unreachable from a critical port) on or off")
    sp.add_argument("mode", metavar="MODE", choices=("on", "off"), help="on or off")
    sp = cmd("events", "fail-safe transitions with timestamps and reasons")
    sp.add_argument("--since", type=float, metavar="T",
                    help="only events at or after wall-clock time T (Unix seconds); negative: the last -T seconds")


def run(args: argparse.Namespace) -> int:
    """Send the command in `args` to the NIC and print its answer."""
    from testbed.control import call
    from testbed.failsafe.control import socket_for

    cmd, req = request(args)
    result = call(socket_for(args.node, args.run), cmd, timeout=args.timeout, **req)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        show(cmd, result, title=f"{args.node} {cmd}")
    return 0


# -- printing ------------------------------------------------------------------------------
def show(cmd: str, result: Any, title: str = "") -> None:
    """Print a NIC answer readably: tables for lists of records and dicts of records."""
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    if cmd == "table_dump" and isinstance(result, dict) and "entries" in result:
        _table_dump(console, result)
        return
    if result is None or (cmd in ("table_add", "table_delete", "heartbeat_add", "heartbeat_delete", "mode")
                          and not isinstance(result, (dict, list))):
        console.print(f"{title}: ok" + ("" if result in (None, True) else f" ({result})"))
        return
    _render(console, title, result)


def _render(console: Any, title: str, value: Any) -> None:
    if _records(value):
        console.print(_grid(title, value))
    elif isinstance(value, dict):
        scalars = {k: v for k, v in value.items() if not isinstance(v, (dict, list))}
        if scalars:
            console.print(_grid(title, {k: {"value": v} for k, v in scalars.items()}, key_header=""))
        for k, v in value.items():
            if isinstance(v, (dict, list)):
                _render(console, f"{title} {k}".strip(), v)
    elif isinstance(value, list):
        console.print(f"[bold]{title}[/bold]" if title else "")
        if not value:
            console.print("  (none)")
        for item in value:
            console.print(f"  {_cell(item)}")
    else:
        console.print(f"{title}: {_cell(value)}" if title else _cell(value))


def _records(value: Any) -> bool:
    """True for a non-empty dict or list of flat dicts (rendered as one table, a row per dict)."""
    items = list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else []
    return bool(items) and all(
        isinstance(v, dict) and not any(isinstance(x, dict) for x in v.values()) for v in items)


def _grid(title: str, records: Any, key_header: str = "name") -> Any:
    from rich.table import Table

    table = Table(title=title or None, title_justify="left", show_lines=False)
    rows = list(records.items()) if isinstance(records, dict) else [(None, r) for r in records]
    columns: list[str] = []
    for _, rec in rows:
        columns += [c for c in rec if c not in columns]
    if isinstance(records, dict):
        table.add_column(key_header)
    for c in columns:
        table.add_column(c)
    if len(columns) > WIDE and len(rows) <= WIDE // 2:  # few wide records: a column per record
        return _transposed(title, rows, columns, key_header)
    for key, rec in rows:
        cells = [_cell(rec.get(c), c) for c in columns]
        table.add_row(*([str(key)] if isinstance(records, dict) else []), *cells)
    return table


def _transposed(title: str, rows: list, columns: list[str], key_header: str) -> Any:
    from rich.table import Table

    table = Table(title=title or None, title_justify="left")
    table.add_column(key_header if rows and rows[0][0] is not None else "")
    for i, (key, _) in enumerate(rows):
        table.add_column(str(key) if key is not None else f"#{i}")
    for c in columns:
        table.add_row(c, *[_cell(rec.get(c), c) for _, rec in rows])
    return table


def _table_dump(console: Any, dump: dict) -> None:
    from rich.table import Table

    keys = dump.get("keys", [])
    table = Table(title=f"table {dump.get('name', '?')}", title_justify="left")
    for k in keys:
        table.add_column(str(k.get("name")))
    for name in ("action", "params", "priority", "hits"):
        table.add_column(name)
    for e in dump.get("entries", []):
        match = list(e.get("match", []))
        match += [""] * (len(keys) - len(match))
        table.add_row(*map(str, match[: max(len(keys), 1) if keys else 0]), str(e.get("action")),
                      " ".join(map(str, e.get("params", []))), str(e.get("priority", 0)), str(e.get("hits", 0)))
    console.print(table)
    default = dump.get("default") or {}
    console.print(f"default: {default.get('action')} {' '.join(map(str, default.get('params', [])))}".rstrip()
                  + f"   misses: {dump.get('misses', 0)}")


def _cell(value: Any, column: str = "") -> str:
    """A value as table text; wall-clock `time` columns as local time of day."""
    if value is None:
        return "-"
    if column == "time" and isinstance(value, (int, float)) and value > 1e9:
        return datetime.fromtimestamp(value).strftime("%H:%M:%S.%f")[:-3]
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return " ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)
