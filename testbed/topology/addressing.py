"""Addresses of hosts and NICs: the subnet, explicit IPs and MACs checked, free IPs handed out in order."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from testbed.errors import SpecError
from testbed.topology.units import describe

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def parse_subnet(value: object, path: str) -> ipaddress.IPv4Network:
    """An IPv4 subnet like `10.0.0.0/24` with room for at least two hosts; host bits must be zero."""
    if not isinstance(value, str):
        raise SpecError(path, f"expected an IPv4 subnet like 10.0.0.0/24, got {describe(value)}")
    try:
        net = ipaddress.IPv4Network(value.strip(), strict=True)
    except ValueError as exc:
        message = f"expected an IPv4 subnet like 10.0.0.0/24, got {describe(value)} ({exc})"
        raise SpecError(path, message) from None
    if net.prefixlen > 30:
        raise SpecError(path, f"subnet {net} is too small: use a prefix length of 30 or less")
    return net


def parse_ip(value: object, path: str, subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """An IPv4 address in `subnet`, bare or with its prefix length; not the network or broadcast address."""
    if not isinstance(value, str):
        raise SpecError(path, f"expected an IPv4 address like 10.0.0.1, got {describe(value)}")
    text = value.strip()
    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError:
        raise SpecError(path, f"expected an IPv4 address like 10.0.0.1, got {describe(value)}") from None
    if "/" in text and iface.network.prefixlen != subnet.prefixlen:
        raise SpecError(path, f"prefix length /{iface.network.prefixlen} differs from the subnet {subnet}")
    addr = iface.ip
    if addr not in subnet:
        raise SpecError(path, f"{addr} is outside the subnet {subnet}")
    if addr in (subnet.network_address, subnet.broadcast_address):
        raise SpecError(path, f"{addr} is the network or broadcast address of {subnet}")
    return addr


def parse_mac(value: object, path: str) -> str:
    """A unicast MAC address like 00:00:00:00:00:11, returned in lowercase."""
    if isinstance(value, int):
        raise SpecError(path, f"expected a MAC address, got the number {value}: quote it, YAML reads "
                        "some unquoted MACs as base-60 numbers")
    if not isinstance(value, str) or not _MAC.match(value.strip().lower()):
        raise SpecError(path, f"expected a MAC address like 00:00:00:00:00:11, got {describe(value)}")
    mac = value.strip().lower()
    if int(mac[:2], 16) & 1:
        raise SpecError(path, f"{mac} is a multicast MAC address; a host or NIC needs a unicast one")
    return mac


def with_prefix(addr: ipaddress.IPv4Address, subnet: ipaddress.IPv4Network) -> str:
    """`addr` written with the subnet's prefix length, as the model stores it (10.0.0.11/24)."""
    return f"{addr}/{subnet.prefixlen}"


@dataclass
class AddressBook:
    """The addresses taken so far (with who took them), and the next free one in the subnet."""

    subnet: ipaddress.IPv4Network
    ips: dict[ipaddress.IPv4Address, str] = field(default_factory=dict)
    macs: dict[str, str] = field(default_factory=dict)
    shared: set[ipaddress.IPv4Address] = field(default_factory=set)  # claimed by anycast hosts only

    def claim_ip(self, addr: ipaddress.IPv4Address, path: str, shared: bool = False) -> None:
        """Record that `path` uses `addr`; a SpecError if someone else already does (unless both share it)."""
        if shared and addr in self.shared:
            return
        if addr in self.ips:
            hint = " (hosts may share an IP only when all of them are marked anycast: true)" if shared or \
                addr in self.shared else ""
            raise SpecError(path, f"IP address {addr} is already used by {self.ips[addr]}{hint}")
        self.ips[addr] = path
        if shared:
            self.shared.add(addr)

    def claim_mac(self, mac: str, path: str) -> None:
        """Record that `path` uses `mac`; a SpecError if someone else already does."""
        if mac in self.macs:
            raise SpecError(path, f"MAC address {mac} is already used by {self.macs[mac]}")
        self.macs[mac] = path

    def next_free(self, path: str) -> ipaddress.IPv4Address:
        """The lowest unused host address of the subnet, now claimed by `path`."""
        for addr in self.subnet.hosts():
            if addr not in self.ips:
                self.ips[addr] = path
                return addr
        raise SpecError(path, f"no free address left in the subnet {self.subnet}")
