"""Values as Mininet users write them (10ms, 100Mbit, 256m), parsed strictly with errors naming the path."""

from __future__ import annotations

import math
import re

from testbed.errors import SpecError

_NUMBER = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_DURATION = re.compile(rf"^{_NUMBER}\s*([a-z]*)$")
#: The units a duration may be written in, with their length in milliseconds.
DURATION_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_UNIT_LIST = ", ".join(DURATION_UNITS)
_RATE = re.compile(rf"^{_NUMBER}\s*(bit|kbit|mbit|gbit)?$", re.IGNORECASE)
_RATE_TO_MBIT = {"bit": 1e-6, "kbit": 1e-3, "mbit": 1.0, "gbit": 1e3, None: 1.0}
_PERCENT = re.compile(rf"^{_NUMBER}\s*%?$")
_MEMORY = re.compile(r"^([0-9]+)\s*([bkmg]?)$", re.IGNORECASE)
_MEMORY_FACTOR = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
#: Docker refuses memory limits below 6 MiB.
MEMORY_MIN_BYTES = 6 << 20


def _is_number(value: object) -> bool:
    """True for int and float values that are finite, but not for bools (YAML `yes` is not 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def describe(value: object) -> str:
    """A short rendering of a bad value for an error message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def duration_ms(value: object, path: str) -> float:
    """A duration with its unit (`10ms`, `1.5s`, `250us`) in milliseconds, >= 0; a bare number only if 0.

    The one duration grammar of every file the testbed reads: a bare number would mean seconds to
    some readers and milliseconds to others, so it is refused (except 0, the same in every unit).
    """
    m = _DURATION.match(value.strip()) if isinstance(value, str) else None
    if _is_number(value) or (m and not m.group(2)):
        if float(value) != 0:  # type: ignore[arg-type]
            raise SpecError(path, f"a duration needs a unit ({_UNIT_LIST}), got {describe(value)}")
        ms = 0.0
    elif m and m.group(2) in DURATION_UNITS:
        ms = float(m.group(1)) * DURATION_UNITS[m.group(2)]
    else:
        raise SpecError(path, f"expected a duration like 10ms, 1.5s or 250us (units: {_UNIT_LIST}), "
                              f"got {describe(value)}")
    if ms < 0 or not math.isfinite(ms):
        raise SpecError(path, f"expected a finite duration >= 0, got {describe(value)}")
    return ms


def duration_s(value: object, path: str) -> float:
    """A duration as `duration_ms` reads it, in seconds."""
    return duration_ms(value, path) / 1000.0


def positive_duration_s(value: object, path: str) -> float:
    """A duration in seconds that must be greater than zero (heartbeat intervals)."""
    seconds = duration_s(value, path)
    if seconds <= 0:
        raise SpecError(path, f"expected a duration > 0, got {describe(value)}")
    return seconds


def bandwidth_mbit(value: object, path: str) -> float:
    """A rate in Mbit/s: a number, or a string like `100Mbit`, `1Gbit`, `500kbit`; must be > 0."""
    if _is_number(value):
        mbit = float(value)  # type: ignore[arg-type]
    elif isinstance(value, str) and (m := _RATE.match(value.strip())):
        unit = m.group(2).lower() if m.group(2) else None
        mbit = float(m.group(1)) * _RATE_TO_MBIT[unit]
    else:
        raise SpecError(path, f"expected a rate in Mbit/s like 100 or '1Gbit', got {describe(value)}")
    if mbit <= 0:
        raise SpecError(path, f"expected a rate > 0 Mbit/s, got {describe(value)}")
    return mbit


def loss_pct(value: object, path: str) -> float:
    """A loss rate in percent, 0..100 (a number, or a string like `0.1%`)."""
    if _is_number(value):
        pct = float(value)  # type: ignore[arg-type]
    elif isinstance(value, str) and (m := _PERCENT.match(value.strip())):
        pct = float(m.group(1))
    else:
        raise SpecError(path, f"expected a loss in percent like 0.1, got {describe(value)}")
    if not 0.0 <= pct <= 100.0:
        raise SpecError(path, f"expected a loss between 0 and 100 percent, got {describe(value)}")
    return pct


def queue_packets(value: object, path: str) -> int:
    """A queue length in packets: a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SpecError(path, f"expected a queue size in packets (an integer > 0), got {describe(value)}")
    return value


def positive_int(value: object, path: str, what: str, minimum: int = 1) -> int:
    """An integer >= `minimum`; `what` says what it counts, for the message."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(path, f"expected {what} (an integer >= {minimum}), got {describe(value)}")
    return value


def number(value: object, path: str, what: str) -> float:
    """Any finite number (not a bool); `what` names it for the message."""
    if not _is_number(value):
        raise SpecError(path, f"expected {what}, got {describe(value)}")
    return float(value)  # type: ignore[arg-type]


def cpu_cores(value: object, path: str) -> float:
    """A CPU share in cores: a positive number (1.5 = one and a half cores)."""
    cores = number(value, path, "a number of cores")
    if cores <= 0:
        raise SpecError(path, f"expected a number of cores > 0, got {describe(value)}")
    return cores


def memory_bytes(value: object, path: str) -> int:
    """A memory limit in Docker notation (`256m`, `1g`, `512k`, or an int of bytes), in bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        nbytes = value
    elif isinstance(value, str) and (m := _MEMORY.match(value.strip())):
        nbytes = int(m.group(1)) * _MEMORY_FACTOR[m.group(2).lower()]
    else:
        raise SpecError(path, f"expected a memory size like 256m, 1g or 512k, got {describe(value)}")
    if nbytes < MEMORY_MIN_BYTES:
        raise SpecError(path, f"expected a memory size of at least 6m (Docker's minimum), got {describe(value)}")
    return nbytes


def memory_docker(value: object, path: str) -> str:
    """A memory limit checked by `memory_bytes`, kept in Docker notation (`256m`; bytes as digits)."""
    memory_bytes(value, path)
    return str(value).strip().lower()
