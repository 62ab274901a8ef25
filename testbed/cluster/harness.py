"""A second server on this machine, for tests: an sshd (and its own Open vSwitch) in a network namespace of ours.

The namespace `tb<id>sv` is joined to the root namespace by a veth pair with a /30 from 10.255.0.0/16
(traffic stays on this machine); host and client keys are made per run in a temporary directory,
so the server accepts only this run's key and the client trusts only this server's key. With
`ovs`, the namespace gets its own ovsdb-server and ovs-vswitchd (userspace datapath, sockets in the
temporary directory; sshd sets OVS_RUNDIR for its sessions so `ovs-vsctl` there finds them), as a
real second machine would have: one ovs-vswitchd serves only the namespace it runs in. Every part
is written in the ledger before it exists; `stop` removes them all and `leftovers` says what is not gone.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from testbed import proc
from testbed.cluster.server import Server
from testbed.errors import TestbedError
from testbed.ledger import LABEL, Ledger, prefix

log = logging.getLogger(__name__)

SSHD = "/usr/sbin/sshd"
OVS_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start without its privilege separation directory


#: Namespace servers one run can have (`start(index=...)`): each gets its own /30.
MAX_SERVERS = 4


def addresses(rid: str, index: int = 0) -> tuple[str, str]:
    """The root-side and server-side addresses of run `rid`'s `index`-th server's veth pair: a /30 inside 10.255.0.0/16."""
    if not 0 <= index < MAX_SERVERS:
        raise TestbedError(f"namespace server index {index}: 0..{MAX_SERVERS - 1}")
    n = (int(rid, 16) * MAX_SERVERS + index) % 16384
    third, fourth = n // 64, (n % 64) * 4
    return f"10.255.{third}.{fourth + 1}", f"10.255.{third}.{fourth + 2}"


def sshd_config(tmp: Path, listen: str, ovs_rundir: Path | None) -> str:
    """The server's sshd_config: key login as root only, tunnels allowed (Cluster Edition's SSH links)."""
    lines = [
        "Port 22", f"ListenAddress {listen}", f"HostKey {tmp / 'host_key'}", f"PidFile {tmp / 'sshd.pid'}",
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "PermitTunnel yes", "UseDNS no", "X11Forwarding no", "AllowAgentForwarding no", "MaxSessions 100",
        "MaxStartups 100:30:200",
    ]
    if ovs_rundir is not None:
        lines.append(f"SetEnv OVS_RUNDIR={ovs_rundir}")
    return "\n".join(lines) + "\n"


@dataclass
class NamespaceServer:
    """A running namespace server: how to reach it (`server`), and the parts to remove."""

    server: Server
    netns: str
    veth: str
    tmp: Path
    ledger: Ledger
    processes: list = field(default_factory=list)  # proc.Process handles: sshd, ovsdb-server, ovs-vswitchd
    made_privsep: bool = False

    @property
    def ovs_rundir(self) -> Path:
        return self.tmp / "ovs"

    def stop(self) -> None:
        """Stop its processes, remove the namespace, the veth and the keys."""
        for p in reversed(self.processes):
            proc.stop(p, timeout=5.0)
        self.processes.clear()
        proc.run(["ip", "netns", "del", self.netns], check=False)
        proc.run(["ip", "link", "del", self.veth], check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.made_privsep:
            try:
                PRIVSEP_DIR.rmdir()
            except OSError:
                pass

    def leftovers(self) -> list[str]:
        """What of this server is still there (empty after `stop`)."""
        left = []
        if Path(f"/run/netns/{self.netns}").exists():
            left.append(f"netns {self.netns}")
        if Path(f"/sys/class/net/{self.veth}").exists():
            left.append(f"interface {self.veth}")
        if self.tmp.exists():
            left.append(f"directory {self.tmp}")
        left += [f"process {p.pid}" for p in self.processes if p.poll() is None]
        return left

    def run_leftovers(self, rid: str) -> list[str]:
        """What of run `rid` is on this server, asked through its door: bridges, interfaces, namespaces, containers."""
        pre = prefix(rid)
        out = self.server.run(["sh", "-c", "ovs-vsctl list-br; ip -o link show | cut -d: -f2; ip netns list; "
                               f"docker ps -a --format '{{{{.Names}}}}' --filter label={LABEL}={rid}"]).stdout
        return [name for name in out.split() if name.startswith(pre) or name.startswith("tap")]


def _wait_for(path: Path, text: str, p: proc.Process, timeout: float, what: str) -> None:
    """Until `text` appears in log `path` (evidence the process is ready); TestbedError if `p` dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if p.poll() is not None:
            raise TestbedError(f"{what} exited {p.returncode}: {path.read_text(errors='replace')[-300:]}")
        time.sleep(0.02)
    raise TestbedError(f"{what} not ready after {timeout:g} s: {path.read_text(errors='replace')[-300:]}")


def _keys(tmp: Path, listen: str) -> None:
    """A host key and a client key for this run; the client's is authorised, the host's is trusted."""
    for name in ("host_key", "client_key"):
        proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"testbed {name}", "-f", str(tmp / name)])
    shutil.copy(tmp / "client_key.pub", tmp / "authorized_keys")
    host_pub = (tmp / "host_key.pub").read_text().split()
    (tmp / "known_hosts").write_text(f"{listen} {host_pub[0]} {host_pub[1]}\n")


def _start_ovs(ns: NamespaceServer) -> None:
    """An ovsdb-server (anywhere: a unix socket) and an ovs-vswitchd inside the namespace, both ours."""
    run = ns.ovs_rundir
    run.mkdir()
    db = run / "conf.db"
    proc.run(["ovsdb-tool", "create", str(db), str(OVS_SCHEMA)])
    sock = f"unix:{run / 'db.sock'}"
    ovsdb = proc.spawn(["ovsdb-server", str(db), f"--remote=p{sock}", f"--unixctl={run / 'ovsdb-server.ctl'}",
                        f"--log-file={run / 'ovsdb-server.log'}", "-vfile:info"], output=run / "ovsdb.out",
                       on_start=lambda pid: ns.ledger.record_process(pid, f"ovsdb-server of {ns.server.name}"))
    ns.processes.append(ovsdb)
    _wait_for(run / "ovsdb-server.log", "ovsdb-server (Open vSwitch)", ovsdb, 10, "ovsdb-server")
    proc.run(["ovs-vsctl", f"--db={sock}", "--no-wait", "init"], timeout=10)
    vswitchd = proc.spawn(["ip", "netns", "exec", ns.netns, "ovs-vswitchd", sock,
                           f"--unixctl={run / 'ovs-vswitchd.ctl'}", f"--log-file={run / 'ovs-vswitchd.log'}",
                           "-vfile:info"], output=run / "vswitchd.out", env={**os.environ, "OVS_RUNDIR": str(run)},
                          on_start=lambda pid: ns.ledger.record_process(pid, f"ovs-vswitchd of {ns.server.name}"))
    ns.processes.append(vswitchd)
    _wait_for(run / "ovs-vswitchd.log", "bridge|INFO|ovs-vswitchd (Open vSwitch)", vswitchd, 15, "ovs-vswitchd")


def start(book: Ledger, name: str = "nsb", *, ovs: bool = False, index: int = 0) -> NamespaceServer:
    """Start server `name` in namespace `tb<id>sv` (`tb<id>sv<index>` for a further one) of `book`'s run;
    ready (ssh answers) when this returns."""
    if not os.path.exists(SSHD):
        raise TestbedError(f"{SSHD} is missing: apt-get install openssh-server (its service need not run)")
    root_ip, server_ip = addresses(book.rid, index)
    tag = "sv" if index == 0 else f"s{index}"
    netns, veth, peer = f"{book.prefix}{tag}", f"{book.prefix}{tag}0", f"{book.prefix}{tag}1"
    tmp = Path(tempfile.mkdtemp(prefix=f"{book.prefix}srv-"))
    book.record("file", str(tmp))
    made = not PRIVSEP_DIR.exists()
    ns = NamespaceServer(Server(name, server_ip, "root", str(tmp / "client_key"), 22, str(tmp / "known_hosts")),
                         netns, veth, tmp, book, made_privsep=made)
    try:
        if made:
            PRIVSEP_DIR.mkdir(mode=0o755)
        _keys(tmp, server_ip)
        book.record("netns", netns)
        proc.run(["ip", "netns", "add", netns])
        book.record("interface", veth)
        proc.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", peer])
        proc.run(["ip", "link", "set", peer, "netns", netns])
        proc.run(["ip", "addr", "add", f"{root_ip}/30", "dev", veth])
        proc.run(["ip", "link", "set", veth, "up"])
        for args in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{server_ip}/30", "dev", peer],
                     ["ip", "link", "set", peer, "up"]):
            proc.run(args, netns=netns)
        if ovs:
            _start_ovs(ns)
        (tmp / "sshd_config").write_text(sshd_config(tmp, server_ip, ns.ovs_rundir if ovs else None))
        sshd = proc.spawn(["ip", "netns", "exec", netns, SSHD, "-D", "-e", "-f", str(tmp / "sshd_config")],
                          output=tmp / "sshd.log", on_start=lambda pid: book.record_process(pid, f"sshd of {name}"))
        ns.processes.append(sshd)
        _wait_for(tmp / "sshd.log", "Server listening on", sshd, 10, "sshd")
        ns.server.run(["true"], timeout=10)  # the evidence: a BatchMode login with this run's keys
    except BaseException:
        ns.stop()
        raise
    log.info("namespace server %s up at %s (netns %s)", name, server_ip, netns)
    return ns


def join(a: NamespaceServer, b: NamespaceServer) -> None:
    """Let two namespace servers reach each other at their own addresses (as two machines on one network):
    a veth between their namespaces, a /32 route each way, no address of its own; removed with the namespaces."""
    ends = (f"{a.netns}x", f"{b.netns}x")
    proc.run(["ip", "link", "add", ends[0], "netns", a.netns, "type", "veth", "peer", "name", ends[1],
              "netns", b.netns])
    for ns, end, me, other in ((a, ends[0], a, b), (b, ends[1], b, a)):
        proc.run(["ip", "link", "set", end, "up"], netns=ns.netns)
        proc.run(["ip", "route", "add", f"{other.server.address}/32", "dev", end, "src", str(me.server.address)],
                 netns=ns.netns)
    a.server.run(["python3", "-c", "import socket, sys; socket.create_connection((sys.argv[1], 22), 5).close()",
                  str(b.server.address)], timeout=15)  # the evidence: a's namespace reaches b's sshd
