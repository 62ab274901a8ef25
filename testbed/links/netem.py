"""Kernel link emulation: a veth pair per link, htb (rate) + netem (delay, jitter, loss) per direction.

Mininet TCLink's structure, one direction per veth end's egress (forward = intf1's egress):

    bw set:     root htb 5: (default 1) -> class 5:1 rate R -> leaf 10: (netem, or pfifo for a queue)
    no bw:      root 10: netem (or pfifo when only a queue limit is set)
    unshaped:   no qdisc of ours (the device's default)

Every command is built by a pure function returning argument lists, so the plan is tested without
root or netem; `NetemBackend` only runs them, each inside the namespace of the end it configures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from testbed import proc
from testbed.errors import TestbedError
from testbed.ledger import Ledger
from testbed.linkemu.schedule import link_seed
from testbed.links.base import LinkBackend, LinkEnds
from testbed.topology.model import IFNAME_MAX, Shape

log = logging.getLogger(__name__)

ROOT_HANDLE = "5:"
CLASS_ID = "5:1"
LEAF_HANDLE = "10:"


def num(x: float) -> str:
    """`x` as tc reads it: plain decimal, no exponent, no trailing zeros."""
    text = f"{x:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def leaf_kind(shape: Shape) -> str | None:
    """The leaf qdisc a shape needs: "netem" (delay, jitter or loss), "pfifo" (queue only), None."""
    if shape.delay_ms or shape.jitter_ms or shape.loss_pct:
        return "netem"
    if shape.queue_pkts:
        return "pfifo"
    return None


def structure(shape: Shape | None) -> tuple[bool, str | None]:
    """What qdiscs a shape needs (htb or not, which leaf): equal structures can be changed in place."""
    if shape is None or not shape.shaped:
        return (False, None)
    return (bool(shape.bw_mbit), leaf_kind(shape))


def netem_args(shape: Shape, seed: int | None = None) -> list[str]:
    """The netem options of `shape`: delay [jitter], loss, limit, and `seed` for its loss and jitter draws."""
    args = ["delay", f"{num(shape.delay_ms)}ms"]
    if shape.jitter_ms:
        args.append(f"{num(shape.jitter_ms)}ms")
    if shape.loss_pct:
        args += ["loss", f"{num(shape.loss_pct)}%"]
    if shape.queue_pkts:
        args += ["limit", str(shape.queue_pkts)]
    if seed is not None and (shape.jitter_ms or shape.loss_pct):
        args += ["seed", str(seed)]
    return args


def leaf_args(shape: Shape, seed: int | None = None) -> list[str]:
    """The leaf qdisc kind and its options for `shape` (empty when it needs no leaf)."""
    kind = leaf_kind(shape)
    if kind == "netem":
        return ["netem", *netem_args(shape, seed)]
    if kind == "pfifo":
        return ["pfifo", "limit", str(shape.queue_pkts)]
    return []


def shape_cmds(intf: str, shape: Shape, previous: Shape | None = None, seed: int | None = None) -> list[list[str]]:
    """tc commands that make `intf`'s egress behave as `shape`, given what `previous` installed.

    `previous` None means the interface carries none of our qdiscs (a fresh link). When the
    structure is unchanged, parameters are changed in place (no moment without shaping); when it
    differs, our root qdisc is deleted and the new structure added.
    """
    old, new = structure(previous), structure(shape)
    has_bw, leaf = new
    in_place = previous is not None and old == new
    cmds: list[list[str]] = []
    if not in_place and old != (False, None):
        cmds.append(["tc", "qdisc", "del", "dev", intf, "root"])
    if new == (False, None):
        return cmds
    verb = "change" if in_place else "add"
    if has_bw:
        if not in_place:
            cmds.append(["tc", "qdisc", "add", "dev", intf, "root", "handle", ROOT_HANDLE,
                         "htb", "default", "1"])
        cmds.append(["tc", "class", verb, "dev", intf, "parent", ROOT_HANDLE, "classid", CLASS_ID,
                     "htb", "rate", f"{num(shape.bw_mbit)}mbit"])
        if leaf:
            cmds.append(["tc", "qdisc", verb, "dev", intf, "parent", CLASS_ID, "handle",
                         LEAF_HANDLE, *leaf_args(shape, seed)])
    else:
        cmds.append(["tc", "qdisc", verb, "dev", intf, "root", "handle", LEAF_HANDLE,
                     *leaf_args(shape, seed)])
    return cmds


def in_netns(pid: int | None, cmd: list[str]) -> list[str]:
    """`cmd` run inside the network namespace of process `pid` (None: as is, in the root one)."""
    if pid is None:
        return cmd
    return ["nsenter", "-t", str(pid), "-n", "--", *cmd]


def create_cmds(ends: LinkEnds, tmp1: str, tmp2: str) -> list[list[str]]:
    """Commands that make the veth pair of `ends`: made in the root netns, moved and renamed, up.

    An end that goes into a namespace is made under a temporary name (`tmpN`), so names like
    `eth0` inside containers never clash in the root namespace.
    """
    name1 = ends.intf1 if ends.ns1 is None else tmp1
    name2 = ends.intf2 if ends.ns2 is None else tmp2
    cmds = [["ip", "link", "add", name1, "type", "veth", "peer", "name", name2]]
    for tmp, final, pid in ((name1, ends.intf1, ends.ns1), (name2, ends.intf2, ends.ns2)):
        if pid is not None:
            cmds.append(["ip", "link", "set", "dev", tmp, "netns", str(pid), "name", final])
    for final, pid in ((ends.intf1, ends.ns1), (ends.intf2, ends.ns2)):
        cmds.append(in_netns(pid, ["ip", "link", "set", "dev", final, "up"]))
    return cmds


def tx_off_cmds(ends: LinkEnds) -> list[list[str]]:
    """Commands that turn off TX checksum offload on both ends (needed by OVS's userspace datapath)."""
    return [in_netns(pid, ["ethtool", "-K", intf, "tx", "off"])
            for intf, pid in ((ends.intf1, ends.ns1), (ends.intf2, ends.ns2))]


def set_up_cmds(ends: LinkEnds, up: bool) -> list[list[str]]:
    """Commands that take both ends of a link down, or bring them up."""
    state = "up" if up else "down"
    return [in_netns(pid, ["ip", "link", "set", "dev", intf, state])
            for intf, pid in ((ends.intf1, ends.ns1), (ends.intf2, ends.ns2))]


def delete_cmd(ends: LinkEnds) -> list[str]:
    """The command that removes a link's veth pair (deleting one end removes both)."""
    return in_netns(ends.ns1, ["ip", "link", "del", "dev", ends.intf1])


def netem_seed_supported() -> bool:
    """True when this machine's tc knows netem's `seed` option (iproute2 6.3 and later)."""
    result = proc.run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "help"], check=False)
    return "seed" in result.stdout + result.stderr


def netem_available() -> bool:
    """True when the kernel has sch_netem: tried on `lo` of a throwaway netns that dies with tc."""
    result = proc.run(["unshare", "--net", "--", "tc", "qdisc", "add", "dev", "lo", "root",
                       "netem", "delay", "1ms"], check=False)
    if not result.ok:
        log.info("netem not available: %s", result.stderr.strip())
    return result.ok


@dataclass
class _Link:
    """A link this backend made, and the shape each direction has now."""

    ends: LinkEnds
    forward: Shape
    reverse: Shape


class NetemBackend(LinkBackend):
    """Links as veth pairs shaped by the kernel's htb and netem qdiscs."""

    name = "netem"

    def __init__(self, ledger: Ledger, timeout: float = 10.0, tx_offload: bool = False,
                 seed: int | None = None) -> None:
        self.ledger = ledger
        self.seed = seed  # each direction's netem gets link_seed(seed, link, direction), where tc can take it
        if seed is not None and not netem_seed_supported():
            log.warning("this tc has no netem seed option (iproute2 >= 6.3): loss and jitter are not "
                        "reproducible from the seed on this machine")
            self.seed = None
        self.timeout = timeout
        self.tx_offload = tx_offload  # False: checksum offload off, as userspace OVS needs
        self.links: dict[str, _Link] = {}
        self._made = 0  # links made so far: numbers the temporary interface names

    def _run(self, cmd: list[str]) -> None:
        """Run one planned command; a failure raises CommandError with tc's or ip's message."""
        proc.run(cmd, timeout=self.timeout)

    def create(self, ends: LinkEnds, forward: Shape, reverse: Shape) -> None:
        """Make the veth pair, put each end in its namespace, shape both directions."""
        if ends.link_id in self.links:
            raise TestbedError(f"link {ends.link_id} exists already")
        for intf in (ends.intf1, ends.intf2):
            if not 0 < len(intf) <= IFNAME_MAX:
                raise TestbedError(f"link {ends.link_id}: bad interface name {intf!r}")
        n, self._made = self._made, self._made + 1
        tmp1, tmp2 = f"{self.ledger.prefix}n{n}a", f"{self.ledger.prefix}n{n}b"
        for intf, pid, tmp in ((ends.intf1, ends.ns1, tmp1), (ends.intf2, ends.ns2, tmp2)):
            self.ledger.record("interface", intf, netns_pid=pid, tmp_name=tmp, link=ends.link_id)
        for cmd in create_cmds(ends, tmp1, tmp2):
            self._run(cmd)
        if not self.tx_offload:
            for cmd in tx_off_cmds(ends):
                self._run(cmd)
        link = _Link(ends, Shape(), Shape())
        self.links[ends.link_id] = link
        self._shape(link, forward, reverse, fresh=True)

    def shape(self, link_id: str, forward: Shape | None = None, reverse: Shape | None = None) -> None:
        """Change one or both directions of a link at run time."""
        self._shape(self._get(link_id), forward, reverse, fresh=False)

    def _shape(self, link: _Link, forward: Shape | None, reverse: Shape | None, fresh: bool) -> None:
        """Apply new shapes to intf1's egress (forward) and intf2's egress (reverse)."""
        e = link.ends
        for new, old, intf, pid, attr in ((forward, link.forward, e.intf1, e.ns1, "forward"),
                                          (reverse, link.reverse, e.intf2, e.ns2, "reverse")):
            if new is None:
                continue
            seed = None if self.seed is None else link_seed(self.seed, e.link_id, attr)
            cmds = shape_cmds(intf, new, None if fresh else old, seed)
            if new.shaped and cmds:
                self.ledger.record("qdisc", intf, netns_pid=pid, handle="root", link=e.link_id)
            for cmd in cmds:
                self._run(in_netns(pid, cmd))
            setattr(link, attr, new)
            log.debug("link %s %s: %s", e.link_id, attr, new)

    def set_up(self, link_id: str, up: bool) -> None:
        """Take both ends of a link down (carrier off) or bring them up."""
        for cmd in set_up_cmds(self._get(link_id).ends, up):
            self._run(cmd)

    def delete(self, link_id: str) -> None:
        """Remove the link's veth pair (its qdiscs go with it)."""
        link = self.links.pop(link_id, None)
        if link is None:
            return
        pid = link.ends.ns1
        if pid is not None and not Path(f"/proc/{pid}").exists():
            log.info("link %s: namespace of pid %s is gone, and the veth pair with it", link_id, pid)
            return
        result = proc.run(delete_cmd(link.ends), timeout=self.timeout, check=False)
        if not result.ok and "Cannot find device" not in result.stderr:
            raise TestbedError(f"link {link_id}: delete failed: {result.stderr.strip()}")

    def close(self) -> None:
        """Remove every link this backend made."""
        for link_id in list(self.links):
            self.delete(link_id)

    def _get(self, link_id: str) -> _Link:
        """The link called `link_id`, or TestbedError."""
        try:
            return self.links[link_id]
        except KeyError:
            raise TestbedError(f"no link {link_id}") from None
