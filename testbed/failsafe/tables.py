"""P4-style match-action tables, counters and registers, kept as plain data the NIC looks up.

A `Table` has key fields (each matched `exact`, `lpm` or `ternary`), a set of action names, entries
(match -> action + params) and a default action. Exact-only tables are a single dict lookup; the
others scan their entries by priority (longest prefix first for lpm). Values are integers (IPv4
addresses too); `parse_match` turns the control API's text ("10.0.0.0/24", "udp", "0x0a&&&0xff")
into them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Sequence

from testbed.failsafe.packet import PROTO_NAMES

MATCH_KINDS = ("exact", "lpm", "ternary")
Match = int | tuple[int, int]  # exact value, (value, prefix_len) for lpm, (value, mask) for ternary


@dataclass(frozen=True)
class KeyField:
    """One field of a table's key: its name, how it is matched and its width in bits."""

    name: str
    kind: str = "exact"
    width: int = 32

    def __post_init__(self) -> None:
        if self.kind not in MATCH_KINDS:
            raise ValueError(f"unknown match kind {self.kind!r}")


@dataclass(frozen=True)
class Entry:
    """One table entry: a match per key field, the action to run and its parameters."""

    match: tuple[Match, ...]
    action: str
    params: tuple[object, ...] = ()
    priority: int = 0


@dataclass(frozen=True)
class Action:
    """What a lookup returned: the action, its parameters, and whether an entry matched."""

    name: str
    params: tuple[object, ...] = ()
    hit: bool = False


class TableError(ValueError):
    """A table operation that cannot be done (unknown action, bad match, full table)."""


def _mask(width: int) -> int:
    return (1 << width) - 1


def _parse_value(text: str, width: int) -> int:
    text = text.strip()
    if text.lower() in PROTO_NAMES:
        return PROTO_NAMES[text.lower()]
    if "." in text:
        return int(ipaddress.IPv4Address(text))
    if ":" in text and len(text) == 17:
        return int(text.replace(":", ""), 16)
    value = int(text, 0)
    if not 0 <= value <= _mask(width):
        raise TableError(f"{text} does not fit in {width} bits")
    return value


class Table:
    """A match-action table with a default action and per-entry hit counters."""

    def __init__(self, name: str, keys: Sequence[KeyField], actions: Sequence[str],
                 default: tuple[str, tuple[object, ...]] = ("NoAction", ()), size: int = 4096) -> None:
        self.name = name
        self.keys = tuple(keys)
        self.actions = tuple(actions) + (("NoAction",) if "NoAction" not in actions else ())
        self.size = size
        self.default = Action(default[0], tuple(default[1]), False)
        self.hits: dict[tuple[Match, ...], int] = {}
        self.misses = 0
        self._entries: dict[tuple[Match, ...], Entry] = {}
        self._exact = all(k.kind == "exact" for k in self.keys)
        self._scan: list[Entry] = []
        self.version = 0  # bumped on every change, so users can rebuild their fast paths

    # -- changes --
    def add(self, action: str, match: Sequence[Match], params: Sequence[object] = (), priority: int = 0) -> Entry:
        """Add (or replace) the entry for `match`."""
        if action not in self.actions:
            raise TableError(f"table {self.name}: unknown action {action!r} (have {', '.join(self.actions)})")
        norm = self._normalise(match)
        if norm not in self._entries and len(self._entries) >= self.size:
            raise TableError(f"table {self.name} is full ({self.size} entries)")
        entry = Entry(norm, action, tuple(params), priority)
        self._entries[norm] = entry
        self.hits.setdefault(norm, 0)
        self._changed()
        return entry

    def delete(self, match: Sequence[Match]) -> None:
        """Remove the entry for `match` (TableError if there is none)."""
        norm = self._normalise(match)
        if self._entries.pop(norm, None) is None:
            raise TableError(f"table {self.name}: no entry {list(match)}")
        self.hits.pop(norm, None)
        self._changed()

    def set_default(self, action: str, params: Sequence[object] = ()) -> None:
        """Set the action run when nothing matches."""
        if action not in self.actions:
            raise TableError(f"table {self.name}: unknown action {action!r}")
        self.default = Action(action, tuple(params), False)
        self._changed()

    def clear(self) -> None:
        """Remove every entry (the default action stays)."""
        self._entries.clear()
        self.hits.clear()
        self._changed()

    def parse_match(self, texts: Sequence[str]) -> tuple[Match, ...]:
        """Match values from text, one per key field: '10.0.0.1', '10.0.0.0/24', '0x0a000000&&&0xff000000'."""
        if len(texts) != len(self.keys):
            raise TableError(f"table {self.name} needs {len(self.keys)} match fields "
                             f"({', '.join(k.name for k in self.keys)}), got {len(texts)}")
        out: list[Match] = []
        for key, text in zip(self.keys, texts):
            try:
                if key.kind == "exact":
                    out.append(_parse_value(text, key.width))
                elif key.kind == "lpm":
                    value, _, plen = text.partition("/")
                    out.append((_parse_value(value, key.width), int(plen) if plen else key.width))
                else:
                    value, _, mask = text.partition("&&&")
                    out.append((_parse_value(value, key.width),
                                _parse_value(mask, key.width) if mask else _mask(key.width)))
            except (ValueError, ipaddress.AddressValueError) as exc:
                raise TableError(f"table {self.name}: bad {key.name} {text!r}: {exc}") from None
        return tuple(out)

    # -- lookups --
    def lookup(self, key: Sequence[int]) -> Action:
        """The action for `key` (one integer per key field); counts the hit or miss."""
        if self._exact:
            entry = self._entries.get(tuple(key))
            if entry is not None:
                self.hits[entry.match] += 1
                return Action(entry.action, entry.params, True)
            self.misses += 1
            return self.default
        for entry in self._scan:
            if self._matches(entry.match, key):
                self.hits[entry.match] += 1
                return Action(entry.action, entry.params, True)
        self.misses += 1
        return self.default

    def entries(self) -> list[Entry]:
        """The entries, in lookup order."""
        return list(self._scan) if not self._exact else list(self._entries.values())

    def dump(self) -> dict:
        """The table as JSON-ready data: keys, entries with hit counts, default action."""
        return {
            "name": self.name,
            "keys": [{"name": k.name, "kind": k.kind, "width": k.width} for k in self.keys],
            "actions": list(self.actions),
            "entries": [{"match": [self._show(k, m) for k, m in zip(self.keys, e.match)],
                         "action": e.action, "params": [str(p) for p in e.params],
                         "priority": e.priority, "hits": self.hits.get(e.match, 0)}
                        for e in self.entries()],
            "default": {"action": self.default.name, "params": [str(p) for p in self.default.params]},
            "misses": self.misses,
        }

    # -- internals --
    def _normalise(self, match: Sequence[Match]) -> tuple[Match, ...]:
        if len(match) != len(self.keys):
            raise TableError(f"table {self.name} needs {len(self.keys)} match fields, got {len(match)}")
        out: list[Match] = []
        for key, m in zip(self.keys, match):
            if key.kind == "exact":
                if not isinstance(m, int):
                    raise TableError(f"table {self.name}: {key.name} must be an exact value")
                out.append(m & _mask(key.width))
            else:
                if isinstance(m, int):
                    m = (m, key.width if key.kind == "lpm" else _mask(key.width))
                value, arg = m
                if key.kind == "lpm":
                    if not 0 <= arg <= key.width:
                        raise TableError(f"table {self.name}: bad prefix length {arg}")
                    mask = _mask(key.width) ^ _mask(key.width - arg)
                    out.append((value & mask, arg))
                else:
                    out.append((value & arg, arg))
        return tuple(out)

    def _matches(self, match: tuple[Match, ...], key: Sequence[int]) -> bool:
        for kf, m, v in zip(self.keys, match, key):
            if kf.kind == "exact":
                if m != v:
                    return False
            elif kf.kind == "lpm":
                value, plen = m  # type: ignore[misc]
                if v & (_mask(kf.width) ^ _mask(kf.width - plen)) != value:
                    return False
            else:
                value, mask = m  # type: ignore[misc]
                if v & mask != value:
                    return False
        return True

    def _changed(self) -> None:
        def order(e: Entry) -> tuple:
            plen = sum(m[1] for k, m in zip(self.keys, e.match) if k.kind == "lpm")  # type: ignore[index]
            return (-e.priority, -plen)
        self._scan = sorted(self._entries.values(), key=order)
        self.version += 1

    @staticmethod
    def _show(key: KeyField, m: Match) -> str:
        def one(v: int) -> str:
            return str(ipaddress.IPv4Address(v)) if key.width == 32 else str(v)
        if key.kind == "exact":
            return one(m)  # type: ignore[arg-type]
        value, arg = m  # type: ignore[misc]
        return f"{one(value)}/{arg}" if key.kind == "lpm" else f"{one(value)}&&&{hex(arg)}"


@dataclass
class CounterArray:
    """Packet and byte counters indexed by number (a P4 `counter`)."""

    name: str
    size: int
    packets: list[int] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.packets = [0] * self.size
        self.bytes = [0] * self.size

    def count(self, index: int, nbytes: int) -> None:
        """Add one packet of `nbytes` at `index`."""
        self.packets[index] += 1
        self.bytes[index] += nbytes

    def read(self, index: int) -> tuple[int, int]:
        """(packets, bytes) at `index`."""
        return self.packets[index], self.bytes[index]


@dataclass
class RegisterArray:
    """Integer cells of a fixed width indexed by number (a P4 `register`)."""

    name: str
    size: int
    width: int = 32
    cells: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cells = [0] * self.size

    def read(self, index: int) -> int:
        """The value at `index`."""
        return self.cells[index]

    def write(self, index: int, value: int) -> None:
        """Store `value` (truncated to the register's width) at `index`."""
        self.cells[index] = value & _mask(self.width)
