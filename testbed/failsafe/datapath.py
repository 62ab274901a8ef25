"""The NIC's data plane behind one interface: `Datapath`, and the Python pipeline as its reference implementation.

The control plane (`nic.Nic`: heartbeats, discovery, control socket, pending requests and replay)
owns the tables (classifier, service table, conntrack, neighbours, per-service mode) in the pipeline
objects; a `Datapath` carries frames according to them:

* `install()` pushes table entries, per-service modes and connections to where frames are handled
  (nothing to do for the Python pipeline, which reads the tables directly; the BPF data path writes
  its maps),
* `refresh()` folds what was counted elsewhere (kernel counters, connections' last-seen times) into the
  pipeline's counters, so `counters`/`failover` read one set of numbers,
* `receivers()` are the file descriptors whose frames reach the NIC: bulk ports for the Python data
  path, punt ports (critical requests to mirror, heartbeat replies, everything the kernel leaves to
  the reference) for the BPF one, each with the function that drains it,
* `send(frames, to_cpu)` sends (port, frame) pairs the control plane built.

`open_datapath(kind, nic)` picks one: "python", "bpf" (a clear error if it cannot load) or "auto"
(BPF if it loads, Python otherwise, with the reason logged).
"""

from __future__ import annotations

import logging
import socket
import time
from typing import TYPE_CHECKING, Callable, Protocol

from testbed.errors import TestbedError
from testbed.failsafe.pipeline import CPU, HOST, NET

if TYPE_CHECKING:
    from testbed.failsafe.nic import Nic

log = logging.getLogger(__name__)

BATCH = 256
AUX_SPACE = socket.CMSG_SPACE(20)
TP_STATUS_VLAN_VALID = 0x10
KINDS = ("auto", "bpf", "python")
Frames = list[tuple[str, bytes]]
ToCpu = Callable[[bytes, float], Frames]


class Datapath(Protocol):
    """Where the NIC's frames are classified, forwarded, mirrored and rewritten."""

    name: str  # "python" or "bpf"
    send_errors: int

    def install(self) -> None:
        """Bring the data path's tables in line with the control plane's (entries, modes, connections)."""

    def refresh(self) -> None:
        """Fold counters and connection state kept elsewhere into the pipeline's objects."""

    def receivers(self) -> dict[int, Callable[[], None]]:
        """File descriptors to poll, each with the function that handles its frames."""

    def send(self, frames: Frames) -> None:
        """Send (port, frame) pairs; "cpu" frames go to the NIC's own logic."""

    def next_deadline(self) -> float:
        """When `tick` has work (math.inf: never)."""

    def tick(self, now: float) -> None:
        """Time-driven work of the data path itself (run before the control plane's)."""

    def close(self) -> None:
        """Release everything the data path set up."""


class PortSender:
    """What both data paths share: sending the control plane's (port, frame) pairs on their port sockets."""

    sock: dict
    to_cpu: ToCpu
    send_errors: int

    def send(self, frames: Frames) -> None:
        """Send (port, frame) pairs; "cpu" frames are handed to the NIC's own logic."""
        for port, frame in frames:
            if port == CPU:
                self.send(self.to_cpu(frame, time.monotonic()))
                continue
            try:
                self.sock[port].send(frame)
            except OSError:
                self.send_errors += 1


class PythonDatapath(PortSender):
    """The reference: AF_PACKET raw sockets on both ports and `Pipeline` in this process."""

    name = "python"

    def __init__(self, nic: "Nic", to_cpu: ToCpu) -> None:
        from testbed.failsafe.nic import iface_mtu, mac_filter, open_port

        cfg = nic.config
        self.nic = nic
        self.to_cpu = to_cpu
        # Frames from the host to the NIC's own MAC (heartbeat replies) get a socket of their own,
        # read first: their RTT must not include the time spent behind bulk traffic in one queue.
        self.sock = {HOST: open_port(cfg.host_iface, mac_filter(nic.nic_mac, accept=False)),
                     NET: open_port(cfg.net_iface)}
        self.cpu_sock = open_port(cfg.host_iface, mac_filter(nic.nic_mac, accept=True))
        self.send_errors = 0
        # frames are at most MTU + Ethernet header + one VLAN tag (offloads are off, so no GRO/TSO)
        self.vlan_passthrough = cfg.vlan_passthrough
        self.bufsize = max(iface_mtu(cfg.host_iface), iface_mtu(cfg.net_iface)) + 18

    def install(self) -> None:
        """Nothing to push: the pipeline reads the control plane's tables itself."""

    def refresh(self) -> None:
        """Nothing is counted elsewhere."""

    def next_deadline(self) -> float:
        """Never: no time-driven work."""
        return float("inf")

    def tick(self, now: float) -> None:
        """Nothing to do."""

    def receivers(self) -> dict[int, Callable[[], None]]:
        """The heartbeat-reply socket first, then the two ports."""
        return {self.cpu_sock.fileno(): self.drain_cpu, self.sock[NET].fileno(): lambda: self.drain(NET),
                self.sock[HOST].fileno(): lambda: self.drain(HOST)}

    def drain(self, ingress: str) -> None:
        """Receive and handle frames on `ingress` until the socket is empty (or a batch is done).

        The kernel moves an 802.1Q tag out of every received frame into metadata; with
        `vlan_passthrough` (the default) PACKET_AUXDATA hands it back and the tag is re-inserted, so
        tagged frames cross the NIC unchanged. Without it (about 15% faster: recv instead of recvmsg)
        tagged frames leave the NIC untagged.
        """
        recvmsg = self.sock[ingress].recvmsg
        recv = self.sock[ingress].recv
        aux = self.vlan_passthrough
        bufsize = self.bufsize
        egress = self.sock[NET if ingress == HOST else HOST]
        out_send = egress.send
        pipe = self.nic.pipeline
        fwd = pipe.forward
        fast = pipe.fast
        tx = pipe.counters.ports[NET if ingress == HOST else HOST]
        tx_of = pipe.counters.ports
        socks = self.sock
        now = time.monotonic()  # one clock read per batch for the fast path's last-seen times
        for _ in range(BATCH):
            try:
                if aux:
                    frame, anc, _, _ = recvmsg(bufsize, AUX_SPACE)
                else:
                    frame, anc = recv(bufsize), None
            except BlockingIOError:
                return
            except OSError:
                continue
            if anc and anc[0][2][0] & TP_STATUS_VLAN_VALID:
                aux = anc[0][2]
                frame = frame[:12] + (aux[18:20] if aux[18:20] != b"\x00\x00" else b"\x00\x81")[::-1] \
                    + aux[16:18][::-1] + frame[12:]
            if fwd(frame, ingress):
                try:
                    out_send(frame)
                    tx.tx_packets += 1
                    tx.tx_bytes += len(frame)
                except OSError:
                    self.send_errors += 1
                continue
            try:
                done = fast(frame, ingress, now)
            except Exception:  # noqa: BLE001 - one bad frame must never stop the NIC
                log.exception("fast path error on a %d-byte frame from %s", len(frame), ingress)
                done = None
            if done is not None:
                port, out = done
                try:
                    socks[port].send(out)
                    c = tx_of[port]
                    c.tx_packets += 1
                    c.tx_bytes += len(out)
                except OSError:
                    self.send_errors += 1
                continue
            self.send(pipe.process_slow(frame, ingress, time.monotonic()))

    def drain_cpu(self) -> None:
        """Handle frames from the host addressed to the NIC itself, each timestamped as it is read."""
        recv = self.cpu_sock.recv
        process = self.nic.pipeline.process
        for _ in range(BATCH):
            try:
                frame = recv(self.bufsize)
            except BlockingIOError:
                return
            except OSError:
                continue
            self.send(process(frame, HOST, time.monotonic()))

    def close(self) -> None:
        """Close the sockets."""
        for s in (*self.sock.values(), self.cpu_sock):
            s.close()


def open_datapath(kind: str, nic: "Nic", to_cpu: ToCpu) -> Datapath:
    """The data path `kind` ("auto", "bpf", "python") for `nic`; "auto" falls back to Python with the reason logged."""
    if kind not in KINDS:
        raise TestbedError(f"NIC {nic.config.node}: unknown datapath {kind!r} (want one of {', '.join(KINDS)})")
    if kind in ("auto", "bpf"):
        from testbed.failsafe.bpf_datapath import BpfDatapath

        try:
            return BpfDatapath(nic, to_cpu)
        except (TestbedError, OSError) as exc:
            if kind == "bpf":
                raise TestbedError(f"NIC {nic.config.node}: datapath bpf cannot be used: {exc}") from None
            log.warning("NIC %s: BPF data path unavailable, using the Python one: %s", nic.config.node, exc)
            nic.datapath_fallback = str(exc)
    detach_stale(nic)
    return PythonDatapath(nic, to_cpu)


def detach_stale(nic: "Nic") -> None:
    """Remove a BPF program and punt veth a SIGKILLed BPF NIC left on this NIC's ports (else it keeps redirecting)."""
    from testbed import proc

    try:
        from testbed.failsafe.bpf import libbpf

        for iface in (nic.config.host_iface, nic.config.net_iface):
            libbpf.detach(iface)
    except TestbedError as exc:  # no libbpf: no BPF NIC can have run here either
        log.debug("no stale BPF program to remove: %s", exc)
    for veth in ("tbp0", "tbc0"):
        try:
            socket.if_nametoindex(veth)  # (not /sys/class/net: sysfs shows the namespace it was mounted in)
        except OSError:
            continue
        proc.run(["ip", "link", "del", veth], check=False)


__all__ = ["Datapath", "KINDS", "PythonDatapath", "open_datapath"]
