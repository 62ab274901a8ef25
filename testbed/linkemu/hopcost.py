"""What one Open vSwitch hop costs a frame on this machine, measured on a throwaway bridge of the run.

A frame that leaves an emulated link enters the next switch, which, in OVS's userspace datapath
on a VM, first has to wake up: 0.15-0.25 ms here (bench/README.md), a cost the link alone causes
(without the link the frame would not cross that switch). The emulator measures it once at start
on a bridge of its own, `<prefix>hc` with ports `<prefix>hc0` -> `<prefix>hc1` (names carry the
run's prefix, so `testbed clean` removes them after a crash), keeps it for the run and measures
again every second (the cost depends on the machine's load), and brings delayed frames
forward by it on ports whose outer end lives where ovs-vswitchd does. It is the fallback: while
frames in transit between two links measure real hops (testbed.linkemu.engine.TransitHops), their
median is used instead (under load this bridge read ~160 us where real hops took ~80).
"""

from __future__ import annotations

import logging
import os
import select
import socket
import statistics
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from testbed import proc
from testbed.links.veth import link_netnsid

log = logging.getLogger(__name__)

OVS_PIDFILE = Path("/var/run/openvswitch/ovs-vswitchd.pid")
NETNS_DIR = Path("/run/netns")
ETHERTYPE = 0x88B5  # IEEE local experimental: never a protocol anyone else speaks
SAMPLES = 15
GAP_S = 0.005  # between probes: long enough for the switch to fall asleep, as it does between delayed frames
SO_TIMESTAMPNS = 35


@dataclass(frozen=True)
class HopCost:
    """The median cost of one switch hop from idle (seconds), and the netns id its ports' peers have."""

    seconds: float
    netnsid: int | None
    samples: int


def own_netns_name() -> str | None:
    """The name under /run/netns of the namespace this process runs in, or None."""
    try:
        mine = os.stat("/proc/self/ns/net").st_ino
        for entry in NETNS_DIR.iterdir():
            if entry.stat().st_ino == mine:
                return entry.name
    except OSError:
        return None
    return None


def ovs_pid() -> int | None:
    """PID of the running ovs-vswitchd, from its pid file."""
    try:
        pid = int(OVS_PIDFILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if os.path.exists(f"/proc/{pid}") else None


def datapath_type() -> str:
    """The OVS datapath the testbed uses here: the kernel's where its module is loaded, else userspace."""
    return "system" if os.path.isdir("/sys/module/openvswitch") else "netdev"


def _frame(seq: int) -> bytes:
    head = bytes.fromhex("020000000002" "020000000001") + struct.pack("!H", ETHERTYPE)
    return head + struct.pack("!I", seq) + bytes(42)


def _probe(tx: socket.socket, rx: socket.socket, samples: int, gap: float) -> list[float]:
    """Send `samples` frames on `tx`; seconds from each send to the kernel's receive time on `rx`."""
    ep = select.epoll()
    ep.register(rx.fileno(), select.EPOLLIN)
    out: list[float] = []
    try:
        for seq in range(samples):
            time.sleep(gap)
            sent = time.time()
            tx.send(_frame(seq))
            deadline = time.monotonic() + 0.2
            while time.monotonic() < deadline:
                if not ep.poll(max(0.0, deadline - time.monotonic())):
                    break
                data, anc, _flags, _addr = rx.recvmsg(2048, socket.CMSG_SPACE(16))
                if len(data) >= 18 and struct.unpack_from("!HI", data, 12) == (ETHERTYPE, seq) and anc:
                    sec, nsec = struct.unpack_from("qq", anc[0][2])
                    out.append(sec + nsec * 1e-9 - sent)
                    break
    finally:
        ep.close()
    return out


class HopMeter:
    """The throwaway bridge and its two probe sockets; `probe()` times frames across it."""

    def __init__(self, prefix: str) -> None:
        self.bridge = f"{prefix}hc"
        self.outer = (f"{prefix}hc0", f"{prefix}hc1")
        self.inner = ("lehc0", "lehc1")
        self.socks: list[socket.socket] = []
        self.netnsid: int | None = None

    def open(self) -> None:
        """Create the veths (outer ends where ovs-vswitchd runs), the bridge, its one flow and the sockets."""
        pid = ovs_pid()
        if pid is None:
            raise RuntimeError("ovs-vswitchd is not running")
        try:
            for o, i in zip(self.outer, self.inner):
                proc.run(["ip", "link", "add", i, "type", "veth", "peer", "name", o, "netns", str(pid)], timeout=10)
                proc.run(["ip", "link", "set", "dev", i, "up"], timeout=10)
                proc.run(["nsenter", f"--target={pid}", "--net", "ip", "link", "set", "dev", o, "up"], timeout=10)
            br, (o0, o1) = self.bridge, self.outer
            proc.run(["ovs-vsctl", "--timeout=10", "add-br", br, "--", "set", "bridge", br,
                      f"datapath_type={datapath_type()}", "fail_mode=secure",
                      "--", "add-port", br, o0, "--", "set", "interface", o0, "ofport_request=1",
                      "--", "add-port", br, o1, "--", "set", "interface", o1, "ofport_request=2"], timeout=20)
            proc.run(["ovs-ofctl", "--timeout=10", "add-flow", br, "in_port=1,actions=output:2"], timeout=20)
            for name in self.inner:
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETHERTYPE))
                self.socks.append(s)
                s.bind((name, ETHERTYPE))
                s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.netnsid = link_netnsid(self.inner[0])
            _probe(self.socks[0], self.socks[1], 3, GAP_S)  # the first frames may meet a port not yet polled
        except Exception:
            self.close()
            raise

    def probe(self, samples: int = SAMPLES) -> list[float]:
        """Seconds each of `samples` frames, sent GAP_S apart, took from one inner end to the other."""
        return _probe(self.socks[0], self.socks[1], samples, GAP_S)

    def close(self) -> None:
        """Remove the sockets, the bridge and the veths (deleting the inner ends takes the outer ones)."""
        for s in self.socks:
            s.close()
        self.socks.clear()
        proc.run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", self.bridge], timeout=20, check=False)
        for i in self.inner:
            proc.run(["ip", "link", "del", i], timeout=10, check=False)


def measure(prefix: str, samples: int = SAMPLES) -> HopCost | None:
    """One measurement on a bridge built and removed for it; None where that cannot be done."""
    meter = HopMeter(prefix)
    try:
        meter.open()
        times = meter.probe(samples)
    except Exception as exc:
        log.warning("switch hop cost not measured: %s", exc)
        return None
    finally:
        meter.close()
    if len(times) < samples // 2:
        return None
    return HopCost(statistics.median(times), meter.netnsid, len(times))
