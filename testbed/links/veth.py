"""Plain veth pairs made straight into their namespaces: the unshaped links of a topology."""

from __future__ import annotations

import json
from typing import Any

from testbed import proc


def veth_cmd(intf1: str, ns1: int | None, intf2: str, ns2: int | None,
             addr1: str | None = None, addr2: str | None = None, up1: bool = False) -> list[str]:
    """The one `ip link add` that creates the pair with each end already in its namespace (by PID).

    `up1`: the first end is created up (the kernel refuses `up` on the peer of a new veth)."""
    cmd = ["ip", "link", "add", "name", intf1]
    if addr1:
        cmd += ["address", addr1]
    if ns1 is not None:
        cmd += ["netns", str(ns1)]
    if up1:
        cmd.append("up")
    cmd += ["type", "veth", "peer", "name", intf2]
    if addr2:
        cmd += ["address", addr2]
    if ns2 is not None:
        cmd += ["netns", str(ns2)]
    return cmd


def make_veth(intf1: str, ns1: int | None, intf2: str, ns2: int | None,
              addr1: str | None = None, addr2: str | None = None, up1: bool = False) -> None:
    """Create a veth pair between two namespaces (None: the root namespace)."""
    proc.run(veth_cmd(intf1, ns1, intf2, ns2, addr1, addr2, up1))


def link_details(ifname: str) -> dict[str, Any]:
    """`ip -d -j link show dev ifname` in this namespace, as a dict; empty when ip cannot say."""
    res = proc.run(["ip", "-d", "-j", "link", "show", "dev", ifname], timeout=10, check=False)
    try:
        return json.loads(res.stdout)[0] if res.ok else {}
    except (ValueError, IndexError):
        return {}


def link_netnsid(ifname: str) -> int | None:
    """The netns id (as seen from here) of the namespace holding `ifname`'s veth peer; None: same namespace."""
    return link_details(ifname).get("link_netnsid")


def peer_elsewhere(ifname: str) -> bool:
    """Whether `ifname` is a veth whose peer is in another network namespace (bpf_redirect_peer needs that)."""
    link = link_details(ifname)
    return link.get("linkinfo", {}).get("info_kind") == "veth" and "link_netnsid" in link
