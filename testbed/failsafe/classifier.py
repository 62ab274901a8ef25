"""The traffic classifier: the target table (dst IP, L4 proto, dst port) -> mission-critical service id.

The table itself is a P4-style `Table` (so the control API can dump, add and delete entries); for the
hot path the classifier keeps a dict keyed by the raw header bytes (4-byte IP + proto byte + 2-byte
port), rebuilt whenever the table changes, so classifying a packet is one slice join and one lookup.
"""

from __future__ import annotations

import struct

from testbed.failsafe.packet import ip_bytes
from testbed.failsafe.tables import KeyField, Table

TARGET_KEYS = (KeyField("dst_ip", "exact", 32), KeyField("proto", "exact", 8), KeyField("dst_port", "exact", 16))


def target_key(ip: bytes, proto: int, port: int) -> bytes:
    """The classifier's raw key for service address `ip`, protocol and port."""
    return ip + struct.pack("!BH", proto, port)


class Classifier:
    """Maps a packet's destination (or a reply's source) to the critical service it belongs to."""

    def __init__(self) -> None:
        self.table = Table("target", TARGET_KEYS, ("set_service",))
        self._version = -1
        self._keys: dict[bytes, str] = {}
        self._ips: frozenset[bytes] = frozenset()

    def add(self, service: str, ip: str, proto: int, port: int) -> None:
        """Mark traffic to `ip`:`port`/`proto` as belonging to `service`."""
        self.table.add("set_service", (int.from_bytes(ip_bytes(ip), "big"), proto, port), (service,))

    @property
    def ips(self) -> frozenset[bytes]:
        """Raw destination addresses that have at least one critical service."""
        self._refresh()
        return self._ips

    def lookup(self, key: bytes) -> str | None:
        """The service id for a raw `target_key`, or None for non-critical traffic."""
        if self._version != self.table.version:
            self._refresh()
        return self._keys.get(key)

    def services(self) -> dict[str, list[tuple[bytes, int, int]]]:
        """Each service id with the (raw ip, proto, port) signatures that select it."""
        self._refresh()
        out: dict[str, list[tuple[bytes, int, int]]] = {}
        for key, sid in self._keys.items():
            proto, port = struct.unpack("!BH", key[4:])
            out.setdefault(sid, []).append((key[:4], proto, port))
        return out

    def _refresh(self) -> None:
        if self._version == self.table.version:
            return
        keys: dict[bytes, str] = {}
        for e in self.table.entries():
            if e.action == "set_service" and e.params:
                ip, proto, port = e.match
                keys[target_key(int(ip).to_bytes(4, "big"), int(proto), int(port))] = str(e.params[0])  # type: ignore[arg-type]
        self._keys = keys
        self._ips = frozenset(k[:4] for k in keys)
        self._version = self.table.version
