"""Service entries as data: parsing one (experiment `services:` item or an image's `service.yaml`) and its defaults.

An image built from `images/<name>/` may ship `images/<name>/service.yaml`: the same keys as an
experiment's service entry, without `host` and `name`. Those are the defaults of every service of
that image; an experiment's entry overrides any of them. An image without one runs its CMD and
is ready when every port it EXPOSEs is listening (the Docker host waits for those at start-up).
"""

from __future__ import annotations

from dataclasses import fields, replace
from functools import lru_cache
from pathlib import Path

from testbed.experiment.spec import Readiness, ServicePort, ServiceRun
from testbed.experiment.values import Values

IMAGES_DIR = Path(__file__).resolve().parents[2] / "images"
#: Keys of a service entry (an experiment's adds `host`; an image's service.yaml has neither host nor name).
SERVICE_KEYS = {"name", "image", "critical", "command", "ports", "ready", "env", "state_dir", "delay_control"}
_PORT_KEYS = {"proto", "port", "critical"}
_READY_KINDS = ("listen", "tcp", "udp", "http", "command")
_READY_KEYS = {*_READY_KINDS, "send", "expect", "path", "timeout"}


def parse_ports(v: Values, value: object, path: str) -> tuple[ServicePort, ...]:
    """`ports: [{proto: udp, port: 7000, critical: true}, ...]`."""
    out = []
    for i, item in enumerate(v.sequence(value, path)):
        d = v.mapping(item, f"{path}[{i}]", _PORT_KEYS, {"port"})
        out.append(ServicePort(v.choice(d.get("proto", "tcp"), f"{path}[{i}].proto", ("tcp", "udp")),
                               v.integer(d["port"], f"{path}[{i}].port", low=1, high=65535),
                               v.flag(d.get("critical", False), f"{path}[{i}].critical")))
    return tuple(out)


def parse_ready(v: Values, value: object, path: str) -> Readiness:
    """`ready: {tcp: P} | {udp: P, send: .., expect: ..} | {http: P, path: /} | {command: [..]} | {listen: true}`."""
    d = v.mapping(value, path, _READY_KEYS)
    kinds = [k for k in _READY_KINDS if k in d]
    if len(kinds) != 1:
        raise v.error(path, f"needs exactly one of {', '.join(_READY_KINDS)}, got {', '.join(kinds) or 'none'}")
    kind = kinds[0]
    timeout = v.positive_seconds(d["timeout"], f"{path}.timeout") if "timeout" in d else 15.0
    if kind == "listen":
        return Readiness("listen", timeout_s=timeout)
    if kind == "command":
        argv = tuple(v.text(a, f"{path}.command[{i}]") for i, a in enumerate(v.sequence(d["command"], f"{path}.command")))
        if not argv:
            raise v.error(f"{path}.command", "needs at least the program")
        return Readiness("command", command=argv, timeout_s=timeout)
    for key in ("send", "expect"):
        if key in d and kind == "http":
            raise v.error(f"{path}.{key}", "only for tcp and udp checks")
    if kind == "udp" and "send" not in d:
        raise v.error(f"{path}.send", "a udp check needs a payload to send (UDP has no handshake)")
    path_ = v.text(d["path"], f"{path}.path") if "path" in d else "/"
    if "path" in d and kind != "http":
        raise v.error(f"{path}.path", "only for http checks")
    return Readiness(kind, port=v.integer(d[kind], f"{path}.{kind}", low=1, high=65535),
                     send=v.text(d["send"], f"{path}.send") if "send" in d else None,
                     expect=v.text(d["expect"], f"{path}.expect") if "expect" in d else None,
                     path=path_, timeout_s=timeout)


def parse_fields(v: Values, d: dict, path: str) -> dict:
    """The ServiceRun fields present in entry `d` (already checked for unknown keys)."""
    out: dict = {}
    if "image" in d:
        out["image"] = v.text(d["image"], f"{path}.image")
    if "critical" in d:
        out["critical"] = v.flag(d["critical"], f"{path}.critical")
    if "command" in d:
        out["command"] = tuple(str(a) for a in v.sequence(d["command"], f"{path}.command"))
        if not out["command"]:
            raise v.error(f"{path}.command", "needs at least the program")
    if "ports" in d:
        out["ports"] = parse_ports(v, d["ports"], f"{path}.ports")
    if "ready" in d:
        out["ready"] = parse_ready(v, d["ready"], f"{path}.ready")
    if "env" in d:
        env = v.mapping(d["env"], f"{path}.env", set(d["env"]) if isinstance(d["env"], dict) else set())
        out["env"] = tuple(sorted((str(k), v.text(str(val), f"{path}.env.{k}")) for k, val in env.items()))
    for key in ("state_dir", "delay_control"):
        if key in d:
            value = v.text(d[key], f"{path}.{key}")
            if not value.startswith("/"):
                raise v.error(f"{path}.{key}", f"a path inside the container, from /, got {value!r}")
            out[key] = value
    return out


def image_dir(image: str) -> Path | None:
    """The project's `images/<name>/` that builds `image` (`testbed/<name>`), if there is one."""
    repo, _, name = image.partition(":")[0].rpartition("/")
    folder = IMAGES_DIR / name
    return folder if repo == "testbed" and folder.is_dir() else None


@lru_cache(maxsize=64)
def image_defaults(image: str) -> dict:
    """The service fields `images/<name>/service.yaml` declares for `image` ({} when it has none)."""
    folder = image_dir(image)
    path = folder / "service.yaml" if folder else None
    if path is None or not path.exists():
        return {}
    from testbed.yamlio import load_yaml

    v = Values(str(path))
    data = load_yaml(path)
    keys = SERVICE_KEYS - {"name", "image"}
    return parse_fields(v, v.mapping(data, "", keys), "")


def resolve(svc: ServiceRun, host_image: str | None) -> ServiceRun:
    """`svc` with its image defaulted to the host's and its unset fields taken from the image's service.yaml."""
    image = svc.image or host_image
    if image is None:
        return svc
    defaults = image_defaults(image)
    blank = ServiceRun(svc.host, svc.name)
    changes = {f.name: defaults[f.name] for f in fields(ServiceRun)
               if f.name in defaults and getattr(svc, f.name) == getattr(blank, f.name)}
    return replace(svc, image=image, **changes)
