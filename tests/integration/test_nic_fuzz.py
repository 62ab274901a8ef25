"""Fuzzes a running fail-safe NIC with thousands of malformed frames from both sides, then checks it still works.

It also fills the NIC's connection table with one-shot flows from spoofed clients (early drop keeps a
failover serving new flows).

Namespaces made here (all named with the run's prefix, all removed by the fixture):
    host  (eth0 10.77.0.11, UDP echo on 5000 answering "H:"+data)
      | veth eth0 <-> nic-h
    nic   (the NIC process, between nic-h and nic-n)
      | veth nic-n <-> w-nic
    wire  (Linux bridge br0 = the client 10.77.0.100, ports w-nic and w-bak)
      | veth w-bak <-> eth0
    backup (eth0 10.77.0.12, UDP echo on 5000 answering "B:"+data)
Frames are injected with AF_PACKET sockets opened inside the namespaces (setns in a helper thread)
on the host's eth0 (towards nic-h) and on the wire's w-nic (towards nic-n). The seed is printed;
set FUZZ_SEED to replay a run.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

from testbed import ledger as ledger_mod
from testbed import proc
from testbed.testing import entered_netns
from testbed import errors
from testbed.failsafe import control
from testbed.failsafe.config import NicConfig, ServiceConfig
from testbed.failsafe.launcher import NicProcess, start_nic
from testbed.ledger import Ledger

pytestmark = [pytest.mark.integration, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]
scapy_all = pytest.importorskip("scapy.all")
from scapy.all import ARP, ICMP, IP, TCP, UDP, Dot1Q, Ether, IPv6, Raw  # noqa: E402

HOST_IP, BACKUP_IP, CLIENT_IP, NIC_IP = "10.77.0.11", "10.77.0.12", "10.77.0.100", "10.77.0.111"
HOST_MAC, BACKUP_MAC, CLIENT_MAC, NIC_MAC = "02:fa:00:00:00:11", "02:fa:00:00:00:12", "02:fa:00:00:00:64", "02:fa:00:00:00:6f"
PORT = 5000
FRAMES = int(os.environ.get("FUZZ_FRAMES", "5000"))
CONNS = 256  # the NIC's connection table, small so that the fuzz can fill it

ECHO = (
    "import socket,sys\n"
    "tag=sys.argv[1].encode()\n"
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
    "s.bind(('0.0.0.0',int(sys.argv[2])))\n"
    "while True:\n"
    "    d,a=s.recvfrom(65535)\n"
    "    try:\n"
    "        s.sendto(tag+d,a)\n"
    "    except OSError:\n"
    "        pass\n"
)

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def in_netns(ns: str, make: Callable[[], socket.socket]) -> socket.socket:
    """A socket created inside network namespace `ns` (by a thread that enters it and then ends)."""
    box: dict[str, object] = {}

    def work() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            finally:
                os.close(fd)
            box["sock"] = make()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["sock"]  # type: ignore[return-value]


def packet_socket(ns: str, iface: str) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        s.bind((iface, 0))
        return s
    return in_netns(ns, make)


def udp_socket(ns: str) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((CLIENT_IP, 0))
        s.settimeout(0.3)
        return s
    return in_netns(ns, make)


@dataclass
class Bed:
    """The four namespaces, the echo servers and the NIC of one test."""

    tmp: Path
    rid: str = field(default_factory=lambda: secrets.token_hex(2))
    namespaces: list[str] = field(default_factory=list)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    nic: NicProcess | None = None
    ledger: Ledger | None = None
    datapath: str = "python"

    def ns(self, role: str) -> str:
        return f"{ledger_mod.prefix(self.rid)}fz{role}"

    def up(self) -> None:
        self.ledger = Ledger(self.rid, self.tmp, state_dir=self.tmp / "state")
        for role in ("h", "n", "w", "b"):
            self.ledger.record("netns", self.ns(role))
            proc.run(["ip", "netns", "add", self.ns(role)])
            self.namespaces.append(self.ns(role))
            proc.run(["ip", "link", "set", "lo", "up"], netns=self.ns(role))
        h, n, w, b = (self.ns(r) for r in "hnwb")
        # veths are made inside the namespaces: nothing appears in the root namespace
        proc.run(["ip", "-n", n, "link", "add", "nic-h", "type", "veth", "peer", "name", "eth0", "netns", h])
        proc.run(["ip", "-n", n, "link", "add", "nic-n", "type", "veth", "peer", "name", "w-nic", "netns", w])
        proc.run(["ip", "-n", w, "link", "add", "w-bak", "type", "veth", "peer", "name", "eth0", "netns", b])
        proc.run(["ip", "-n", w, "link", "add", "br0", "address", CLIENT_MAC, "type", "bridge"])
        for port in ("w-nic", "w-bak"):
            proc.run(["ip", "-n", w, "link", "set", port, "master", "br0", "up"])
        for ns, iface, ip, mac in ((h, "eth0", HOST_IP, HOST_MAC), (b, "eth0", BACKUP_IP, BACKUP_MAC),
                                   (w, "br0", CLIENT_IP, CLIENT_MAC)):
            proc.run(["ip", "link", "set", iface, "address", mac], netns=ns)
            proc.run(["ip", "addr", "add", f"{ip}/24", "dev", iface], netns=ns)
            proc.run(["ip", "link", "set", iface, "up"], netns=ns)
            proc.run(["ethtool", "-K", iface, "tx", "off"], netns=ns, check=False)
        for role, ns in (("host", h), ("backup", b)):
            self.spawn(role, ns, [sys.executable, "-c", ECHO, role[0].upper() + ":", str(PORT)])

    def spawn(self, name: str, ns: str, argv: list[str]) -> None:
        p = proc.spawn(["ip", "netns", "exec", ns, *argv], output=self.tmp / f"{name}.log")
        assert self.ledger is not None
        self.ledger.record_process(p.pid, what=f"fuzz test {name}")
        self.procs[name] = p

    def holder_pid(self) -> int:
        """A process in the NIC's namespace, for the launcher's nsenter."""
        self.spawn("nic-holder", self.ns("n"), ["sleep", "3600"])
        return entered_netns(self.procs["nic-holder"].pid, self.ns("n"))

    def start_nic(self) -> NicProcess:
        config = NicConfig(
            node=f"fz{self.rid}", rid=self.rid, host_ip=HOST_IP, nic_ip=NIC_IP, nic_mac=NIC_MAC, host_mac=HOST_MAC,
            services=(ServiceConfig("echo", "udp", PORT, message="udp", payload=b"hb",
                                    backups=((BACKUP_IP, PORT),)),),
            default_backups=((BACKUP_IP, 0),),
            # generous timing: the machine is shared, and this test is about robustness, not speed
            interval_s=0.05, threshold=5.0, min_rtt_s=0.02, learn=5, hysteresis=3, conntrack_max=CONNS,
            control_socket=str(control.RUN_ROOT / self.rid / f"nic-fz{self.rid}.sock"),
            events_path=str(self.tmp / "events.jsonl"), datapath=self.datapath)
        assert self.ledger is not None
        self.ledger.record("file", str(control.RUN_ROOT / self.rid), what="control socket directory")
        self.nic = start_nic(self.holder_pid(), config, self.ledger, self.tmp)
        return self.nic

    def down(self) -> None:
        errors = []
        if self.nic is not None:
            self.nic.stop()
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGCONT)
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(5)
                except (ProcessLookupError, subprocess.TimeoutExpired) as exc:
                    errors.append(repr(exc))
                    p.kill()
        for ns in self.namespaces:
            res = proc.run(["ip", "netns", "del", ns], check=False)
            if not res.ok:
                errors.append(res.stderr)
        sock_dir = control.RUN_ROOT / self.rid
        if sock_dir.is_dir():
            for f in sock_dir.iterdir():
                f.unlink()
            sock_dir.rmdir()
        assert not errors, errors


@pytest.fixture(params=["python", "bpf"])
def bed(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Bed]:
    b = Bed(tmp_path, datapath=request.param)
    try:
        b.up()
        b.start_nic()
        yield b
    finally:
        b.down()
        left = [n for n in os.listdir("/run/netns") if n.startswith(ledger_mod.prefix(b.rid))] \
            if os.path.isdir("/run/netns") else []
        assert not left, f"left behind: {left}"
        assert not (control.RUN_ROOT / b.rid).exists()
        assert all(p.poll() is not None for p in b.procs.values())


# -- frame generators ----------------------------------------------------------------------------
def rand_mac(rng: random.Random) -> str:
    return "06:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(5))  # never one of ours


def stranger_ip(rng: random.Random) -> str:
    return f"10.99.{rng.randrange(256)}.{rng.randrange(1, 255)}"  # outside the test's /24


def fuzz_frames(rng: random.Random, side: str, n: int) -> list[bytes]:
    """`n` malformed or unusual frames to inject from `side` ("host" or "net")."""
    toward = NIC_MAC if rng.random() < 0.2 else (HOST_MAC if side == "net" else CLIENT_MAC)
    dst_ip = HOST_IP if side == "net" else CLIENT_IP

    def valid() -> bytes:
        src = stranger_ip(rng)
        choice = rng.randrange(6)
        if choice == 0:
            l4 = UDP(sport=rng.randrange(1024, 65536), dport=PORT) / Raw(rng.randbytes(rng.randrange(0, 300)))
        elif choice == 1:
            l4 = TCP(sport=rng.randrange(1024, 65536), dport=PORT, flags=rng.randrange(256), seq=rng.randrange(2**32))
        elif choice == 2:
            l4 = ICMP(type=rng.choice([0, 3, 8, 11, 13, rng.randrange(256)]), id=rng.randrange(65536),
                      seq=rng.randrange(65536)) / Raw(rng.randbytes(rng.randrange(0, 64)))
        elif choice == 3:  # to the NIC itself: discovery port, NAT ports, heartbeat ports
            port = rng.choice([7946, rng.randrange(33000, 34000), rng.randrange(40000, 65536), rng.randrange(65536)])
            return bytes(Ether(dst=NIC_MAC, src=rand_mac(rng)) / IP(src=src, dst=NIC_IP) /
                         UDP(sport=rng.randrange(65536), dport=port) / Raw(rng.randbytes(rng.randrange(0, 200))))
        elif choice == 4:
            l4 = UDP(sport=rng.randrange(65536), dport=rng.randrange(65536)) / Raw(b"x" * rng.randrange(0, 1400))
        else:
            l4 = IP(proto=rng.randrange(256)) / Raw(rng.randbytes(rng.randrange(0, 100)))  # IP in IP, etc.
        return bytes(Ether(dst=toward, src=rand_mac(rng)) / IP(src=src, dst=dst_ip, ttl=rng.randrange(256)) / l4)

    def mutate(frame: bytes) -> bytes:
        data = bytearray(frame)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(14, len(data)) if len(data) > 14 else 0
            data[i] = rng.randrange(256)
        return bytes(data)

    kinds: list[Callable[[], bytes]] = [
        lambda: rng.randbytes(rng.randrange(0, 80)),  # garbage, runts
        lambda: bytes(Ether(dst=toward, src=rand_mac(rng), type=rng.randrange(0x600, 0x10000))) + rng.randbytes(rng.randrange(0, 200)),
        lambda: valid()[: rng.randrange(14, 60)],  # truncated headers
        lambda: _set_ihl(valid(), rng.choice([0, 1, 4, 6, 15])),
        lambda: _set_total_length(valid(), rng.choice([0, 19, 20, 21, 28, 1500, 65535, rng.randrange(65536)])),
        lambda: _fragment(valid(), rng),
        lambda: bytes(Ether(dst=toward, src=rand_mac(rng)) / Dot1Q(vlan=rng.randrange(4096)) /
                      IP(src=stranger_ip(rng), dst=dst_ip) / UDP(dport=PORT) / Raw(b"vlan")),
        lambda: bytes(Ether(dst=toward, src=rand_mac(rng)) / Dot1Q(vlan=1) / Dot1Q(vlan=2) /
                      IP(src=stranger_ip(rng), dst=dst_ip) / UDP(dport=PORT)),
        lambda: bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=rand_mac(rng)) /
                      ARP(op=rng.choice([1, 2, rng.randrange(65536)]), hwsrc=rand_mac(rng), psrc=stranger_ip(rng),
                          pdst=rng.choice([NIC_IP, HOST_IP, BACKUP_IP, stranger_ip(rng)]))),
        lambda: bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=rand_mac(rng), type=0x0806)) + rng.randbytes(rng.randrange(0, 40)),
        lambda: bytes(Ether(dst=toward, src=rand_mac(rng)) / IPv6() / UDP(dport=PORT)),
        lambda: bytes(Ether(dst="01:80:c2:00:00:0e", src=rand_mac(rng), type=0x88CC)) + rng.randbytes(40),  # LLDP
        lambda: valid() + rng.randbytes(rng.randrange(1, 9000)),  # oversized (most cannot even be sent)
        lambda: mutate(valid()),
        lambda: mutate(bytes(Ether(dst=HOST_MAC if side == "net" else CLIENT_MAC, src=rand_mac(rng)) /
                             IP(src=stranger_ip(rng), dst=dst_ip) / UDP(sport=40000, dport=PORT) / Raw(b"critical"))),
        valid,
    ]
    return [rng.choice(kinds)() for _ in range(n)]


def _set_ihl(frame: bytes, ihl: int) -> bytes:
    data = bytearray(frame)
    data[14] = 0x40 | ihl
    return bytes(data)


def _set_total_length(frame: bytes, length: int) -> bytes:
    data = bytearray(frame)
    data[16:18] = struct.pack("!H", length)
    return bytes(data)


def _fragment(frame: bytes, rng: random.Random) -> bytes:
    data = bytearray(frame)
    flags_off = rng.choice([0x2000, 0x2000 | rng.randrange(1, 0x1FFF), rng.randrange(1, 0x1FFF), 0x4000 | 5])
    data[20:22] = struct.pack("!H", flags_off)
    return bytes(data)


def inject(sock: socket.socket, frames: list[bytes]) -> tuple[int, int]:
    """Send the frames (pausing now and then so the NIC is not merely flooded); (sent, refused by the kernel)."""
    sent = refused = 0
    for i, frame in enumerate(frames):
        try:
            sock.send(frame)
            sent += 1
        except OSError:
            refused += 1  # runts, oversized frames: the kernel will not send them
        if i % 100 == 99:
            time.sleep(0.005)
    return sent, refused


# -- checks ---------------------------------------------------------------------------------------
def ask(client: socket.socket, text: bytes, tries: int = 20) -> tuple[bytes, str] | None:
    """Send `text` to the host's echo service and return (reply, source address) or None."""
    for _ in range(tries):
        client.sendto(text, (HOST_IP, PORT))
        try:
            while True:
                data, addr = client.recvfrom(65535)
                if data.endswith(text):
                    return data, addr[0]
        except socket.timeout:
            continue
    return None


def served_by(client: socket.socket, text: bytes) -> str | None:
    """"H" or "B" - who answered a request to the host's service (the reply must come from the host's IP)."""
    got = ask(client, text)
    if got is None:
        return None
    data, src = got
    assert src == HOST_IP, f"reply from {src}, not from the service address {HOST_IP}"
    return data[:1].decode()


def wait_for(what: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.05)
    return what()


def cli(bed: Bed, *argv: str) -> subprocess.CompletedProcess:
    assert bed.nic is not None
    return subprocess.run([sys.executable, "-m", "testbed.cli", "failsafe", bed.nic.config.node, "--run", bed.rid,
                           *argv], capture_output=True, text=True, timeout=30, cwd=Path(__file__).parents[2])


def test_nic_survives_fuzzing_and_still_fails_over(bed: Bed) -> None:
    seed = int(os.environ.get("FUZZ_SEED", secrets.randbits(32)))
    print(f"fuzz seed {seed} (replay with FUZZ_SEED={seed})")
    rng = random.Random(seed)
    assert bed.nic is not None
    sock = bed.nic.socket
    client = udp_socket(bed.ns("w"))
    from_host = packet_socket(bed.ns("h"), "eth0")
    from_net = packet_socket(bed.ns("w"), "w-nic")
    try:
        # baseline: the host serves, and the NIC has learned the service's RTT
        assert served_by(client, b"before") == "H"
        assert wait_for(lambda: control.call(sock, "heartbeat_show")["echo"]["mode"] == "normal", 10)

        # round 1, normal mode: half the frames, from both sides
        half = FRAMES // 2
        stats = [inject(from_net, fuzz_frames(rng, "net", half // 2)),
                 inject(from_host, fuzz_frames(rng, "host", half - half // 2))]
        assert bed.nic.alive(), f"NIC died during fuzz round 1 (seed {seed}); log {bed.nic.log_path}"
        # a flood of requests to the service may rightly make its heartbeat time out (fail-safe on);
        # once the flood is over it must recover by itself, and the host must serve again
        assert wait_for(lambda: control.call(sock, "heartbeat_show")["echo"]["mode"] == "normal", 10)
        assert wait_for(lambda: served_by(client, b"after-round-1") == "H", 5)

        # round 2, forced fail-safe (through the CLI): the NAT path is exercised by the fuzz too
        done = cli(bed, "mode", "echo", "on")
        assert done.returncode == 0, done.stderr
        assert served_by(client, b"forced") == "B"
        stats += [inject(from_net, fuzz_frames(rng, "net", (FRAMES - half) // 2)),
                  inject(from_host, fuzz_frames(rng, "host", FRAMES - half - (FRAMES - half) // 2))]
        assert bed.nic.alive(), f"NIC died during fuzz round 2 (seed {seed}); log {bed.nic.log_path}"
        print("frames sent/refused per round and side:", stats)
        assert sum(s for s, _ in stats) > FRAMES * 0.8
        assert served_by(client, b"forced-after-fuzz") == "B"

        # round 3, still in fail-safe: one-shot requests from thousands of spoofed clients fill the
        # connection table; unassured entries are dropped early, so a new flow still gets the backup
        flood = [bytes(Ether(dst=HOST_MAC, src=rand_mac(rng)) / IP(src=stranger_ip(rng), dst=HOST_IP) /
                       UDP(sport=rng.randrange(1024, 65536), dport=PORT) / Raw(b"fill")) for _ in range(CONNS * 4)]
        inject(from_net, flood)
        assert bed.nic.alive(), f"NIC died filling its connection table (seed {seed}); log {bed.nic.log_path}"
        assert wait_for(lambda: control.call(sock, "failover")["conntrack_early_drop"] >= CONNS, 5), \
            control.call(sock, "failover")
        assert control.call(sock, "show")["conntrack"] <= CONNS
        fresh = udp_socket(bed.ns("w"))  # a new source port: a flow the table has never seen
        try:
            assert served_by(fresh, b"new-flow-after-fill") == "B"
        finally:
            fresh.close()
        print("failover counters after filling the table:", control.call(sock, "failover"))

        # back to detection: normal traffic reaches the host again
        done = cli(bed, "mode", "echo", "auto")
        assert done.returncode == 0, done.stderr
        assert wait_for(lambda: served_by(client, b"auto") == "H", 5)
        ping = proc.run(["ping", "-n", "-q", "-c", "3", "-i", "0.1", "-W", "1", HOST_IP], netns=bed.ns("w"), check=False)
        assert ping.ok, ping.stdout + ping.stderr

        # the host's service hangs: the heartbeat times out and fail-safe takes over by itself
        os.killpg(bed.procs["host"].pid, signal.SIGSTOP)
        assert wait_for(lambda: control.call(sock, "heartbeat_show")["echo"]["mode"] == "failsafe", 10)
        assert served_by(client, b"host-hung") == "B"
        os.killpg(bed.procs["host"].pid, signal.SIGCONT)
        assert wait_for(lambda: control.call(sock, "heartbeat_show")["echo"]["mode"] == "normal", 10)
        assert wait_for(lambda: served_by(client, b"recovered") == "H", 5)

        events = control.call(sock, "events")
        reasons = [(e["target"], e["active"], e["reason"]) for e in events]
        assert any(t == "echo" and a and r.startswith("timeout") for t, a, r in reasons), reasons
        counters = cli(bed, "--json", "counters")
        assert counters.returncode == 0, counters.stderr
        assert json.loads(counters.stdout)["services"]["echo"]["packets"] > 0
        for argv in (["show"], ["counters"], ["heartbeat_show"], ["table_dump", "target"],
                     ["table_dump", "service"], ["events"]):  # the readable output works on real answers
            done = cli(bed, *argv)
            assert done.returncode == 0 and done.stdout.strip(), (argv, done.stderr)
            print(f"$ testbed failsafe NODE {' '.join(argv)}\n{done.stdout}")
        bad = cli(bed, "table_add", "target", "set_service", "10.77.0.11", "udp", "6000", "=>")
        assert bad.returncode == 1 and "set_service takes one parameter" in bad.stderr, bad.stderr
        assert bed.nic.alive()
    except (AssertionError, errors.TestbedError):
        events = bed.tmp / "events.jsonl"
        print("events:\n" + (events.read_text() if events.exists() else "(none)"))
        print(f"fuzz seed {seed}; NIC log tail:\n" + (bed.nic.log_path.read_text(errors="replace")[-3000:]
                                                     if bed.nic.log_path.exists() else "(none)"))
        raise
    finally:
        for s in (client, from_host, from_net):
            s.close()
