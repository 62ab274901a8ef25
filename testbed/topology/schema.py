"""Strict readers for one YAML section each (shape, heartbeat, service, NIC, host, WAN link) into model objects."""

from __future__ import annotations

import ast
import json
import math
import re
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, TypeVar

from testbed.errors import SpecError
from testbed.topology import units
from testbed.topology.addressing import AddressBook, parse_ip, parse_mac
from testbed.topology.model import (
    IFNAME_MAX, LEARNING, ControllerSpec, CriticalService, HeartbeatSpec, HostSpec, NicSpec, Shape, WanLinkSpec,
)
from testbed.topology.units import describe

#: Names of sites and hosts: they become Mininet node names and parts of interface names.
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
#: Longest host name: `NAME-eth0` must fit the kernel's 15-character interface names.
HOST_NAME_MAX = IFNAME_MAX - len("-eth0")
SHAPE_KEYS = ("bw", "delay", "jitter", "loss", "max_queue_size")
_HOST_KEYS = ("ip", "mac", "image", "cpu", "memory", "env", "volumes", "command", "access", "nic", "anycast",
              "device")
_DOCKER_ONLY = ("cpu", "memory", "env", "volumes", "command", "nic")
_NIC_KEYS = ("ip", "mac", "backups", "interval", "threshold", "hysteresis", "learn", "min_rtt", "platform", "services",
             "passive", "datapath", "carry_tcp")
NIC_DATAPATHS = ("auto", "bpf", "python")
_HEARTBEAT_KEYS = ("message", "payload", "expect", "interval", "threshold")
_SERVICE_KEYS = ("name", "proto", "port", "heartbeat", "backups")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

T = TypeVar("T", HostSpec, NicSpec)


def join(path: str, key: object) -> str:
    """The path of `key` inside `path` (`sites.edge1` + `hosts` -> `sites.edge1.hosts`)."""
    return f"{path}.{key}" if path else str(key)


def mapping(value: object, path: str, allowed: tuple[str, ...] | None = None) -> Mapping[str, Any]:
    """`value` as a mapping with string keys; with `allowed`, any other key is an error naming it."""
    if not isinstance(value, Mapping):
        raise SpecError(path, f"expected a mapping, got {describe(value)}")
    for key in value:
        if not isinstance(key, str):
            raise SpecError(join(path, key), f"expected a string key, got {describe(key)}")
        if allowed is not None and key not in allowed:
            raise SpecError(join(path, key), f"unknown key; expected one of: {', '.join(allowed)}")
    return value


def sequence(value: object, path: str) -> list[Any]:
    """`value` as a list (YAML sequence)."""
    if not isinstance(value, list):
        raise SpecError(path, f"expected a list, got {describe(value)}")
    return value


def string(value: object, path: str, what: str = "a string") -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise SpecError(path, f"expected {what}, got {describe(value)}")
    return value


def choice(value: object, path: str, options: tuple[str, ...]) -> str:
    """One of the strings in `options`."""
    if value not in options:
        raise SpecError(path, f"expected one of {', '.join(options)}, got {describe(value)}")
    return str(value)


def node_name(value: object, path: str, what: str) -> str:
    """A site or host name: a letter, then letters, digits or underscores."""
    if not isinstance(value, str) or not NAME.match(value):
        raise SpecError(path, f"{what} name must be a letter then letters, digits or _, got {describe(value)}")
    return value


def port(value: object, path: str) -> int:
    """A TCP/UDP port number, 1..65535."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise SpecError(path, f"expected a port number 1..65535, got {describe(value)}")
    return value


def backups(value: object, path: str) -> tuple[str, ...]:
    """A list of backups, each `host` or `host:port` (existence is checked later, with the whole topology)."""
    result = []
    for i, item in enumerate(sequence(value, path)):
        where = f"{path}[{i}]"
        if isinstance(item, str) and ":" in item:
            host, _, num = item.partition(":")
            node_name(host, where, "backup host")
            port(int(num) if num.isdigit() else num, where)
        else:
            node_name(item, where, "backup host")
        result.append(str(item))
    return tuple(result)


def shape(data: object, path: str, base: Shape = Shape()) -> Shape:
    """A link shape (bw, delay, jitter, loss, max_queue_size); keys not given keep `base`'s values."""
    d = mapping(data, path, SHAPE_KEYS)
    out = base
    if "bw" in d:
        out = replace(out, bw_mbit=units.bandwidth_mbit(d["bw"], join(path, "bw")))
    if "delay" in d:
        out = replace(out, delay_ms=units.duration_ms(d["delay"], join(path, "delay")))
    if "jitter" in d:
        out = replace(out, jitter_ms=units.duration_ms(d["jitter"], join(path, "jitter")))
    if "loss" in d:
        out = replace(out, loss_pct=units.loss_pct(d["loss"], join(path, "loss")))
    if "max_queue_size" in d:
        out = replace(out, queue_pkts=units.queue_packets(d["max_queue_size"], join(path, "max_queue_size")))
    return out


def threshold(value: object, path: str) -> float:
    """An RTT_last / RTT_avg ratio that means failure: a number > 1."""
    ratio = units.number(value, path, "a threshold ratio (a number > 1)")
    if ratio <= 1.0:
        raise SpecError(path, f"expected a threshold ratio > 1 (RTT_last / RTT_avg), got {describe(value)}")
    return ratio


def heartbeat(data: object, path: str, default: HeartbeatSpec, messages: tuple[str, ...]) -> HeartbeatSpec:
    """A heartbeat message; keys not given keep `default`'s values; `messages` are the kinds allowed here."""
    d = mapping(data, path, _HEARTBEAT_KEYS)
    hb = default
    if "message" in d:
        hb = replace(hb, message=choice(d["message"], join(path, "message"), messages))
        if hb.message != default.message:
            hb = replace(hb, payload=b"ping" if hb.message == "udp" else b"")
    for key in ("payload", "expect"):
        if key in d:
            if hb.message not in ("udp", "tcp"):
                raise SpecError(join(path, key), f"only a udp or tcp heartbeat carries a {key}, this one is {hb.message}")
            if not isinstance(d[key], str):
                raise SpecError(join(path, key), f"expected a string, got {describe(d[key])}")
            hb = replace(hb, **{key: d[key].encode()})
    if "interval" in d:
        hb = replace(hb, interval_s=units.positive_duration_s(d["interval"], join(path, "interval")))
    if "threshold" in d:
        hb = replace(hb, threshold=threshold(d["threshold"], join(path, "threshold")))
    return hb


def service(data: object, path: str) -> CriticalService:
    """A mission-critical service behind a NIC; its heartbeat defaults to its own protocol."""
    d = mapping(data, path, _SERVICE_KEYS)
    for key in ("name", "proto", "port"):
        if key not in d:
            raise SpecError(join(path, key), "missing; a service needs name, proto and port")
    name = string(d["name"], join(path, "name"), "a service name")
    proto = choice(d["proto"], join(path, "proto"), ("udp", "tcp"))
    num = port(d["port"], join(path, "port"))
    default = HeartbeatSpec(message=proto, payload=b"ping" if proto == "udp" else b"")
    allowed = ("icmp", proto)
    hb = heartbeat(d.get("heartbeat", {}), join(path, "heartbeat"), default, allowed)
    extra = backups(d["backups"], join(path, "backups")) if "backups" in d else ()
    return CriticalService(name=name, proto=proto, port=num, heartbeat=hb, backups=extra)


def nic(data: object, path: str, book: AddressBook) -> NicSpec:
    """A fail-safe NIC; `true` alone means all defaults; its ip is left "" when it is to be allocated."""
    if data is True:
        data = {}
    d = mapping(data, path, _NIC_KEYS)
    spec = _addresses(NicSpec(ip=""), d, path, book)
    if "backups" in d:
        spec = replace(spec, backups=backups(d["backups"], join(path, "backups")))
    if "interval" in d:
        spec = replace(spec, interval_s=units.positive_duration_s(d["interval"], join(path, "interval")))
    if "threshold" in d:
        spec = replace(spec, threshold=threshold(d["threshold"], join(path, "threshold")))
    for key in ("hysteresis", "learn"):
        if key in d:
            spec = replace(spec, **{key: units.positive_int(d[key], join(path, key), "a count of heartbeats")})
    if "min_rtt" in d:
        spec = replace(spec, min_rtt_ms=units.duration_ms(d["min_rtt"], join(path, "min_rtt")))
    if "platform" in d:
        platform = heartbeat(d["platform"], join(path, "platform"), HeartbeatSpec(), ("icmp",))
        spec = replace(spec, platform=platform)
    if "services" in d:
        spec = replace(spec, services=_services(d["services"], join(path, "services")))
    for key in ("passive", "carry_tcp"):
        if key in d:
            if not isinstance(d[key], bool):
                raise SpecError(join(path, key), f"expected true or false, got {d[key]!r}")
            spec = replace(spec, **{key: d[key]})
    if "datapath" in d:
        if d["datapath"] not in NIC_DATAPATHS:
            raise SpecError(join(path, "datapath"), f"expected one of {', '.join(NIC_DATAPATHS)}, got {d['datapath']!r}")
        spec = replace(spec, datapath=d["datapath"])
    return spec


def _addresses(spec: T, d: dict, path: str, book: AddressBook) -> T:
    """`spec` with the ip and mac given in `d`, each claimed in the address book (no duplicates but anycast)."""
    if "ip" in d:
        addr = parse_ip(d["ip"], join(path, "ip"), book.subnet)
        book.claim_ip(addr, join(path, "ip"), shared=getattr(spec, "anycast", False))
        spec = replace(spec, ip=f"{addr}/{book.subnet.prefixlen}")
    if "mac" in d:
        mac = parse_mac(d["mac"], join(path, "mac"))
        book.claim_mac(mac, join(path, "mac"))
        spec = replace(spec, mac=mac)
    return spec


def _services(value: object, path: str) -> tuple[CriticalService, ...]:
    """A NIC's services; no two may share a name, or a protocol and port."""
    services = [service(s, f"{path}[{i}]") for i, s in enumerate(sequence(value, path))]
    seen: dict[object, int] = {}
    for i, svc in enumerate(services):
        for key in (svc.name, (svc.proto, svc.port)):
            if key in seen:
                raise SpecError(f"{path}[{i}]", f"same name or proto/port as services[{seen[key]}]")
            seen[key] = i
    return tuple(services)

def host(name: str, site: str, data: object, path: str, book: AddressBook) -> HostSpec:
    """A host of a site; ip (and its NIC's ip) are left "" when they are to be allocated."""
    node_name(name, path, "host")
    if len(name) > HOST_NAME_MAX:
        raise SpecError(path, f"host name {name!r} is {len(name)} characters; at most {HOST_NAME_MAX}, "
                        f"so that its interface name {name}-eth0 fits the kernel's {IFNAME_MAX}-character limit")
    d = mapping({} if data is None else data, path, _HOST_KEYS)
    spec = HostSpec(name=name, site=site, ip="")
    if "anycast" in d:
        if not isinstance(d["anycast"], bool):
            raise SpecError(join(path, "anycast"), f"expected true or false, got {describe(d['anycast'])}")
        if d["anycast"] and "ip" not in d:
            raise SpecError(join(path, "anycast"), "an anycast host needs an explicit ip (the one it shares)")
        spec = replace(spec, anycast=d["anycast"])
    if "device" in d:
        if not isinstance(d["device"], bool):
            raise SpecError(join(path, "device"), f"expected true or false, got {describe(d['device'])}")
        if d["device"] and (d.get("nic") not in (None, False) or d.get("anycast")):
            raise SpecError(join(path, "device"), "an end device has no fail-safe NIC and no anycast address")
        spec = replace(spec, device=d["device"])
    if "image" in d:
        spec = replace(spec, image=string(d["image"], join(path, "image"), "a Docker image name"))
    else:
        for key in _DOCKER_ONLY:
            if key in d and not (key == "nic" and d[key] in (None, False)):
                raise SpecError(join(path, key), f"only a Docker host takes {key} (this host has no image)")
    spec = _addresses(spec, d, path, book)
    if "cpu" in d:
        spec = replace(spec, cpu=units.cpu_cores(d["cpu"], join(path, "cpu")))
    if "memory" in d:
        spec = replace(spec, memory=units.memory_docker(d["memory"], join(path, "memory")))
    if "env" in d:
        spec = replace(spec, env=_env(d["env"], join(path, "env")))
    if "volumes" in d:
        spec = replace(spec, volumes=_volumes(d["volumes"], join(path, "volumes")))
    if "command" in d:
        spec = replace(spec, command=_command(d["command"], join(path, "command")))
    if "access" in d:
        spec = replace(spec, access=shape(d["access"], join(path, "access")))
    if d.get("nic") not in (None, False):
        spec = replace(spec, nic=nic(d["nic"], join(path, "nic"), book))
    return spec


def _env(value: object, path: str) -> tuple[tuple[str, str], ...]:
    """Environment variables: names to strings or numbers, kept as strings."""
    out = []
    for key, val in mapping(value, path).items():
        if not _ENV_NAME.match(key):
            raise SpecError(join(path, key), "not a valid environment variable name")
        if isinstance(val, bool) or not isinstance(val, (str, int, float)):
            raise SpecError(join(path, key), f"expected a string or number, got {describe(val)}")
        out.append((key, str(val)))
    return tuple(out)


def _volumes(value: object, path: str) -> tuple[str, ...]:
    """Bind mounts `host_path:container_path[:ro|rw]` with absolute paths."""
    out = []
    for i, item in enumerate(sequence(value, path)):
        parts = item.split(":") if isinstance(item, str) else []
        ok = len(parts) in (2, 3) and all(p.startswith("/") for p in parts[:2]) and parts[2:] in ([], ["ro"], ["rw"])
        if not ok:
            raise SpecError(f"{path}[{i}]", f"expected /host/path:/container/path[:ro|rw], got {describe(item)}")
        out.append(item)
    return tuple(out)


def _command(value: object, path: str) -> tuple[str, ...]:
    """A command as a list of strings, or one string split like a shell would (no shell runs it)."""
    if isinstance(value, str):
        try:
            args = shlex.split(value)
        except ValueError as exc:
            raise SpecError(path, f"cannot split the command: {exc}") from None
    else:
        args = sequence(value, path)
        for i, arg in enumerate(args):
            if not isinstance(arg, str):
                raise SpecError(f"{path}[{i}]", f"expected a string, got {describe(arg)}")
    if not args:
        raise SpecError(path, "expected a non-empty command")
    return tuple(args)


def wan_link(data: object, path: str) -> WanLinkSpec:
    """A WAN link: `between` two sites, a shape for both directions, optional forward/reverse overrides."""
    d = mapping(data, path, ("between", *SHAPE_KEYS, "forward", "reverse"))
    if "between" not in d:
        raise SpecError(join(path, "between"), "missing; a WAN link needs between: [site_a, site_b]")
    ends = sequence(d["between"], join(path, "between"))
    if len(ends) != 2:
        raise SpecError(join(path, "between"), f"expected two site names, got {describe(ends)}")
    a, b = (node_name(e, join(path, "between"), "site") for e in ends)
    both = shape({k: v for k, v in d.items() if k in SHAPE_KEYS}, path)
    forward = shape(d["forward"], join(path, "forward"), both) if "forward" in d else both
    reverse = shape(d["reverse"], join(path, "reverse"), both) if "reverse" in d else both
    return WanLinkSpec(a=a, b=b, forward=forward, reverse=reverse)


#: The keys of the learning app's `config`, each a whole number of seconds.
LEARNING_CONFIG = ("idle_timeout", "mac_timeout")
_CONTROLLER_KEYS = ("app", "config")
#: Where relative app paths are also looked for (after the current directory): the repository root.
REPO_ROOT = Path(__file__).resolve().parents[2]


def controller(data: object, path: str) -> ControllerSpec:
    """The `controller` section: `app` (learning, or an os-ken app file) and its `config` mapping."""
    if data is None:
        return ControllerSpec()
    d = mapping(data, path, _CONTROLLER_KEYS)
    app = controller_app(d.get("app", LEARNING), join(path, "app"))
    config = mapping({} if d.get("config") is None else d["config"], join(path, "config"))
    if app == LEARNING:
        config = _learning_config(config, join(path, "config"))
    else:
        _check_json(config, join(path, "config"))
    return ControllerSpec(app=app, config_json=json.dumps(config, sort_keys=True))


def controller_app(value: object, path: str) -> str:
    """`learning`, or the absolute path of an existing os-ken app file (given absolute, or relative to
    the current directory or the repository root) that parses as Python and does not import ryu."""
    text = string(value, path, "learning or the path of an os-ken app file (.py)")
    if text == LEARNING:
        return LEARNING
    if not text.endswith(".py"):
        raise SpecError(path, f"expected learning or the path of an os-ken app file (.py), got {describe(value)}")
    given = Path(text)
    found = next((p for p in (given, REPO_ROOT / given) if p.is_file()), None)
    if found is None:
        raise SpecError(path, f"no such file {text!r}")
    if found.resolve() == REPO_ROOT / "controllers" / "l2_switch.py":
        return LEARNING
    try:
        tree = ast.parse(found.read_text(encoding="utf-8"), str(found))
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(path, f"cannot read {text!r}: {exc}") from None
    except SyntaxError as exc:
        raise SpecError(path, f"{text!r} is not valid Python (line {exc.lineno}): {exc.msg}") from None
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if any(n == "ryu" or n.startswith("ryu.") for n in names):
            raise SpecError(path, f"{text!r} imports ryu (line {node.lineno}), which cannot run on this Python; "
                            "port it by renaming ryu to os_ken and RyuApp to OSKenApp")
    return str(found.resolve())


def _learning_config(config: Mapping[str, Any], path: str) -> dict[str, int]:
    """The learning app's config: idle_timeout (flows) and mac_timeout (MAC table), whole seconds."""
    out = {}
    for key, value in config.items():
        where = join(path, key)
        if key not in LEARNING_CONFIG:
            raise SpecError(where, f"unknown key; the learning app takes: {', '.join(LEARNING_CONFIG)}")
        seconds = units.positive_duration_s(value, where)
        if seconds != int(seconds) or seconds > 65535:
            raise SpecError(where, f"expected whole seconds 1..65535, got {describe(value)}")
        out[key] = int(seconds)
    return out


def _check_json(value: object, path: str) -> None:
    """`value` is plain data JSON can carry: strings, finite numbers, booleans, null, lists, string-keyed mappings."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SpecError(path, f"expected a finite number, got {describe(value)}")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in mapping(value, path).items():
            _check_json(item, join(path, key))
        return
    raise SpecError(path, f"expected plain data (string, number, boolean, list or mapping), got {describe(value)}")
