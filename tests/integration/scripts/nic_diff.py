"""Drives one NIC data path with a seeded frame corpus inside the current namespace; prints JSON.

Run by tests/integration/test_nic_datapaths.py as `python nic_diff.py DATAPATH SEED` inside a fresh
namespace (`ip netns exec`). Builds h0 - nic-h and nic-n - n0, a `Nic` with its `Datapath` (no
heartbeats are sent: the test drives modes itself), sends each frame of the corpus into n0 or h0,
lets the data path handle it, and records every frame that comes out of nic-h (seen on h0) or nic-n
(seen on n0), VLAN tags put back from the packet metadata; then the counters.
"""

from __future__ import annotations

import dataclasses
import json
import random
import select
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from testbed import proc  # noqa: E402
from testbed.failsafe.config import NicConfig, ServiceConfig  # noqa: E402
from testbed.failsafe.datapath import open_datapath  # noqa: E402
from testbed.failsafe.nic import Nic, tune_iface  # noqa: E402
from testbed.failsafe.packet import (ETH_ARP, ETH_IPV4, PROTO_ICMP, PROTO_TCP, PROTO_UDP, arp_frame,  # noqa: E402
                                     ethernet, ip_bytes, ipv4, ipv4_frame, mac_bytes, tcp, udp)

CLIENT, HOST, BACKUP, NIC_IP, OTHER = "10.9.0.7", "10.9.0.11", "10.9.0.12", "10.9.0.111", "10.9.0.99"
MAC = {CLIENT: "02:00:00:00:00:07", HOST: "02:00:00:00:00:11", BACKUP: "02:00:00:00:00:12",
       NIC_IP: "02:00:00:00:01:11", OTHER: "02:00:00:00:00:99"}
SOL_PACKET, PACKET_AUXDATA, PACKET_IGNORE_OUTGOING = 263, 8, 23
QUIET_S = 0.015


def m(ip: str) -> bytes:
    return mac_bytes(MAC[ip])


def frame_udp(src: str, dst: str, sport: int, dport: int, payload: bytes, dst_mac: str | None = None,
              ident: int = 0) -> bytes:
    s, d = ip_bytes(src), ip_bytes(dst)
    return ipv4_frame(m(dst_mac or dst), m(src), s, d, PROTO_UDP, udp(s, d, sport, dport, payload), ident)


def frame_tcp(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"",
              dst_mac: str | None = None) -> bytes:
    s, d = ip_bytes(src), ip_bytes(dst)
    return ipv4_frame(m(dst_mac or dst), m(src), s, d, PROTO_TCP, tcp(s, d, sport, dport, seq, ack, flags, payload))


def corpus(rng: random.Random, phase: str) -> list[tuple[str, bytes]]:
    """(into "net" or "host", frame) for one phase: normal, failsafe or back (normal again)."""
    out: list[tuple[str, bytes]] = []
    SYN, ACK, PSH, FIN, RST = 0x02, 0x10, 0x08, 0x01, 0x04
    for i in range(rng.randint(3, 6)):  # critical UDP requests and their replies
        sport = 20000 + rng.randint(0, 3)
        body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40)))
        out.append(("net", frame_udp(CLIENT, HOST, sport, 5000, body, ident=i)))
        out.append(("host", frame_udp(HOST, CLIENT, 5000, sport, b"main:" + body)))
    cport = 30000 + rng.randint(0, 9)
    out += [("net", frame_tcp(CLIENT, HOST, cport, 7000, 100, 0, SYN)),
            ("host", frame_tcp(HOST, CLIENT, 7000, cport, 900, 101, SYN | ACK)),
            ("net", frame_tcp(CLIENT, HOST, cport, 7000, 101, 901, ACK))]
    for k in range(rng.randint(2, 5)):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200)))
        out.append(("net", frame_tcp(CLIENT, HOST, cport, 7000, 101 + k, 901, ACK | PSH, data)))
        out.append(("host", frame_tcp(HOST, CLIENT, 7000, cport, 901, 102 + k, ACK, b"")))
    out.append(("net", frame_tcp(CLIENT, HOST, cport, 7000, 200, 901, FIN | ACK)))
    kport = 31000  # a connection open across the failover: carried to the backup (tcp_carry), NAT port 40000
    if phase == "normal":
        out += [("net", frame_tcp(CLIENT, HOST, kport, 7000, 500, 0, SYN)),
                ("host", frame_tcp(HOST, CLIENT, 7000, kport, 700, 501, SYN | ACK)),
                ("net", frame_tcp(CLIENT, HOST, kport, 7000, 501, 701, ACK | PSH, b"answered\n")),
                ("host", frame_tcp(HOST, CLIENT, 7000, kport, 701, 510, ACK | PSH, b"main:answered\n")),
                ("net", frame_tcp(CLIENT, HOST, kport, 7000, 510, 715, ACK | PSH, b"carry-me\n"))]
    if phase == "failsafe":
        out += [("net", frame_tcp(BACKUP, NIC_IP, 7000, 40000, 3000, 510, SYN | ACK, dst_mac=NIC_IP)),
                ("net", frame_tcp(CLIENT, HOST, kport, 7000, 510, 715, ACK | PSH, b"carry-me\n")),
                ("host", frame_tcp(HOST, CLIENT, 7000, kport, 715, 519, ACK | PSH, b"main:late\n")),
                ("net", frame_tcp(BACKUP, NIC_IP, 7000, 40000, 3001, 519, ACK | PSH, b"backup:carry-me\n",
                                  dst_mac=NIC_IP))]
    if phase == "failsafe":  # the backup's replies to the NIC's NAT ports (40000 up, in order of new flows)
        for port in range(40000, 40006):
            out.append(("net", frame_udp(BACKUP, NIC_IP, 5000, port, b"backup", dst_mac=NIC_IP)))
            out.append(("net", frame_tcp(BACKUP, NIC_IP, 7000, port, 5000, 101, ACK, b"b", dst_mac=NIC_IP)))
    # not critical
    out.append(("net", frame_udp(CLIENT, HOST, 1234, 5001, b"plain")))
    out.append(("host", frame_udp(HOST, CLIENT, 5001, 1234, b"plain")))
    out.append(("net", frame_tcp(CLIENT, OTHER, 40000, 80, 1, 0, SYN, dst_mac=HOST)))
    out.append(("host", frame_tcp(HOST, OTHER, 7001, 80, 1, 0, ACK, b"x")))
    # the NIC itself: ping, ARP from a known neighbour (backup, static), from the host, from a stranger
    s, d = ip_bytes(CLIENT), ip_bytes(NIC_IP)
    icmp = bytes([8, 0, 0, 0, 0, 1, 0, 1]) + b"ping"
    from testbed.failsafe.packet import checksum
    icmp = icmp[:2] + checksum(icmp).to_bytes(2, "big") + icmp[4:]
    out.append(("net", ipv4_frame(m(NIC_IP), m(CLIENT), s, d, PROTO_ICMP, icmp)))
    out.append(("net", arp_frame(1, m(BACKUP), ip_bytes(BACKUP), b"\0" * 6, ip_bytes(NIC_IP))))
    out.append(("host", arp_frame(1, m(HOST), ip_bytes(HOST), b"\0" * 6, ip_bytes(NIC_IP))))
    out.append(("net", arp_frame(1, m(OTHER), ip_bytes(OTHER), b"\0" * 6, ip_bytes(NIC_IP))))
    out.append(("net", arp_frame(1, m(OTHER), ip_bytes(OTHER), b"\0" * 6, ip_bytes(NIC_IP))))
    out.append(("net", arp_frame(1, m(CLIENT), ip_bytes(CLIENT), b"\0" * 6, ip_bytes(HOST))))
    # VLAN, IPv6, malformed, fragments
    inner = ipv4(ip_bytes(CLIENT), ip_bytes(HOST), PROTO_UDP, udp(ip_bytes(CLIENT), ip_bytes(HOST), 1, 5000, b"v"))
    out.append(("net", ethernet(m(HOST), m(CLIENT), ETH_IPV4, inner, vlan=rng.randint(2, 4000))))
    out.append(("host", ethernet(m(CLIENT), m(HOST), ETH_ARP, b"\0" * 28, vlan=7)))
    out.append(("net", ethernet(m(HOST), m(CLIENT), b"\x86\xdd", bytes(rng.getrandbits(8) for _ in range(60)))))
    good = bytearray(frame_udp(CLIENT, HOST, 20000, 5000, b"bad"))
    for mutate in range(6):
        f = bytearray(good)
        if mutate == 0:
            f[14] = 0x46  # IHL 6 without options
        elif mutate == 1:
            f[16:18] = (2000).to_bytes(2, "big")  # total length past the frame
        elif mutate == 2:
            f = f[:30]  # truncated IP
        elif mutate == 3:
            f[20] = 0x20  # more fragments
        elif mutate == 4:
            f[21] = 0x10  # a non-first fragment
        else:
            f[rng.randrange(14, len(f))] ^= 1 << rng.randrange(8)  # a random bit flip
        out.append((rng.choice(("net", "host")), bytes(f).ljust(60, b"\0") if len(f) < 60 and mutate != 2 else bytes(f)))
    out.append(("net", bytes(rng.getrandbits(8) for _ in range(rng.randint(14, 100)))))
    return out


def port_sock(iface: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    s.bind((iface, 0))
    s.setblocking(False)
    return s


def read_all(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            frame, anc, _, _ = sock.recvmsg(65535, socket.CMSG_SPACE(20))
        except BlockingIOError:
            return out
        for level, kind, aux in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and aux[0] & 0x10:
                tpid = aux[18:20][::-1] if aux[18:20] != b"\0\0" else b"\x81\x00"
                frame = frame[:12] + tpid + aux[16:18][::-1] + frame[12:]
        out.append(frame.hex())


def main() -> int:
    kind, seed = sys.argv[1], int(sys.argv[2])
    for a, b in (("h0", "nic-h"), ("nic-n", "n0")):
        proc.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        for i in (a, b):
            tune_iface(i)
    cfg = NicConfig(node="diff", rid="0000", host_ip=HOST, nic_ip=NIC_IP, nic_mac=MAC[NIC_IP],
                    host_mac=MAC[HOST], services=(ServiceConfig("echo", "udp", 5000, message="udp"),
                                                  ServiceConfig("web", "tcp", 7000, message="tcp")),
                    default_backups=((BACKUP, 0),), neighbours={BACKUP: MAC[BACKUP]}, datapath=kind,
                    tune_ifaces=False)
    nic = Nic(cfg, time.monotonic())
    nic.discovery = None
    from testbed.failsafe.failsafe_handler import first_backup
    nic.handler.chooser = first_backup
    dp = open_datapath(kind, nic, nic.to_cpu)
    receivers = dp.receivers()
    ep = select.epoll()
    for fd in receivers:
        ep.register(fd, select.EPOLLIN)
    inject = {"net": port_sock("n0"), "host": port_sock("h0")}
    seen = {"host": inject["host"], "net": inject["net"]}  # frames out of nic-h arrive on h0, nic-n on n0

    def settle() -> list[list[str]]:
        got: list[list[str]] = []
        quiet_until = time.monotonic() + QUIET_S
        while time.monotonic() < quiet_until:
            for fd, _ in ep.poll(0.002):
                receivers[fd]()
                quiet_until = time.monotonic() + QUIET_S
            for port in ("host", "net"):
                for f in read_all(seen[port]):
                    got.append([port, f])
                    quiet_until = time.monotonic() + QUIET_S
        return got

    rng = random.Random(seed)
    results = []
    dp.install()
    for phase in ("normal", "failsafe", "back"):
        if phase != "normal":
            dp.tick(float("inf"))  # as NicLoop does before the control plane changes a mode
            active = phase == "failsafe"
            for sid in ("echo", "web"):
                dp.send(nic.pipeline.set_failsafe(sid, active, time.monotonic()))
            dp.install()
        for i, (port, frame) in enumerate(corpus(rng, phase)):
            inject[port].send(frame)
            results.append({"phase": phase, "i": i, "in": port, "frame": frame.hex(), "out": settle()})
    dp.refresh()
    pc = nic.pipeline.counters
    counters = {"ports": {p: dataclasses.asdict(c) for p, c in pc.ports.items()}, "reasons": dict(sorted(pc.reasons.items())),
                "services": {k: dataclasses.asdict(v) for k, v in sorted(pc.services.items())},
                "handler": dataclasses.asdict(nic.handler.stats), "pending": nic.handler.pending_count,
                "conns": len(nic.handler.conntrack), "neighbours": sorted(k.hex() for k in nic.pipeline.neighbours)}
    name = dp.name
    punted = getattr(dp, "punted", None)
    dp.close()
    print(json.dumps({"datapath": name, "frames": results, "counters": counters, "punted": punted}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
