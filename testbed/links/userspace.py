"""Link backend that shapes links with the project's userspace emulator, for kernels without sch_netem."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed import daemon, proc
from testbed.errors import SpecError, TestbedError
from testbed.ledger import Ledger, RUN_ROOT
from testbed.linkemu.engine import offload_args
from testbed.linkemu.schedule import parse_shape
from testbed.links.base import LinkBackend, LinkEnds
from testbed.topology.model import IFNAME_MAX, Shape

log = logging.getLogger(__name__)

#: Unix socket paths longer than this do not fit in sockaddr_un.
SOCKET_PATH_MAX = 107


def shape_to_wire(shape: Shape) -> dict[str, Any]:
    """A topology Shape in the emulator's control protocol fields."""
    return {
        "bw_mbit": shape.bw_mbit,
        "delay_ms": shape.delay_ms,
        "jitter_ms": shape.jitter_ms,
        "loss_pct": shape.loss_pct,
        "queue_pkts": shape.queue_pkts,
    }


def check_shape(shape: Shape, path: str) -> dict[str, Any]:
    """The wire form of `shape`, or SpecError naming `path` when the emulator would refuse it."""
    wire = shape_to_wire(shape)
    try:
        parse_shape(wire)
    except ValueError as exc:
        raise SpecError(path, str(exc)) from None
    return wire


def in_netns_args(pid: int | None, args: list[str]) -> list[str]:
    """`args` run inside the network namespace of process `pid` (root namespace when None)."""
    return args if pid is None else ["nsenter", f"--target={pid}", "--net", *args]


def disable_offloads(ifname: str, pid: int | None = None) -> None:
    """Turn off tx checksum, TSO, GSO and GRO on an outer end (needed on both outer ends of every link)."""
    proc.run(in_netns_args(pid, offload_args(ifname)), timeout=10)


@dataclass(frozen=True)
class _LinkState:
    """What the backend made for one link: its ends and the inner names in the emulator's namespace."""

    ends: LinkEnds
    a_inner: str
    b_inner: str


class UserspaceBackend(LinkBackend):
    """One emulator process per run, in netns `<prefix>-le`, forwarding between the inner ends of every link."""

    name = "userspace"

    def __init__(self, ledger: Ledger, run_dir: Path, *, seed: int | None = None,
                 outer_offloads: bool = True, start_timeout: float = 10.0) -> None:
        self.ledger = ledger
        self.run_dir = Path(run_dir)
        self.seed = seed
        self.outer_offloads = outer_offloads
        self.start_timeout = start_timeout
        self.netns = f"{ledger.prefix}-le"
        self.log_path = self.run_dir / "linkemu.log"
        self.ctl_path = self._socket_path()
        self._daemon: daemon.Daemon | None = None
        self._links: dict[str, _LinkState] = {}
        self._next_inner = 0

    def _socket_path(self) -> Path:
        """The control socket: in the run directory, or under /run/testbed when that path is too long."""
        path = self.run_dir / "linkemu.sock"
        if len(str(path)) <= SOCKET_PATH_MAX:
            return path
        return RUN_ROOT / self.ledger.rid / "linkemu.sock"

    # ---- the emulator process --------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """PID of the emulator process while it runs."""
        return self._daemon.pid if self._daemon is not None and self._daemon.alive() else None

    def _ensure_started(self) -> daemon.Daemon:
        """Start the emulator in its namespace on first use and wait until it answers `ping`."""
        if self._daemon is not None:
            return self._daemon
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ledger.record("netns", self.netns)
        proc.run(["ip", "netns", "add", self.netns], timeout=10)
        args = daemon.module_argv("testbed.linkemu", "--ctl", self.ctl_path, "--log", self.log_path)
        if self.seed is not None:
            args += ["--seed", str(self.seed)]
        self._daemon = daemon.start("link emulator", args, socket=self.ctl_path, netns=self.netns,
                                    log_path=self.run_dir / "linkemu.out", ledger=self.ledger,
                                    timeout=self.start_timeout)
        log.info("link emulator running: pid %d, netns %s, control %s", self._daemon.pid, self.netns, self.ctl_path)
        return self._daemon

    def request(self, cmd: str, **args: Any) -> Any:
        """Send one control request to the emulator (starting it if needed); its result."""
        return self._ensure_started().call(cmd, timeout=10.0, **args)

    def stats(self, link_id: str | None = None) -> dict[str, Any]:
        """Per-direction counters, held frames and shapes, for one link or all."""
        if self._daemon is None:
            return {}
        args = {"link_id": link_id} if link_id is not None else {}
        return self.request("stats", **args)

    # ---- links -----------------------------------------------------------------------------
    def _state(self, link_id: str) -> _LinkState:
        try:
            return self._links[link_id]
        except KeyError:
            raise TestbedError(f"userspace backend: no link {link_id!r}") from None

    def create(self, ends: LinkEnds, forward: Shape, reverse: Shape) -> None:
        """Make veths intf1<->inner_a and intf2<->inner_b (inner ends in the emulator's netns) and forward between them."""
        if ends.link_id in self._links:
            raise TestbedError(f"userspace backend: link {ends.link_id!r} exists")
        for name in (ends.intf1, ends.intf2):
            if not name or len(name) > IFNAME_MAX:
                raise SpecError(f"links.{ends.link_id}", f"interface name {name!r} must have 1..{IFNAME_MAX} characters")
        fwd = check_shape(forward, f"links.{ends.link_id}.forward")
        rev = check_shape(reverse, f"links.{ends.link_id}.reverse")
        self._ensure_started()
        n = self._next_inner
        self._next_inner += 1
        state = _LinkState(ends, f"le{n}a", f"le{n}b")
        try:
            for outer, pid, inner in ((ends.intf1, ends.ns1, state.a_inner), (ends.intf2, ends.ns2, state.b_inner)):
                self.ledger.record("interface", outer, netns_pid=pid, peer=inner, peer_netns=self.netns)
                # made directly in the outer end's namespace (by PID): the name never exists in the root netns
                where = [] if pid is None else ["netns", str(pid)]
                proc.run(["ip", "link", "add", outer, *where, "type", "veth", "peer", "name", inner,
                          "netns", self.netns], timeout=10)
                if self.outer_offloads:
                    disable_offloads(outer, pid)
                proc.run(in_netns_args(pid, ["ip", "link", "set", "dev", outer, "up"]), timeout=10)
            self.request("add", link_id=ends.link_id, a=state.a_inner, b=state.b_inner, forward=fwd, reverse=rev)
        except Exception:
            for inner in (state.a_inner, state.b_inner):
                proc.run(["ip", "-n", self.netns, "link", "del", inner], timeout=10, check=False)
            raise
        self._links[ends.link_id] = state
        log.info("link %s: %s <-> %s through %s (%s/%s)", ends.link_id, ends.intf1, ends.intf2,
                 self.netns, state.a_inner, state.b_inner)

    def shape(self, link_id: str, forward: Shape | None = None, reverse: Shape | None = None) -> None:
        """Change one or both directions at run time."""
        self._state(link_id)
        fields: dict[str, Any] = {"link_id": link_id}
        if forward is not None:
            fields["forward"] = check_shape(forward, f"links.{link_id}.forward")
        if reverse is not None:
            fields["reverse"] = check_shape(reverse, f"links.{link_id}.reverse")
        self.request("set", **fields)

    def set_up(self, link_id: str, up: bool) -> None:
        """Take a link down (no frame crosses, outer ends lose carrier) or bring it back up."""
        self._state(link_id)
        self.request("up" if up else "down", link_id=link_id)

    def delete(self, link_id: str) -> None:
        """Stop forwarding on a link and delete both veth pairs (outer ends go with the inner ones)."""
        state = self._state(link_id)
        self.request("remove", link_id=link_id)
        for inner in (state.a_inner, state.b_inner):
            proc.run(["ip", "-n", self.netns, "link", "del", inner], timeout=10, check=False)
        del self._links[link_id]

    def close(self) -> None:
        """Delete every link, stop the emulator and delete its namespace."""
        if self._daemon is not None:
            for link_id in list(self._links):
                try:
                    self.delete(link_id)
                except TestbedError as exc:
                    log.warning("deleting link %s: %s", link_id, exc)
            self._daemon.stop(timeout=3.0)
            self._daemon = None
        if os.path.exists(f"/run/netns/{self.netns}"):
            for state in self._links.values():  # links a failed delete left behind
                for inner in (state.a_inner, state.b_inner):
                    proc.run(["ip", "-n", self.netns, "link", "del", inner], timeout=10, check=False)
            proc.run(["ip", "netns", "del", self.netns], timeout=10, check=False)
        self._links.clear()
        self.ctl_path.unlink(missing_ok=True)
