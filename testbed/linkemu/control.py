"""The emulator's control commands, served with testbed.control's protocol from the engine's loop.

Requests are `{"cmd": CMD, "args": {...}}` (see testbed.control); commands and their args:

    ping                                   -> {"pid": N, "links": N}
    add     {link_id, a, b, forward?: SHAPE, reverse?: SHAPE, seed?}
    set     {link_id, forward?: SHAPE, reverse?: SHAPE}      (directions left out keep their shape)
    down | up | remove  {link_id}
    stats   {link_id?}                     -> {ID: {"forward": {...}, "reverse": {...}, ...}}
    shutdown                               (the engine's loop ends)

SHAPE: {"bw_mbit": float|null, "delay_ms": float, "jitter_ms": float, "jitter_dist": "uniform"|"normal",
        "loss_pct": float, "queue_pkts": int|null}; forward is a→b (frames received on a leave by b).
"""

from __future__ import annotations

import logging
import os
import select
from pathlib import Path
from typing import Any, Callable, Mapping

from testbed.control import ControlServer, Handler
from testbed.errors import TestbedError
from testbed.linkemu.engine import Engine
from testbed.linkemu.schedule import parse_shape

log = logging.getLogger(__name__)


def _text(args: Mapping[str, Any], key: str, *, optional: bool = False) -> str | None:
    """Argument `key` as a non-empty string (ValueError otherwise)."""
    value = args.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key}: expected a non-empty string, got {value!r}")
    return value


def _seed(args: Mapping[str, Any]) -> int | str | None:
    seed = args.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, str))):
        raise ValueError(f"seed: expected an integer or a string, got {seed!r}")
    return seed


def make_handlers(engine: Engine) -> dict[str, Handler]:
    """The handler of every control command, bound to `engine`."""

    def ping(args: dict) -> object:
        return {"pid": os.getpid(), "links": len(engine.links)}

    def add(args: dict) -> object:
        link_id, a, b = _text(args, "link_id"), _text(args, "a"), _text(args, "b")
        fwd = parse_shape(args.get("forward") or {})
        rev = parse_shape(args.get("reverse") or {})
        try:
            engine.add_link(link_id, a, b, fwd, rev, _seed(args))
        except OSError as exc:
            raise TestbedError(f"link {link_id}: {exc}") from None
        return {"link_id": link_id}

    def set_(args: dict) -> object:
        link = engine.link(_text(args, "link_id"))
        fwd = parse_shape(args["forward"], link.forward.params) if args.get("forward") is not None else None
        rev = parse_shape(args["reverse"], link.reverse.params) if args.get("reverse") is not None else None
        engine.set_shape(link.link_id, fwd, rev)
        return {"link_id": link.link_id}

    def updown(up: bool) -> Handler:
        def handler(args: dict) -> object:
            link_id = _text(args, "link_id")
            try:
                engine.set_up(link_id, up)
            except OSError as exc:
                raise TestbedError(f"link {link_id}: {exc}") from None
            return {"link_id": link_id, "up": up}
        return handler

    def remove(args: dict) -> object:
        link_id = _text(args, "link_id")
        engine.remove_link(link_id)
        return {"link_id": link_id}

    def stats(args: dict) -> object:
        return engine.stats(_text(args, "link_id", optional=True))

    def shutdown(args: dict) -> object:
        engine.running = False
        return None

    return {"ping": ping, "add": add, "set": set_, "down": updown(False), "up": updown(True),
            "remove": remove, "stats": stats, "shutdown": shutdown}


def serve(engine: Engine, path: Path, on_stop: Callable[[], None] | None = None) -> None:
    """Run `engine` with a control server on `path` until a shutdown request or `engine.running` is cleared."""
    server = ControlServer(path, make_handlers(engine))
    engine.extra_fds[server.fileno()] = server.on_readable
    engine.epoll.register(server.fileno(), select.EPOLLIN)
    try:
        engine.run()
    finally:
        engine.extra_fds.pop(server.fileno(), None)
        try:
            engine.epoll.unregister(server.fileno())
        except (OSError, ValueError):
            pass
        server.close()
        if on_stop:
            on_stop()
