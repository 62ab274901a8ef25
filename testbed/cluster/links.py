"""Emulated links that end on another server: each runs where it ends, by the same emulator as a local one.

A WAN link to another server (testbed/cluster/nodes.ClusterSSHLink, a tap at each end) is emulated
on this machine, which holds one of its ends: the tap here is not renamed onto the local switch but
moved into this machine's userspace emulator's namespace, one inner end of an emulated link whose
other is the peer of a veth on the local switch's port (`shape_tunnel`; the emulator and its
protocol are testbed/links/userspace.py's, used through its public API). Frames cross the ssh
tunnel after (forward) or before (reverse) the emulator, so the tunnel's latency adds to the
configured one. A link with both ends on another server (ClusterLink, emulated) goes through that
server's own emulator (`RemoteEmulator`, started there through the door). `ClusterLinks`, in
front of the run's link backend, takes either kind down and reshapes it where it runs, so WAN and
access faults work as on local links.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed import control, proc
from testbed.cluster.engine import forward_control
from testbed.cluster.server import LOCAL, Server, record_remote_process
from testbed.emulation import netns
from testbed.errors import TestbedError
from testbed.ledger import RUN_ROOT, Ledger
from testbed.linkemu.engine import offload_args
from testbed.links.base import LinkEnds
from testbed.links.userspace import check_shape, disable_offloads
from testbed.topology.model import Shape

log = logging.getLogger(__name__)


@dataclass
class TunnelShaping:
    """A tunnel link's emulated end (on this machine, or on the server the tunnel starts from when neither
    end is here): the switch's veth and the two inner ends in that emulator's namespace."""

    emulator: Any  # UserspaceBackend here, RemoteEmulator on `door`'s server
    link_id: str
    outer: str  # on the switch, in its server's root namespace
    inner: str  # the outer's peer, in the emulator's namespace
    tap: str  # the tunnel's tap, moved into the emulator's namespace
    door: Server = LOCAL  # where the emulator, the veth and the tap are

    def set_up(self, up: bool) -> None:
        """Take the link down (no frame crosses) or bring it back up, in the emulator."""
        self.emulator.request("up" if up else "down", link_id=self.link_id)

    def shape(self, forward: Shape | None, reverse: Shape | None) -> None:
        """Change one or both directions at run time."""
        fields: dict[str, Any] = {"link_id": self.link_id}
        if forward is not None:
            fields["forward"] = check_shape(forward, f"links.{self.link_id}.forward")
        if reverse is not None:
            fields["reverse"] = check_shape(reverse, f"links.{self.link_id}.reverse")
        self.emulator.request("set", **fields)

    def stop(self) -> None:
        """Stop emulating, delete the veth (its peer goes with it) and the tap (the tunnel's ssh ended first)."""
        if self.emulator.pid is not None:
            try:
                self.emulator.request("remove", link_id=self.link_id)
            except Exception as exc:  # noqa: BLE001 - the emulator may be going down with the run
                log.warning("link %s: emulator remove: %s", self.link_id, exc)
        self.door.run(["ip", "link", "del", self.outer], timeout=10, check=False)
        self.door.run(["ip", "-n", self.emulator.netns, "link", "del", self.tap], timeout=10, check=False)


def inner_names(unit: int) -> tuple[str, str]:
    """The inner ends of tunnel `unit` in the emulator's namespace: the switch side's and the tap's."""
    return f"wt{unit}s", f"wt{unit}t"


def shape_tunnel(emulator: Any, ledger: Ledger, link_id: str, tap: str, unit: int, outer: str,
                 addr: str | None, forward: Shape, reverse: Shape, switch_is_a: bool,
                 door: Server = LOCAL) -> TunnelShaping:
    """Put one end of a tunnel link (tap `tap`) through an emulator; `outer` is the switch's port there.

    `door`: the server of that end and of `emulator` (this machine: the run's UserspaceBackend; another
    server: its RemoteEmulator). `switch_is_a`: the switch is the link's first end (`forward` is from
    it towards the tap).
    """
    fwd = check_shape(forward, f"links.{link_id}.forward")
    rev = check_shape(reverse, f"links.{link_id}.reverse")
    emulator.request("ping")  # started (its namespace made) on first use
    ns = emulator.netns
    inner, tap_inner = inner_names(unit)
    ledger.record("interface", outer, peer=inner, peer_netns=ns, link=link_id,
                  **({} if door.local else {"server": door.name}))
    shaping = TunnelShaping(emulator, link_id, outer, inner, tap_inner, door)
    try:
        door.run(["ip", "link", "add", outer, *(["address", addr] if addr else []), "type", "veth",
                  "peer", "name", inner, "netns", ns], timeout=10)
        if not door.local:
            door.run(offload_args(outer), timeout=10)
        elif emulator.outer_offloads:
            disable_offloads(outer)
        door.run(["ip", "link", "set", "dev", outer, "up"], timeout=10)
        door.run(["ip", "link", "set", "dev", tap, "netns", ns, "name", tap_inner], timeout=10)
        door.run(["ip", "-n", ns, "link", "set", "dev", tap_inner, "up"], timeout=10)
        a, b = (inner, tap_inner) if switch_is_a else (tap_inner, inner)
        emulator.request("add", link_id=link_id, a=a, b=b, forward=fwd, reverse=rev)
    except Exception:
        shaping.stop()
        raise
    log.info("link %s: %s <-> tunnel %s through %s on %s", link_id, outer, tap, ns, door.name)
    return shaping


@dataclass
class ClusterLinks:
    """The run's link backend, with the WAN links to other servers (`tunnels`, by link id) answered by their ends here."""

    backend: Any
    tunnels: dict[str, TunnelShaping] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:  # everything else is the run's backend's
        return getattr(self.__dict__["backend"], name)

    def shape(self, link_id: str, forward: Shape | None = None, reverse: Shape | None = None) -> None:
        """Change a link's shape at run time (a tunnel link's in the emulator here)."""
        if link_id in self.tunnels:
            return self.tunnels[link_id].shape(forward, reverse)
        return self.backend.shape(link_id, forward, reverse)

    def set_up(self, link_id: str, up: bool) -> None:
        """Take a link down or bring it up (a tunnel link's in the emulator here)."""
        if link_id in self.tunnels:
            return self.tunnels[link_id].set_up(up)
        return self.backend.set_up(link_id, up)


@dataclass
class LinkControl:
    """One link of an emulator (here or on another server), taken down and reshaped by its link id."""

    emulator: Any  # anything with request(cmd, **args): UserspaceBackend, RemoteEmulator
    link_id: str

    set_up = TunnelShaping.set_up
    shape = TunnelShaping.shape


class RemoteEmulator:
    """The userspace link emulator of another server, for links with both ends there (a remote site's
    access links): started there through the door in a namespace of the run's (the testbed must be
    installed there at the same path as here, checked by the preflight), its control socket
    forwarded here by a recorded `ssh -L`, its veths made there; a LinkBackend for ClusterLink."""

    name = "userspace"

    def __init__(self, door: Server, ledger: Ledger, directory: Path, tag: str = "r0", seed: int | None = None,
                 timeout: float = 20.0) -> None:
        self.door = door
        self.ledger = ledger
        self.directory = Path(directory)
        self.seed = seed
        self.timeout = timeout
        # on that server; not the run's own `-le` (a server may share this machine's /run, as the test
        # harness's does); `-le` at the end all the same, the emulator's sign that it is the testbed's
        self.netns = f"{ledger.prefix}{tag}-le"
        self.remote_dir = f"{RUN_ROOT}/{ledger.rid}/linkemu-{door.name}"
        self.remote_socket = f"{self.remote_dir}/ctl.sock"
        self.local_socket = self.directory / f"linkemu-{door.name}.sock"
        self.links: dict[str, tuple[LinkEnds, str, str]] = {}
        self._made = 0
        self._session: Any = None
        self._forward: Any = None

    @property
    def pid(self) -> int | None:
        """The PID here of the ssh session that runs the emulator there (None before it starts or after `close`)."""
        return None if self._session is None else self._session.pid

    def _run(self, args: list[str], **kw: Any) -> Any:
        return self.door.run(args, timeout=kw.pop("timeout", 15), **kw)

    def _ensure_started(self) -> None:
        if self._session is not None:
            return
        self.ledger.record("file", self.remote_dir, server=self.door.name)
        self._run(["mkdir", "-p", self.remote_dir])
        self.ledger.record("netns", self.netns, server=self.door.name)
        self._run(["ip", "netns", "add", self.netns])
        argv = ["ip", "netns", "exec", self.netns, sys.executable, "-m", "testbed.linkemu",
                "--ctl", self.remote_socket, "--log", f"{self.remote_dir}/linkemu.log",
                *(["--seed", str(self.seed)] if self.seed is not None else [])]
        out = (self.ledger.run_dir or self.directory) / f"linkemu-{self.door.name}.out"
        self._session = proc.spawn(self.door.argv(argv), output=out, on_start=lambda pid: self.ledger.record_process(
            pid, f"ssh for the link emulator on {self.door.name}"))
        deadline = time.monotonic() + self.timeout
        while not self._run(["test", "-S", self.remote_socket], check=False).ok:
            if self._session.poll() is not None or time.monotonic() > deadline:
                text = out.read_text(errors="replace")[-300:] if out.exists() else ""
                raise TestbedError(f"the link emulator on {self.door} did not start: {text}")
            time.sleep(0.1)
        for pid in self._run(["ip", "netns", "pids", self.netns]).stdout.split():
            record_remote_process(self.ledger, self.door, pid, "link emulator")
        self.ledger.record("file", str(self.local_socket))
        self._forward = forward_control(self.door, self.ledger, self.local_socket, self.remote_socket,
                                        (self.ledger.run_dir or self.directory) / f"linkemu-forward-{self.door.name}.log",
                                        "the link emulator", deadline)
        log.info("link emulator on %s: netns %s, control %s (forwarded to %s)", self.door.name, self.netns,
                 self.remote_socket, self.local_socket)

    def request(self, cmd: str, **args: Any) -> Any:
        """One control request to that server's emulator (started on first use); its result."""
        self._ensure_started()
        return control.call(self.local_socket, cmd, timeout=10.0, **args)

    def create(self, ends: LinkEnds, forward: Shape, reverse: Shape) -> None:
        """Veths from each end (on that server, by PID there) into the emulator's namespace there; forward between."""
        fwd = check_shape(forward, f"links.{ends.link_id}.forward")
        rev = check_shape(reverse, f"links.{ends.link_id}.reverse")
        self._ensure_started()
        n, self._made = self._made, self._made + 1
        inner = (f"le{n}a", f"le{n}b")
        for outer, pid, peer in ((ends.intf1, ends.ns1, inner[0]), (ends.intf2, ends.ns2, inner[1])):
            self.ledger.record("interface", outer, netns_pid=pid, peer=peer, peer_netns=self.netns,
                               server=self.door.name)
            self._run(["ip", "link", "add", outer, *([] if pid is None else ["netns", str(pid)]), "type", "veth",
                       "peer", "name", peer, "netns", self.netns])
            inside = (lambda a: a) if pid is None else (lambda a, p=pid: netns.nsenter(p, a))
            self._run(inside(offload_args(outer)))
            self._run(inside(["ip", "link", "set", "dev", outer, "up"]))
        self.request("add", link_id=ends.link_id, a=inner[0], b=inner[1], forward=fwd, reverse=rev)
        self.links[ends.link_id] = (ends, *inner)

    def shape(self, link_id: str, forward: Shape | None = None, reverse: Shape | None = None) -> None:
        LinkControl(self, link_id).shape(forward, reverse)

    def set_up(self, link_id: str, up: bool) -> None:
        LinkControl(self, link_id).set_up(up)

    def delete(self, link_id: str) -> None:
        """Stop forwarding on a link and delete its veths there (the outer ends go with the inner ones)."""
        item = self.links.pop(link_id, None)
        if item is None:
            return
        try:
            self.request("remove", link_id=link_id)
        except TestbedError as exc:
            log.warning("link %s on %s: emulator remove: %s", link_id, self.door.name, exc)
        for inner in item[1:]:
            self._run(["ip", "-n", self.netns, "link", "del", inner], check=False)

    def close(self) -> None:
        """Delete every link, stop the emulator there (shutdown, then its ssh), its namespace and files."""
        if self._session is None:
            return
        for link_id in list(self.links):
            self.delete(link_id)
        try:
            control.call(self.local_socket, "shutdown", timeout=5)
        except (TestbedError, OSError) as exc:
            log.warning("link emulator on %s: shutdown: %s", self.door.name, exc)
        proc.wait(self._session, 5.0)
        for p in (self._forward, self._session):
            if p is not None:
                proc.stop(p, timeout=5)
        self._session = self._forward = None
        self._run(["ip", "netns", "del", self.netns], check=False)
        self._run(["rm", "-rf", "--", self.remote_dir], check=False)
        self.local_socket.unlink(missing_ok=True)
