"""Parses the scalar values an experiment file holds (durations, triggers, counts), naming the path on error."""

from __future__ import annotations

import re
from dataclasses import dataclass

from testbed.errors import SpecError
from testbed.topology import units

_PACKET = re.compile(r"^\s*packet\s+([0-9]+)\s*$")


@dataclass(frozen=True)
class Trigger:
    """When a fault starts or ends: right after request `packet` of the prober was sent, or `time_s` after traffic started."""

    packet: int | None = None
    time_s: float | None = None

    def __str__(self) -> str:
        return f"packet {self.packet}" if self.packet is not None else f"{self.time_s:g}s"


class Values:
    """Typed readers for one source file; every error is a SpecError naming the path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, path: str, message: str) -> SpecError:
        return SpecError(path, message, self.source)

    def milliseconds(self, value: object, path: str) -> float:
        """A duration in milliseconds, in the testbed's one grammar (`units.duration_ms`: `100ms`, `1s`, `250us`)."""
        try:
            return units.duration_ms(value, path)
        except SpecError as exc:
            raise self.error(exc.path, exc.message) from None

    def seconds(self, value: object, path: str) -> float:
        """A duration in seconds, in the same grammar."""
        return self.milliseconds(value, path) / 1000.0

    def positive_seconds(self, value: object, path: str) -> float:
        seconds = self.seconds(value, path)
        if seconds <= 0:
            raise self.error(path, f"must be greater than 0, got {value!r}")
        return seconds

    def trigger(self, value: object, path: str) -> Trigger:
        """`packet N` (N >= 1) or a time with its unit, e.g. `5s`."""
        if isinstance(value, str) and (m := _PACKET.match(value)):
            n = int(m.group(1))
            if n < 1:
                raise self.error(path, f"packets are numbered from 1, got {value!r}")
            return Trigger(packet=n)
        if isinstance(value, str):
            try:
                return Trigger(time_s=units.duration_ms(value, path) / 1000.0)
            except SpecError:
                pass
        raise self.error(path, f"expected `packet N` or a time like 5s, got {value!r}")

    def number(self, value: object, path: str, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, what: str = "a number") -> float:
        """A number within [low, high] (or (low, high] when `low_open`)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(path, f"expected {what}, got {value!r}")
        if low is not None and (value <= low if low_open else value < low):
            raise self.error(path, f"must be {'greater than' if low_open else 'at least'} {low:g}, got {value!r}")
        if high is not None and value > high:
            raise self.error(path, f"must be at most {high:g}, got {value!r}")
        return float(value)

    def integer(self, value: object, path: str, *, low: int | None = None, high: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(path, f"expected a whole number, got {value!r}")
        if low is not None and value < low:
            raise self.error(path, f"must be at least {low}, got {value!r}")
        if high is not None and value > high:
            raise self.error(path, f"must be at most {high}, got {value!r}")
        return value

    def text(self, value: object, path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(path, f"expected a non-empty string, got {value!r}")
        return value

    def flag(self, value: object, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(path, f"expected true or false, got {value!r}")
        return value

    def mapping(self, value: object, path: str, allowed: set[str], required: set[str] = frozenset()) -> dict:
        """A mapping whose keys are all in `allowed` and include `required`."""
        if not isinstance(value, dict):
            raise self.error(path, f"expected a mapping, got {type(value).__name__}")
        for key in value:
            if key not in allowed:
                where = f"{path}.{key}" if path else str(key)
                raise self.error(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for key in sorted(required):
            if key not in value:
                raise self.error(f"{path}.{key}" if path else key, "is required")
        return value

    def sequence(self, value: object, path: str) -> list:
        if not isinstance(value, list):
            raise self.error(path, f"expected a list, got {type(value).__name__}")
        return value

    def choice(self, value: object, path: str, options: tuple[str, ...]) -> str:
        if value not in options:
            raise self.error(path, f"expected one of {', '.join(options)}, got {value!r}")
        return str(value)
