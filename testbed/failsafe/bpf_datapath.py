"""The NIC's tc-BPF data path: testbed/failsafe/bpf/nic.bpf.c on ingress of both ports, the pipeline for the rest.

The kernel program handles what changes no control-plane state (see the C file's header) and
redirects every other frame to one punt veth pair (`tbp0` -> `tbp1`), tagged (a VLAN id in the
frame's metadata) with the port it came from; this process reads `tbp1` and gives each punted frame
to `Pipeline.process` exactly as the Python data path would, then sends through send-only AF_PACKET
sockets on the ports. The copies tcp_carry needs (see below) are cloned, tagged, to a second veth
(`tbc0` -> `tbc1`) and read in batches, in the order the kernel made them: the first copy of a batch
wakes the loop (a one-shot epoll), the batch is read COPY_PERIOD_S later (and before any mode change or
punted frame); while nothing is copied no timer runs for them (it used to tick every millisecond: ~10 %
of a core on this machine, with the bench's sender on the same two cores). So heartbeat replies and
everything the replay needs reach the control plane. After each batch `install()` writes what changed into the maps (targets,
watched IPs, per-service modes, connections with their precomputed rewrites, neighbours, the
configuration); `refresh()` folds the kernel's counters and connections' last-seen times back into
the pipeline's objects, so both data paths report the same numbers for the same frames.
With `carry_tcp` (the pipeline's `carry`) the kernel also copies the client's data, FIN and RST
segments to critical TCP ports and every segment the host sends on them, so `tcp_carry` keeps the
client's unacknowledged bytes as it does on the Python data path; connections it carries to a backup
get a `conns` entry without MACs (and none for replies), so every frame of theirs punts to the
pipeline, which translates their sequence numbers exactly as the reference does.
The replay store itself is in the kernel (testbed/failsafe/bpf_pending.py, the handler's `store`): a
critical UDP request or TCP SYN the kernel forwards in normal mode is kept in its flow's ring there, and
the host's reply answers it there, so in normal mode only tcp_carry's TCP segments are copied. When a
service goes fail-safe the control plane takes the service's requests from the rings (`take_pending`),
and again right after the mode reaches the kernel and one COPY_PERIOD_S later, for requests the kernel
stored between the decision and the map update.
When nic-h's veth peer is the host's interface in another namespace (`NicConfig.host_is_peer` and
`peer_elsewhere`: not when the access link is emulated, its peer then the link emulator's), frames for the host's MAC
go with bpf_redirect_peer straight into the host's receive path, typed PACKET_HOST as the host would have typed
them; all else is sent on the port (on nic-n, whose peer is a switch port in the root namespace, a redirected
frame would reach the root's IP stack as PACKET_HOST from kernel 6.15 on, and be routed there).
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from testbed import proc
from testbed.errors import TestbedError
from testbed.failsafe.bpf import libbpf
from testbed.failsafe.bpf.build import ensure_object
from testbed.failsafe.bpf_pending import PQ, PSLOT_SIZE, KernelPending
from testbed.failsafe.datapath import PortSender
from testbed.failsafe.packet import PROTO_TCP, TCP_ACK, TCP_SYN
from testbed.failsafe.pipeline import CPU, HOST, NET, ServiceCounters
from testbed.links.veth import peer_elsewhere

if TYPE_CHECKING:
    from testbed.failsafe.conntrack import Conn
    from testbed.failsafe.nic import Nic

log = logging.getLogger(__name__)

PUNT = ("tbp0", "tbp1")
COPY = ("tbc0", "tbc1")
COPY_PERIOD_S = 0.001  # copies for the replay store are read in batches, at most this late
TAG_PUNT_HOST, TAG_PUNT_NET, TAG_REQUEST, TAG_REPLY = 1, 2, 3, 4
SOL_PACKET, PACKET_AUXDATA, TP_STATUS_VLAN_VALID = 263, 8, 0x10
AUX_SPACE = socket.CMSG_SPACE(20)
MAX_SERVICES = 64
MODE_FAILSAFE, MODE_COUNTED = 1, 2
CFG = struct.Struct("<I2III4s4s6s6sIIIIQI")
NAT = struct.Struct("<12s12sIIIIQQII")
NEIGH = struct.Struct("<6sBx")
PORT_BASE = {HOST: 0, NET: 4}
PORT_FIELDS = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes")
REASONS = {8: "vlan", 9: "non_ip", 10: "critical", 11: "to_backup", 12: "from_backup", 13: "arp_answered",
           16: "reply"}
PUNTED = (14, 15)
MIRRORED = 17
PENDING_STATS = {18: "mirrored", 19: "answered", 20: "pending_expired", 21: "pending_overflow", 22: "pending_evicted"}
SVC_FIELDS = ("packets", "bytes", "to_host", "to_backup", "from_backup")
BATCH = 256


def svc_index(idx: int, field: int) -> int:
    """The counter slot of service number `idx`'s `field` (as C_SVC in the C file)."""
    return 32 + idx * 6 + field


class BpfDatapath(PortSender):
    """The kernel data path with the Python pipeline as its slow path (see the module docstring)."""

    name = "bpf"

    def __init__(self, nic: "Nic", to_cpu: Callable[[bytes, float], list[tuple[str, bytes]]]) -> None:
        cfg = nic.config
        self.nic = nic
        self.to_cpu = to_cpu
        self.send_errors = 0
        self.ports = {HOST: cfg.host_iface, NET: cfg.net_iface}
        self.obj: libbpf.BpfObject | None = None
        self.punt: socket.socket | None = None
        self.copy: socket.socket | None = None
        self._copy_ep: select.epoll | None = None  # the copy veth, one-shot: wakes the loop once per batch
        self.sock: dict[str, socket.socket] = {}
        try:
            self._open(Path(cfg.bpf_object) if cfg.bpf_object else ensure_object())
        except BaseException:
            self.close()
            raise

    # -- set-up ---------------------------------------------------------------------------------
    def _open(self, obj_path: Path) -> None:
        for iface in self.ports.values():
            libbpf.detach(iface)  # a previous NIC's program (SIGKILLed) must not keep redirecting
        self.obj = libbpf.BpfObject(str(obj_path))
        prog = self.obj.prog_fd("nic_ingress")
        o = self.obj
        self.m_cfg = o.map("cfg", 4, CFG.size)
        self.m_watch = o.map("watch", 4, 4)
        self.m_targets = o.map("targets", 8, 4)
        self.m_mode = o.map("mode", 4, 4)
        self.m_conns = o.map("conns", 16, NAT.size)
        self.m_neigh = o.map("neigh", 4, NEIGH.size)
        self.m_counters = o.map("counters", 4, 8, percpu=True)
        self.m_nocopy = o.map("nocopy", 16, 4)
        self.m_pend = o.map("pend", 16, PQ.size)
        self.m_pslots = o.map("pslots", 20, PSLOT_SIZE)
        self._sweep_due = float("inf")  # when the rings of fail-safe services are read once more
        self._nocopy: set[bytes] = set()
        self.punt = self._veth(*PUNT)
        self.copy = self._veth(*COPY)
        self._copy_ep = select.epoll()
        self._copy_ep.register(self.copy.fileno(), select.EPOLLIN | select.EPOLLONESHOT)
        self._copy_armed = True  # the next copy wakes the loop (then it is read COPY_PERIOD_S later, in a batch)
        self._copy_due = float("inf")
        for port, iface in self.ports.items():
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # send only: receives nothing
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            s.bind((iface, 0))
            self.sock[port] = s
        self._targets: dict[bytes, int] = {}
        self._watch: set[bytes] = set()
        self._sidx: dict[str, int] = {}
        self.nic.handler.store = KernelPending(self.nic.handler, self.m_pend, self.m_pslots, self._sidx)
        self._modes: dict[int, int] = {}
        self._neigh: dict[bytes, tuple[bytes, int]] = {}
        self._cfg = b""
        self._pushed: dict[bytes, tuple["Conn", bytes | None]] = {}  # flow key -> (conn, backup MAC pushed)
        self._folded: dict[bytes, int] = {}  # map key -> packets already folded into the handler's stats
        self._counted = [0] * (32 + MAX_SERVICES * 6)
        self.punted = 0
        self.mirrored = 0
        self._ifindex = {p: socket.if_nametoindex(i) for p, i in self.ports.items()}
        self._host_peer = self.nic.config.host_is_peer and peer_elsewhere(self.ports[HOST])
        self._punt_ifindex = socket.if_nametoindex(PUNT[0])
        self._copy_ifindex = socket.if_nametoindex(COPY[0])
        self.install(enabled=False)
        for iface in self.ports.values():
            libbpf.attach_ingress(iface, prog)
        self.install()
        self._self_test()
        log.info("BPF data path attached on %s and %s (punt veth %s)", *self.ports.values(), PUNT[0])

    @staticmethod
    def _veth(a: str, b: str) -> socket.socket:
        """A fresh veth pair `a` -> `b` (no IPv6 chatter) and a socket reading `b`, VLAN tags in its metadata."""
        proc.run(["ip", "link", "del", a], check=False)
        proc.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        for iface in (a, b):
            try:
                Path(f"/proc/sys/net/ipv6/conf/{iface}/disable_ipv6").write_text("1")
            except OSError:
                pass
            proc.run(["ip", "link", "set", iface, "up"])
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        s.bind((b, 0))
        s.setblocking(False)
        return s

    def _self_test(self) -> None:
        """The maps answer as written (a program that loads but whose maps are wrong is refused)."""
        if self.m_cfg.lookup(b"\0\0\0\0")[:CFG.size] != self._cfg:  # type: ignore[index]
            raise TestbedError("BPF data path: self-test failed (the cfg map does not read back)")

    # -- control plane -> maps -------------------------------------------------------------------
    def install(self, enabled: bool = True) -> None:
        """Write into the maps what changed in the control plane's tables since the last call."""
        nic = self.nic
        pipe = nic.pipeline
        if pipe._version != pipe.classifier.table.version:  # noqa: SLF001 - the pipeline's own cache
            pipe._refresh()  # noqa: SLF001
        for key, sid in pipe._cls.items():  # noqa: SLF001
            idx = self._sidx.setdefault(sid, len(self._sidx))
            if self._targets.get(key) != idx:
                self.m_targets.update(key[:5] + b"\0" + key[5:7], struct.pack("<I", idx))
                self._targets[key] = idx
        for key in [k for k in self._targets if k not in pipe._cls]:  # noqa: SLF001
            self.m_targets.delete(key[:5] + b"\0" + key[5:7])
            del self._targets[key]
        watch = set(pipe._net_watch)  # noqa: SLF001
        for ip in watch - self._watch:
            self.m_watch.update(ip, b"\1\0\0\0")
        for ip in self._watch - watch:
            self.m_watch.delete(ip)
        self._watch = watch
        went_failsafe = False
        for sid, idx in self._sidx.items():
            if idx >= MAX_SERVICES:
                continue
            m = (MODE_FAILSAFE if pipe.failsafe.get(sid) else 0) | (MODE_COUNTED if sid in pipe.counters.services else 0)
            if self._modes.get(idx) != m:
                self.m_mode.update(struct.pack("<I", idx), struct.pack("<I", m))
                went_failsafe |= bool(m & MODE_FAILSAFE) and not self._modes.get(idx, 0) & MODE_FAILSAFE
                self._modes[idx] = m
        neigh_changed = self._sync_neighbours()
        self._sync_conns(neigh_changed)
        self._sync_nocopy()
        host_mac = pipe.host_mac or b"\0" * 6
        handler = nic.handler
        store = handler.store
        cfg = CFG.pack(1 if enabled else 0, self._ifindex[HOST], self._ifindex[NET], self._punt_ifindex,
                       self._copy_ifindex, nic.nic_ip, nic.host_ip, nic.nic_mac, host_mac,
                       1 if pipe.host_mac else 0, len(handler.conntrack), 1 if pipe.carry is not None else 0,
                       store.cap() if isinstance(store, KernelPending) else 0, int(handler.pending_max_age_s * 1e9),
                       int(self._host_peer))
        if cfg != self._cfg:
            self.m_cfg.update(b"\0\0\0\0", cfg)
            self._cfg = cfg
        if went_failsafe and enabled:
            # requests the kernel forwarded to the host between the control plane's decision and this
            # map update are in its rings (and tcp_carry's in the copy queue): they go to a backup now (the
            # pipeline would have sent them), and once more after programs that read the old mode are done
            self.drain_copies()
            self.sweep()
            self._sweep_due = time.monotonic() + COPY_PERIOD_S

    def _sync_neighbours(self) -> bool:
        pipe = self.nic.pipeline
        want = {ip: (mac, 1 if ip in pipe.static else 0) for ip, mac in pipe.neighbours.items()}
        if want == self._neigh:
            return False
        for ip, v in want.items():
            if self._neigh.get(ip) != v:
                self.m_neigh.update(ip, NEIGH.pack(*v))
        for ip in [k for k in self._neigh if k not in want]:
            self.m_neigh.delete(ip)
        self._neigh = want
        return True

    def _sync_conns(self, recheck: bool) -> None:
        ct = self.nic.handler.conntrack
        conns = ct._by_key  # noqa: SLF001 - read-only walk of the reference's table
        if not recheck and len(conns) == len(self._pushed) and not conns and not self._pushed:
            return
        neighbours = self.nic.pipeline.neighbours
        carry = self.nic.pipeline.carry
        carried = carry.carried if carry is not None else {}
        for key in [k for k, (c, _) in self._pushed.items() if conns.get(k) is not c]:
            self._retire(key)
        for key, conn in conns.items():
            if key in carried:  # every frame of a carried connection punts: entries without MACs, none for replies
                if key not in self._pushed:
                    rw = conn.to_backup
                    for mkey in (key, self._reverse_key(key)):  # the client's and the host's segments
                        self.m_conns.update(self._map_key(mkey), NAT.pack(rw.l3l4, b"\0" * 12, rw.ip_delta,
                                                                          rw.l4_delta, self._idx(conn), 0, 0, 0, 0, 0))
                    self._pushed[key] = (conn, b"")
                continue
            mac = None if conn.closing else neighbours.get(conn.backup_ip)
            have = self._pushed.get(key)
            if have is not None and have[1] == mac:
                continue
            fkey = self._map_key(key)
            if have is None:
                rkey = self._map_key(conn.reply_key)
                rw = conn.to_client
                self.m_conns.update(rkey, NAT.pack(rw.l3l4, rw.macs, rw.ip_delta, rw.l4_delta, self._idx(conn), 1,
                                                   0, 0, 0, 0))
                self._folded[rkey] = 0
            else:
                self._fold(fkey, conn, reply=False)
            if mac is None:
                self.m_conns.delete(fkey)
                self._folded.pop(fkey, None)
            else:
                rw = conn.to_backup
                self.m_conns.update(fkey, NAT.pack(rw.l3l4, mac + self.nic.nic_mac, rw.ip_delta, rw.l4_delta,
                                                   self._idx(conn), 0, 0, 0, 0, 0))
                self._folded[fkey] = 0
            self._pushed[key] = (conn, mac)

    def _sync_nocopy(self) -> None:
        """Flows tcp_carry gave up on (bulk transfers): the kernel stops copying their segments, both ways."""
        carry = self.nic.pipeline.carry
        want = set(carry.bulk) if carry is not None else set()
        if want == self._nocopy:
            return
        for key in want - self._nocopy:
            for mkey in (key, self._reverse_key(key)):
                self.m_nocopy.update(self._map_key(mkey), b"\1\0\0\0")
        for key in self._nocopy - want:
            for mkey in (key, self._reverse_key(key)):
                self.m_nocopy.delete(self._map_key(mkey))
        self._nocopy = want

    @staticmethod
    def _reverse_key(key: bytes) -> bytes:
        """The flow key of the other direction (the frame's byte order: proto, src, dst, sport, dport)."""
        return key[:1] + key[5:9] + key[1:5] + key[11:13] + key[9:11]

    def _idx(self, conn: "Conn") -> int:
        return self._sidx.get(conn.service, MAX_SERVICES)

    @staticmethod
    def _map_key(flow: bytes) -> bytes:
        return flow[:1] + b"\0\0\0" + flow[1:]

    def _retire(self, key: bytes) -> None:
        conn, mac = self._pushed.pop(key)
        if mac == b"":  # a carried connection's punt entries
            self.m_conns.delete(self._map_key(self._reverse_key(key)))
        for mkey, reply in ((self._map_key(key), False), (self._map_key(conn.reply_key), True)):
            self._fold(mkey, conn, reply)
            self.m_conns.delete(mkey)
            self._folded.pop(mkey, None)

    def _fold(self, mkey: bytes, conn: "Conn", reply: bool) -> None:
        """Add the kernel's packets on map entry `mkey` to the handler's stats; take its last-seen time."""
        if mkey not in self._folded:
            return
        raw = self.m_conns.lookup(mkey)
        if raw is None:
            return
        v = NAT.unpack(raw[:NAT.size])
        last_ns, packets, replied, assured = v[6], v[7], v[8], v[9]
        d = packets - self._folded[mkey]
        self._folded[mkey] = packets
        if last_ns:
            conn.last_seen = max(conn.last_seen, last_ns / 1e9)
        conn.replied |= bool(replied)
        conn.assured |= bool(assured)
        if d <= 0:
            return
        st = self.nic.handler.stats
        if reply:
            st.reversed += d
            return
        st.translated += d
        st.per_backup[conn.backup_name] = st.per_backup.get(conn.backup_name, 0) + d
        if conn.relayed:
            st.relayed += d

    # -- maps -> control plane -------------------------------------------------------------------
    def counter(self, idx: int) -> int:
        """Counter slot `idx` summed over CPUs."""
        raw = self.m_counters.lookup(struct.pack("<I", idx))
        return sum(struct.unpack(f"<{self.m_counters.ncpus}Q", raw)) if raw else 0

    def refresh(self) -> None:
        """Fold the kernel's counters (since the last call) and connection state into the pipeline's."""
        self.drain_copies()
        pc = self.nic.pipeline.counters

        def delta(idx: int) -> int:
            v = self.counter(idx)
            d, self._counted[idx] = v - self._counted[idx], v
            return d

        for port, base in PORT_BASE.items():
            c = pc.ports[port]
            for i, f in enumerate(PORT_FIELDS):
                setattr(c, f, getattr(c, f) + delta(base + i))
        for idx, reason in REASONS.items():
            d = delta(idx)
            if d:
                pc.reasons[reason] = pc.reasons.get(reason, 0) + d
        st = self.nic.handler.stats
        for idx, name in PENDING_STATS.items():
            d = delta(idx)
            if d:
                setattr(st, name, getattr(st, name) + d)
        self.punted = sum(self.counter(i) for i in PUNTED)
        self.mirrored = self.counter(MIRRORED)
        for sid, idx in self._sidx.items():
            if idx >= MAX_SERVICES:
                continue
            sc = pc.services.get(sid)
            for f, name in enumerate(SVC_FIELDS):
                d = delta(svc_index(idx, f))
                if d:
                    if sc is None:
                        sc = pc.services[sid] = ServiceCounters()
                    setattr(sc, name, getattr(sc, name) + d)
        for key, (conn, _) in list(self._pushed.items()):
            self._fold(self._map_key(key), conn, reply=False)
            self._fold(self._map_key(conn.reply_key), conn, reply=True)

    # -- frames ----------------------------------------------------------------------------------
    def receivers(self) -> dict[int, Callable[[], None]]:
        """The punt veth (every frame the kernel leaves to the pipeline); the copy veth's first copy of a batch."""
        assert self.punt is not None and self._copy_ep is not None
        return {self.punt.fileno(): self.drain, self._copy_ep.fileno(): self._copy_ready}

    def _copy_ready(self) -> None:
        """A copy arrived while none was waiting: read the batch COPY_PERIOD_S from now (no timer while idle)."""
        assert self._copy_ep is not None
        self._copy_ep.poll(0)  # consumes the one-shot event: no more wake-ups until drain_copies re-arms it
        self._copy_armed = False
        if self._copy_due == float("inf"):
            self._copy_due = time.monotonic() + COPY_PERIOD_S

    def next_deadline(self) -> float:
        """When tcp_carry's copies are read next (or the rings of services gone fail-safe once more)."""
        return min(self._copy_due, self._sweep_due)

    def tick(self, now: float) -> None:
        """Read the copies when due (before the control plane's timeouts act on them); the late sweep."""
        if now >= self._copy_due:
            self.drain_copies()
        if now >= self._sweep_due != float("inf"):
            self._sweep_due = float("inf")
            self.sweep(last=True)

    def sweep(self, last: bool = False) -> None:
        """Requests the kernel stored for services already in fail-safe mode: re-sent to a backup, as pending ones.

        The `last` sweep no longer waits for slots the kernel has not finished writing.
        """
        pipe = self.nic.pipeline
        store = self.nic.handler.store
        if not isinstance(store, KernelPending):
            return
        now = time.monotonic()
        for sid in [s for s, on in pipe.failsafe.items() if on]:
            for frame in store.take_pending(sid, now, wait_unwritten=not last):
                self._replay(frame, sid, now)

    def drain_copies(self) -> None:
        """Keep the kernel's copies of critical requests (`mirror_key`) and mark replies' requests answered, in order."""
        self._copy_due = float("inf")
        if self.copy is not None:
            self._drain(self.copy, 1 << 16)
            if not self._copy_armed and self._copy_ep is not None:
                self._copy_ep.modify(self.copy.fileno(), select.EPOLLIN | select.EPOLLONESHOT)  # reports a copy already there
                self._copy_armed = True
        carry = self.nic.pipeline.carry
        if carry is not None and len(carry.bulk) != len(self._nocopy):
            self._sync_nocopy()  # a bulk transfer's copies stop now, not at the next punted frame

    def _replay(self, frame: bytes, sid: str, now: float, carried: bool = False) -> None:
        """A request the kernel gave the host just as `sid` went fail-safe: re-sent to a backup, as a pending one.

        A segment of a connection `carried` to a backup goes where the pipeline would have sent it (held or shifted).
        """
        from testbed.failsafe.packet import parse

        p = parse(frame)
        if p.error:
            return
        if carried:
            self.send(self.nic.pipeline.carry_client(frame, p, sid, now))
            return
        self.nic.handler.stats.resent += 1
        self.send(self.nic.pipeline._to_backup(frame, p, sid, now))  # noqa: SLF001 - the replay's own path

    def drain(self) -> None:
        """Handle what the kernel punted, after the copies it made before; then update the maps."""
        assert self.punt is not None
        self.drain_copies()
        self._drain(self.punt, BATCH)
        self.install()

    def _drain(self, sock: socket.socket, limit: int) -> None:
        recvmsg = sock.recvmsg
        pipe = self.nic.pipeline
        for _ in range(limit):
            try:
                frame, anc, _, _ = recvmsg(65535, AUX_SPACE)
            except BlockingIOError:
                return
            except OSError:
                continue
            tag = 0
            for level, kind, data in anc:
                if level == SOL_PACKET and kind == PACKET_AUXDATA and data[0] & TP_STATUS_VLAN_VALID:
                    tag = int.from_bytes(data[16:18], "little") & 0x0FFF
            now = time.monotonic()
            if tag == TAG_REQUEST:  # a client's TCP segment or SYN for tcp_carry (SYNs are in the kernel's rings)
                carry = pipe.carry
                sid = pipe._cls.get(frame[30:34] + frame[23:24] + frame[36:38])  # noqa: SLF001
                if sid is None or carry is None or frame[23] != PROTO_TCP:
                    continue
                key = frame[23:24] + frame[26:38]
                segment = frame[47] & (TCP_SYN | TCP_ACK) != TCP_SYN
                if pipe.failsafe.get(sid):
                    if segment and key in carry.carried:
                        self._replay(frame, sid, now, carried=True)
                    continue  # a SYN: the sweep re-sends it from the rings
                carry.client_segment(key, frame, 34, 14 + ((frame[16] << 8) | frame[17]), sid, now)
            elif tag == TAG_REPLY:  # the host's TCP segment for tcp_carry (the kernel answered a SYN in its rings)
                rkey = frame[23:24] + frame[30:34] + frame[26:30] + frame[36:38] + frame[34:36]
                if pipe.carry is not None and frame[23] == PROTO_TCP:
                    pipe.carry.host_segment(rkey, frame, 34, 14 + ((frame[16] << 8) | frame[17]), now)
            elif tag in (TAG_PUNT_HOST, TAG_PUNT_NET):
                self.send(pipe.process(frame, HOST if tag == TAG_PUNT_HOST else NET, now))

    def close(self) -> None:
        """Detach the program from both ports, remove the punt veths, release the object and sockets."""
        for iface in self.ports.values():
            libbpf.detach(iface)
        for s in [x for x in (self.punt, self.copy) if x is not None] + list(self.sock.values()):
            s.close()
        for sock, (a, _) in ((self.punt, PUNT), (self.copy, COPY)):
            if sock is not None:
                proc.run(["ip", "link", "del", a], check=False)
        self.punt, self.copy, self.sock = None, None, {}
        if self._copy_ep is not None:
            self._copy_ep.close()
            self._copy_ep = None
        if isinstance(self.nic.handler.store, KernelPending):
            self.nic.handler.store = None  # its maps go with the object
        if self.obj is not None:
            self.obj.close()
            self.obj = None


__all__ = ["BpfDatapath", "PUNT"]
