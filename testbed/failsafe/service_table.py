"""The fail-safe handler's service table: (service IP, port) -> backup list, with a default `*` entry.

Entries are kept in a P4-style `Table` whose action `to_backups` carries backups as "ip:port" texts
(port 0, or no port, means "the same port as the service"); lookups return resolved
(raw ip, port) tuples from a cache rebuilt when the table changes.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from testbed.failsafe.packet import ip_bytes, ip_str
from testbed.failsafe.tables import KeyField, Table, TableError

SERVICE_KEYS = (KeyField("dst_ip", "exact", 32), KeyField("dst_port", "exact", 16))
Backup = tuple[str, int]


def format_backup(backup: Backup) -> str:
    """'ip:port' text of a backup (port 0 = the service's own port)."""
    return f"{backup[0]}:{backup[1]}"


def parse_backups(params: Iterable[object]) -> tuple[Backup, ...]:
    """Backups from action parameters: each 'ip', 'ip:port' or a comma-separated list of them."""
    out: list[Backup] = []
    for param in params:
        for item in str(param).split(","):
            item = item.strip()
            if not item:
                continue
            host, _, port = item.partition(":")
            try:
                ip_bytes(host)
                out.append((host, int(port) if port else 0))
            except (OSError, ValueError):
                raise TableError(f"bad backup {item!r} (want ip or ip:port)") from None
    return tuple(out)


class ServiceTable:
    """Finds the backups for a critical service's (IP, port); falls back to the default `*` backups."""

    def __init__(self, default: Sequence[Backup] = ()) -> None:
        self.table = Table("service", SERVICE_KEYS, ("to_backups",),
                           default=("to_backups", tuple(format_backup(b) for b in default)))
        self._version = -1
        self._cache: dict[bytes, tuple[tuple[bytes, int], ...]] = {}
        self._default: tuple[Backup, ...] = ()

    def add(self, ip: str, port: int, backups: Sequence[Backup]) -> None:
        """Set the backups of service `ip`:`port`."""
        self.table.add("to_backups", (int.from_bytes(ip_bytes(ip), "big"), port),
                       tuple(format_backup(b) for b in backups))

    def set_default(self, backups: Sequence[Backup]) -> None:
        """Set the default `*` backups."""
        self.table.set_default("to_backups", tuple(format_backup(b) for b in backups))

    def lookup(self, ip: bytes, port: int) -> tuple[tuple[bytes, int], ...]:
        """Backups (raw ip, port) for a service at raw `ip`:`port`; ports of 0 replaced by `port`."""
        if self._version != self.table.version:
            self._refresh()
        found = self._cache.get(ip + port.to_bytes(2, "big"))
        if found is None:
            found = tuple((ip_bytes(h), p) for h, p in self._default)
        return tuple((h, p or port) for h, p in found)

    def backup_ips(self) -> set[bytes]:
        """Every backup address the table mentions (to resolve their MACs ahead of need)."""
        self._refresh()
        ips = {h for v in self._cache.values() for h, _ in v}
        ips.update(ip_bytes(h) for h, _ in self._default)
        return ips

    def _refresh(self) -> None:
        cache: dict[bytes, tuple[tuple[bytes, int], ...]] = {}
        for e in self.table.entries():
            ip, port = e.match
            cache[int(ip).to_bytes(4, "big") + int(port).to_bytes(2, "big")] = tuple(  # type: ignore[arg-type]
                (ip_bytes(h), p) for h, p in parse_backups(e.params))
        self._cache = cache
        self._default = parse_backups(self.table.default.params)
        self._version = self.table.version


__all__ = ["Backup", "ServiceTable", "format_backup", "parse_backups", "ip_str"]
