"""Mininet's link and interface vocabulary (TCLink, TCIntf) read strictly into the testbed's Shape."""

from __future__ import annotations

import functools
from typing import Any, Callable

from testbed.errors import SpecError
from testbed.topology import units
from testbed.topology.model import Shape

#: TCIntf options the testbed emulates, in both backends (netem and the userspace emulator).
SHAPE_KEYS = ("bw", "delay", "jitter", "loss", "max_queue_size")
#: TCIntf options that choose how tc does it; the testbed's htb (or its emulator) does the same.
ACCEPTED_NOOPS = {"use_htb": (True, False)}
#: Offload options: the testbed turns offloads off itself (OVS's userspace datapath needs tx off).
OFFLOADS = {"txo": (False,), "gro": (False,), "rxo": (True,)}
#: What Mininet's Intf.config takes besides shaping.
INTF_KEYS = ("ip", "mac", "ifconfig", "up", "prefixLen", "port")
#: TCIntf options that would be ignored here, with why.
REFUSED = {
    "use_hfsc": "HFSC scheduling is not emulated (htb-style rate only)",
    "use_tbf": "TBF scheduling is not emulated (htb-style rate only)",
    "latency_ms": "a TBF parameter; TBF is not emulated",
    "enable_ecn": "RED/ECN marking is not emulated",
    "enable_red": "RED is not emulated",
    "speedup": "Mininet's experimental switch-side rate option is not emulated",
}


def _time_ms(value: Any, path: str) -> float:
    """A delay as Mininet scripts give it ('5ms', '100us', '1s'); a bare number is refused."""
    if not isinstance(value, str):
        raise SpecError(path, f"give a unit, e.g. '{value}ms' (Mininet hands a bare number to tc, "
                              f"which reads it as microseconds)")
    return units.duration_ms(value, path)


def split(params: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """`params` split into (shaping options, interface options); anything else is refused by name."""
    shaping: dict[str, Any] = {}
    intf: dict[str, Any] = {}
    for key, value in params.items():
        path = f"{where}.{key}"
        if key in SHAPE_KEYS:
            if value is not None:
                shaping[key] = value
        elif key in ACCEPTED_NOOPS:
            if value not in ACCEPTED_NOOPS[key]:
                raise SpecError(path, f"expected one of {ACCEPTED_NOOPS[key]}, got {value!r}")
        elif key in OFFLOADS:
            if value not in OFFLOADS[key]:
                raise SpecError(path, f"{value!r} is not possible here: the testbed turns offloads "
                                      f"off (OVS's userspace datapath needs tx checksum offload off)")
        elif key in REFUSED:
            raise SpecError(path, REFUSED[key])
        elif key in INTF_KEYS:
            intf[key] = value
        else:
            raise SpecError(path, "unknown link or interface option (Mininet would ignore it silently)")
    return shaping, intf


def shape_of(shaping: dict[str, Any], where: str) -> Shape:
    """One direction's Shape from TCIntf options (bw in Mbit/s, delay/jitter strings, loss in %)."""
    bw = units.bandwidth_mbit(shaping["bw"], f"{where}.bw") if "bw" in shaping else None
    delay = _time_ms(shaping["delay"], f"{where}.delay") if "delay" in shaping else 0.0
    jitter = _time_ms(shaping["jitter"], f"{where}.jitter") if "jitter" in shaping else 0.0
    loss = units.loss_pct(shaping["loss"], f"{where}.loss") if "loss" in shaping else 0.0
    queue = (units.queue_packets(shaping["max_queue_size"], f"{where}.max_queue_size")
             if "max_queue_size" in shaping else None)
    if jitter and not delay:
        raise SpecError(f"{where}.jitter", "jitter needs a delay (netem varies the delay by it)")
    return Shape(bw_mbit=bw, delay_ms=delay, jitter_ms=jitter, loss_pct=loss, queue_pkts=queue)


def unwrap(factory: Any) -> tuple[Any, dict[str, Any]]:
    """The class behind a constructor (a class, functools.partial, or mininet.util.custom) and its preset options."""
    if isinstance(factory, functools.partial):
        inner, preset = unwrap(factory.func)
        return inner, {**preset, **factory.keywords}
    if callable(factory) and not isinstance(factory, type) and getattr(factory, "__closure__", None):
        cells = [c.cell_contents for c in factory.__closure__]  # mininet.util.custom(cls, **params)
        classes = [c for c in cells if isinstance(c, type)]
        dicts = [c for c in cells if isinstance(c, dict)]
        if getattr(factory, "__name__", "").startswith("custom(") and len(classes) == 1 and len(dicts) == 1:
            inner, preset = unwrap(classes[0])
            return inner, {**preset, **dicts[0]}
    return factory, {}


def custom(cls: Any, **params: Any) -> Callable[..., Any]:
    """Mininet's `custom(cls, **params)` as a functools.partial (so the testbed can read it)."""
    return functools.partial(cls, **params)


def direction(shared: dict[str, Any], intf_preset: dict[str, Any], side: dict[str, Any],
              where: str) -> tuple[Shape, dict[str, Any]]:
    """One interface's egress Shape and its remaining Intf options, with Mininet's precedence.

    Mininet builds an interface as `cls(**params_side)` after `params_side.update(link_params)`,
    and `custom(TCIntf, ...)` presets override both: preset > link params > params1/params2.
    """
    merged = {**side, **shared, **intf_preset}
    shaping, intf = split(merged, where)
    return shape_of(shaping, where), intf
