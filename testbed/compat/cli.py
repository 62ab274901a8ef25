"""Mininet's CLI, where `pingall` and `net` treat hosts without an address (fail-safe NICs) for what they are."""

from __future__ import annotations

from typing import Any

from mininet.cli import CLI as MininetCLI
from mininet.log import output


def addressed(hosts: list[Any]) -> list[Any]:
    """The hosts that have an IP address (a fail-safe NIC is a bump in the wire: it has none)."""
    return [h for h in hosts if h.IP()]


class CLI(MininetCLI):
    """Mininet's CLI; pingall/pingallfull ping addressed hosts only, `net` labels the others."""

    def do_pingall(self, line: str) -> None:  # noqa: N802
        """Ping between all hosts that have an address (NIC nodes have none)."""
        self.mn.ping(hosts=addressed(self.mn.hosts), timeout=line or None)

    def do_pingallfull(self, line: str) -> None:  # noqa: N802
        """Ping between all addressed hosts, returns all ping results."""
        self.mn.pingFull(hosts=addressed(self.mn.hosts), timeout=line or None)

    def do_net(self, _line: str) -> None:  # noqa: N802
        """List network connections; a host without an address is shown as a bump in the wire."""
        hosts = set(self.mn.hosts)
        for node in self.mn.values():
            links = []
            for intf in node.intfList():
                peer = intf.link.intf2 if intf.link and intf.link.intf1 is intf else (
                    intf.link.intf1 if intf.link else None)
                links.append(f"{intf}:{peer}" if peer else f"{intf}")
            note = "  (no IP: a bump in the wire, e.g. a fail-safe NIC)" if node in hosts and not node.IP() else ""
            output(f"{node.name} {' '.join(links)}{note}\n")
