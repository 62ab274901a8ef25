"""A small namespace lab for the fail-safe NIC (tests and bench), and the echo server its hosts run.

    client ns (c) --- bridge ns (s, Linux bridge) --- NIC ns (n: nic-n | NIC | nic-h) --- main host ns (m)
                                    \\--- backup host ns (b)

With `nic=False` the NIC ns holds a plain Linux bridge between nic-n and nic-h instead (the baseline
of the same path); `relay_plan` then also makes that namespace a Linux relay on the fail-safe path
(client -> bridge -> NIC ns -> bridge again -> backup): forwarded, or DNAT/SNAT as the NIC rewrites.
Every namespace and process is recorded in the ledger before it exists; names start with the
ledger's prefix. `python -m testbed.failsafe.labnet echo NAME ...` is the echo server:
UDP and TCP, it answers each request with b"NAME:" + request, after the delay (seconds) written in
an optional delay file. `... http NAME --port P` is an HTTP/1.1 keep-alive server: every GET
answers b"NAME " + the request's path (for curl reusing one connection across a failover).
`lab_run` is the tests' lab: built, with the NICs it starts (`LabRun.start_nic`), and afterwards
everything stopped and checked gone.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import secrets
import shutil
import logging
import os
import selectors
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from testbed import daemon, proc
from testbed.ledger import RUN_ROOT, Ledger

if TYPE_CHECKING:
    from testbed.failsafe.launcher import NicProcess

log = logging.getLogger(__name__)

SUBNET = "10.9.0"
CLIENT_IP, MAIN_IP, BACKUP_IP, NIC_IP = f"{SUBNET}.7", f"{SUBNET}.11", f"{SUBNET}.12", f"{SUBNET}.111"
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
T = TypeVar("T")


def host_cmds(ns: str, ip: str, mac: str) -> list[list[str]]:
    """Commands that give a lab host's eth0 (in namespace `ns`) its address and bring it up."""
    return [["ip", "-n", ns, "link", "set", "eth0", "address", mac],
            ["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0"],
            ["ip", "-n", ns, "link", "set", "eth0", "up"],
            ["ip", "-n", ns, "link", "set", "lo", "up"],
            ["ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off"]]


@dataclass
class Lab:
    """The lab's names, and what was started in it (to stop exactly that)."""

    prefix: str
    ledger: Ledger
    run_dir: Path
    nic: bool = True
    procs: list[proc.Process] = field(default_factory=list)

    @property
    def ns(self) -> dict[str, str]:
        return {k: f"{self.prefix}{k}" for k in ("c", "s", "n", "m", "b")}

    def plan(self) -> list[list[str]]:
        """The commands that build the lab, as data."""
        p, ns = self.prefix, self.ns
        cmds: list[list[str]] = [["ip", "netns", "add", n] for n in ns.values()]
        links = [("c", "eth0", "s", f"{p}sc"), ("b", "eth0", "s", f"{p}sb"), ("n", "nic-n", "s", f"{p}sn"),
                 ("m", "eth0", "n", "nic-h")]
        for a, an, b, bn in links:
            cmds.append(["ip", "link", "add", an, "netns", ns[a], "type", "veth", "peer", "name", bn,
                         "netns", ns[b]])
        cmds.append(["ip", "-n", ns["s"], "link", "add", "br0", "type", "bridge", "stp_state", "0",
                     "forward_delay", "0"])
        for port in (f"{p}sc", f"{p}sb", f"{p}sn"):
            cmds.append(["ip", "-n", ns["s"], "link", "set", port, "master", "br0", "up"])
        cmds.append(["ip", "-n", ns["s"], "link", "set", "br0", "up"])
        if not self.nic:
            cmds.append(["ip", "-n", ns["n"], "link", "add", "br0", "type", "bridge", "stp_state", "0",
                         "forward_delay", "0"])
            for port in ("nic-n", "nic-h"):
                cmds.append(["ip", "-n", ns["n"], "link", "set", port, "master", "br0", "up"])
            cmds.append(["ip", "-n", ns["n"], "link", "set", "br0", "up"])
        for key, ip, mac in (("c", CLIENT_IP, "02:09:00:00:00:07"), ("m", MAIN_IP, "02:09:00:00:00:11"),
                             ("b", BACKUP_IP, "02:09:00:00:00:12")):
            cmds += host_cmds(ns[key], ip, mac)
        cmds += [["ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]
                 for n in ns.values()]
        return cmds

    def relay_plan(self) -> list[list[str]]:
        """Commands that make a bridge lab's NIC ns the kernel's relay on the fail-safe path, as data.

        The client reaches the backup through the NIC ns by routing, and the main host's address there
        by DNAT to the backup with SNAT to the NIC's address (what fail-safe mode does to a request).
        """
        assert not self.nic, "a relay needs the bridge lab"
        ns, via = self.ns, ["via", NIC_IP]
        ipt = ["ip", "netns", "exec", ns["n"], "iptables", "-w", "-t", "nat", "-A"]
        return [["ip", "-n", ns["n"], "addr", "add", f"{NIC_IP}/24", "dev", "br0"],
                ["ip", "netns", "exec", ns["n"], "sysctl", "-qw", "net.ipv4.ip_forward=1",
                 "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.br0.send_redirects=0"],
                # routed, not bridged, through netfilter (Docker loads br_netfilter, whose bridge-level
                # DNAT drops the hairpinned frames); -e: the key is absent without br_netfilter
                ["ip", "netns", "exec", ns["n"], "sysctl", "-qw", "-e", "net.bridge.bridge-nf-call-iptables=0"],
                ["ip", "-n", ns["c"], "route", "add", f"{BACKUP_IP}/32", *via],
                ["ip", "-n", ns["c"], "route", "add", f"{MAIN_IP}/32", *via],
                ["ip", "-n", ns["b"], "route", "add", f"{CLIENT_IP}/32", *via],
                ipt + ["PREROUTING", "-d", MAIN_IP, "-j", "DNAT", "--to-destination", BACKUP_IP],
                ipt + ["POSTROUTING", "-m", "conntrack", "--ctstate", "DNAT", "-j", "SNAT", "--to-source", NIC_IP]]

    def build(self) -> None:
        """Create the namespaces and links."""
        for n in self.ns.values():
            self.ledger.record("netns", n, what="fail-safe NIC lab")
        for cmd in self.plan():
            proc.run(cmd, timeout=15)

    def spawn(self, ns_key: str, args: list[str], what: str, log_name: str | None = None) -> proc.Process:
        """Start `args` in lab namespace `ns_key`, recorded in the ledger before it runs."""
        popen = proc.spawn(daemon.in_netns(args, netns=self.ns[ns_key]),
                           output=self.run_dir / log_name if log_name else None, env=daemon.repo_env(),
                           on_start=lambda pid: self.ledger.record_process(pid, what=what))
        self.procs.append(popen)
        return popen

    def echo(self, ns_key: str, name: str, udp: list[int], tcp: list[int], delay_file: Path) -> proc.Process:
        """Start the echo server in `ns_key` and wait until it listens."""
        args = [sys.executable, "-m", "testbed.failsafe.labnet", "echo", name, "--delay-file", str(delay_file)]
        args += [a for port in udp for a in ("--udp", str(port))] + [a for port in tcp for a in ("--tcp", str(port))]
        return self._ready(self.spawn(ns_key, args, f"echo server {name}", f"echo-{name}.log"), f"echo-{name}.log")

    def http(self, ns_key: str, name: str, port: int) -> proc.Process:
        """Start the keep-alive HTTP server in `ns_key` and wait until it listens."""
        args = [sys.executable, "-m", "testbed.failsafe.labnet", "http", name, "--port", str(port)]
        return self._ready(self.spawn(ns_key, args, f"http server {name}", f"http-{name}.log"), f"http-{name}.log")

    def _ready(self, popen: proc.Process, log_name: str) -> proc.Process:
        """Wait until the server logging to `log_name` says it listens."""
        ready = self.run_dir / log_name
        deadline = time.monotonic() + 10
        while b"listening" not in (ready.read_bytes() if ready.exists() else b""):
            if popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{log_name}: server did not start: {ready.read_text(errors='replace')}")
            time.sleep(0.05)
        return popen

    def holder(self) -> int:
        """A process sitting in the NIC namespace (once it is in there), whose PID `start_nic` enters."""
        return daemon.entered_netns(self.spawn("n", ["sleep", "3600"], "NIC netns holder").pid, self.ns["n"])

    def destroy(self) -> None:
        """Stop the lab's processes and delete its namespaces (which removes its links)."""
        for popen in self.procs:
            proc.stop(popen, 5.0)
        for n in self.ns.values():
            proc.run(["ip", "netns", "del", n], check=False)

    def leftovers(self) -> list[str]:
        """Lab namespaces that still exist (should be none after destroy)."""
        have = proc.run(["ip", "netns", "list"]).stdout.split()
        return [n for n in self.ns.values() if n in have]

    def ns_cmd(self, ns_key: str, *args: str, check: bool = True) -> proc.Result:
        """Run a command in lab namespace `ns_key`."""
        return proc.run(list(args), netns=self.ns[ns_key], check=check)

    def set_link(self, ns_key: str, ifname: str, up: bool) -> float:
        """Set `ifname` in lab namespace `ns_key` up or down by ioctl; the monotonic time just before the change.

        A fault timed at microseconds, where `ip link set` costs a process start (~2.5 ms here) before it acts.
        """
        def flip() -> float:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                req = struct.pack("16sH22x", ifname.encode(), 0)
                flags = struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, req))[1]
                flags = flags | IFF_UP if up else flags & ~IFF_UP
                at = time.monotonic()
                fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", ifname.encode(), flags))
                return at
        return in_netns(self.ns[ns_key], flip)


@dataclass
class PeerLab(Lab):
    """A lab with several hosts on one bridge, some behind a NIC of their own (for discovery between NICs).

        client ns (c) --- bridge ns (s) --- NIC ns (n<k>: nic-n | NIC | nic-h) --- host ns (<k>)   for k with a NIC
                                        \\--- host ns (<k>)                                         for k without

    `hosts` maps a one-letter key to (IP, MAC, has_nic); each host's eth0 gets that address.
    """

    hosts: dict[str, tuple[str, str, bool]] = field(default_factory=dict)

    @property
    def ns(self) -> dict[str, str]:
        keys = ["c", "s"] + [k for k in self.hosts] + [f"n{k}" for k, (_, _, nic) in self.hosts.items() if nic]
        return {k: f"{self.prefix}{k}" for k in keys}

    def plan(self) -> list[list[str]]:
        """The commands that build the lab, as data."""
        p, ns = self.prefix, self.ns
        cmds: list[list[str]] = [["ip", "netns", "add", n] for n in ns.values()]
        links = [("c", "eth0", "s", f"{p}sc")]
        for k, (_, _, nic) in self.hosts.items():
            if nic:
                links += [(f"n{k}", "nic-n", "s", f"{p}s{k}"), (k, "eth0", f"n{k}", "nic-h")]
            else:
                links.append((k, "eth0", "s", f"{p}s{k}"))
        for a, an, b, bn in links:
            cmds.append(["ip", "link", "add", an, "netns", ns[a], "type", "veth", "peer", "name", bn,
                         "netns", ns[b]])
        cmds.append(["ip", "-n", ns["s"], "link", "add", "br0", "type", "bridge", "stp_state", "0",
                     "forward_delay", "0"])
        for _, _, b, bn in links:
            if b == "s":
                cmds.append(["ip", "-n", ns["s"], "link", "set", bn, "master", "br0", "up"])
        cmds.append(["ip", "-n", ns["s"], "link", "set", "br0", "up"])
        addrs = [("c", CLIENT_IP, "02:09:00:00:00:07")] + [(k, ip, mac) for k, (ip, mac, _) in self.hosts.items()]
        for key, ip, mac in addrs:
            cmds += host_cmds(ns[key], ip, mac)
        cmds += [["ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]
                 for n in ns.values()]
        return cmds

    def nic_holder(self, key: str) -> int:
        """A process sitting in the namespace of host `key`'s NIC, whose PID `start_nic` enters."""
        return self.spawn(f"n{key}", ["sleep", "3600"], f"NIC netns holder {key}").pid


@dataclass
class LabRun:
    """A lab with a run id and ledger, and the NICs started in it (see `lab_run`)."""

    rid: str
    ledger: Ledger
    lab: Lab
    tmp: Path
    nics: list["NicProcess"] = field(default_factory=list)

    def start_nic(self, **options: Any) -> "NicProcess":
        """The NIC in front of the main host, backed by the backup host; `options` override NicConfig's fields."""
        from testbed.failsafe.config import NicConfig
        from testbed.failsafe.launcher import start_nic

        base: dict[str, Any] = dict(node="main", rid=self.rid, host_ip=MAIN_IP, nic_ip=NIC_IP,
                                    nic_mac="02:09:00:00:01:11", default_backups=((BACKUP_IP, 0),),
                                    control_socket=str(RUN_ROOT / self.rid / "nic-main.sock"),
                                    events_path=str(self.tmp / "events.jsonl"))
        nic = start_nic(self.lab.holder(), NicConfig(**{**base, **options}), self.ledger, self.tmp)
        self.nics.append(nic)
        return nic


@contextlib.contextmanager
def lab_run(tmp: Path) -> Iterator[LabRun]:
    """A built lab for a test; afterwards its NICs stopped (no traceback in their logs), lab gone, nothing left."""
    rid = secrets.token_hex(2)
    ledger = Ledger(rid, run_dir=tmp, state_dir=tmp / "state")
    run = LabRun(rid, ledger, Lab(ledger.prefix, ledger, tmp), tmp)
    try:
        run.lab.build()
        yield run
    finally:
        logs = []
        for nic in run.nics:
            nic.stop()
            logs.append((tmp / f"nic-{nic.config.node}.log").read_text(errors="replace"))
        run.lab.destroy()
        shutil.rmtree(RUN_ROOT / rid, ignore_errors=True)
        for log_text in logs:
            assert "Traceback" not in log_text, log_text[-3000:]
        assert run.lab.leftovers() == []


def in_netns(ns: str, make: Callable[[], T]) -> T:
    """Call `make` on a thread that joined network namespace `ns` (sockets it creates stay in `ns`)."""
    result: list[object] = []

    def work() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                result.append(OSError(ctypes.get_errno(), f"setns {ns} failed"))
                return
            result.append(make())
        except Exception as exc:  # noqa: BLE001 - re-raised in the caller
            result.append(exc)
        finally:
            os.close(fd)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if isinstance(result[0], Exception):
        raise result[0]
    return result[0]  # type: ignore[return-value]


# --- the echo server -----------------------------------------------------------------------------

def _delay(path: Path | None) -> float:
    if path is None:
        return 0.0
    try:
        return float(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0.0


def echo_main(name: str, udp_ports: list[int], tcp_ports: list[int], delay_file: Path | None) -> None:
    """Serve UDP and TCP echo with b"NAME:" prefixed, forever."""
    tag = name.encode() + b":"
    sel = selectors.DefaultSelector()
    for port in udp_ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        sel.register(s, selectors.EVENT_READ, "udp")
    for port in tcp_ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(64)
        sel.register(s, selectors.EVENT_READ, "listen")
    print("listening", flush=True)
    while True:
        for key, _ in sel.select():
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            if key.data == "listen":
                conn, _ = sock.accept()
                sel.register(conn, selectors.EVENT_READ, "tcp")
                continue
            delay = _delay(delay_file)
            if key.data == "udp":
                data, peer = sock.recvfrom(65535)
                if delay:
                    time.sleep(delay)
                try:
                    sock.sendto(tag + data, peer)
                except OSError:  # e.g. its link just went down (a failover test): the request is lost, the server stays
                    pass
            else:
                try:
                    data = sock.recv(65535)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(sock)
                    sock.close()
                    continue
                if delay:
                    time.sleep(delay)
                try:
                    sock.sendall(tag + data)
                except OSError:
                    pass


def http_main(name: str, port: int) -> None:
    """Serve HTTP/1.1 with keep-alive: each GET answers b"NAME " + its path, forever."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = f"{name} {self.path}".encode()  # the whole response in one segment
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print("listening", flush=True)
    server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    """Command line of the lab's helper processes."""
    parser = argparse.ArgumentParser(prog="python -m testbed.failsafe.labnet")
    sub = parser.add_subparsers(dest="cmd", required=True)
    echo = sub.add_parser("echo", help="UDP/TCP echo server that tags replies with its name")
    echo.add_argument("name")
    echo.add_argument("--udp", type=int, action="append", default=[])
    echo.add_argument("--tcp", type=int, action="append", default=[])
    echo.add_argument("--delay-file", type=Path)
    web = sub.add_parser("http", help="HTTP/1.1 keep-alive server whose GETs answer its name and the path")
    web.add_argument("name")
    web.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    if args.cmd == "http":
        http_main(args.name, args.port)
        return 0
    echo_main(args.name, args.udp, args.tcp, args.delay_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
