"""Finds out, by trying, what this machine offers and which backend the testbed will use for each."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from testbed import proc
from testbed.errors import CommandError


@dataclass
class Check:
    """One capability: whether it is there, what was found, and how to get it when it is missing."""

    name: str
    ok: bool
    value: str
    required: bool = True
    hint: str = ""


@dataclass
class Report:
    """Everything `testbed doctor` found, and the backends that follow from it."""

    netem: bool
    ovs_datapath: str | None
    link_backend: str
    docker: str | None
    criu: bool
    checkpoint_restore: dict = field(default_factory=dict)  # {ok, reason, checkpoint_s, restore_s}: a real trial
    checks: list[Check] = field(default_factory=list)
    registry: bool = False  # a local image registry (the pull path of image distribution) is installed

    @property
    def ok(self) -> bool:
        """True when no required capability is missing."""
        return all(c.ok for c in self.checks if c.required)

    def to_dict(self) -> dict:
        return asdict(self)


def _scratch_name() -> str:
    return f"tbdoc{secrets.token_hex(3)}"


def probe_netem() -> tuple[bool, str]:
    """Add a netem qdisc to a veth in a throwaway namespace; True if the kernel took it."""
    ns = _scratch_name()
    try:
        proc.run(["ip", "netns", "add", ns])
    except CommandError as exc:
        return False, f"cannot create a network namespace: {exc.stderr}"
    try:
        proc.run(["ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1"], netns=ns)
        res = proc.run(["tc", "qdisc", "add", "dev", "d0", "root", "netem", "delay", "1ms"],
                       netns=ns, check=False)
        if res.ok:
            return True, "sch_netem accepted a qdisc"
        return False, (res.stderr.strip().splitlines() or ["netem refused"])[0]
    finally:
        proc.run(["ip", "netns", "del", ns], check=False)


def probe_ovs() -> tuple[str | None, str]:
    """Add a throwaway bridge with the kernel datapath, else the userspace one; which one worked."""
    res = proc.run(["ovs-vsctl", "--timeout=3", "show"], check=False)
    if not res.ok:
        return None, "Open vSwitch is not running (ovsdb-server/ovs-vswitchd)"
    ver = proc.run(["ovs-vsctl", "--version"], check=False).stdout.split("\n")[0]
    for datapath in ("system", "netdev"):
        br = _scratch_name()
        proc.run(["ovs-vsctl", "--timeout=5", "add-br", br, "--", "set", "bridge", br,
                  f"datapath_type={datapath}"], check=False)
        # ovs-vsctl may succeed while ovs-vswitchd failed to make the datapath: ask for the port.
        port = proc.run(["ovs-vsctl", "--timeout=5", "get", "interface", br, "ofport"], check=False)
        proc.run(["ovs-vsctl", "--timeout=5", "--if-exists", "del-br", br], check=False)
        if port.ok and port.stdout.strip().lstrip("-").isdigit() and int(port.stdout) >= 0:
            return ("kernel" if datapath == "system" else "userspace"), ver
    return None, f"{ver}: neither the kernel nor the userspace datapath accepted a bridge"


def probe_docker() -> tuple[str | None, str]:
    """The Docker engine's version, asked through the SDK the testbed uses."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        version = client.version()
        client.close()
    except Exception as exc:  # the SDK raises many kinds; all mean "no usable engine"
        return None, f"no Docker engine answers: {exc.__class__.__name__}"
    return version.get("Version"), f"engine {version.get('Version')}, API {version.get('ApiVersion')}"


def probe_criu() -> tuple[bool, str]:
    """Whether `criu check` passes (checkpoint/restore for live migration)."""
    if not proc.which("criu"):
        return False, "criu is not installed"
    res = proc.run(["criu", "check"], check=False, timeout=30)
    text = (res.stdout + res.stderr).strip().splitlines()
    return res.ok, (text[-1] if text else f"criu check exited {res.returncode}")


def probe_nic_bpf() -> tuple[bool, str]:
    """Whether the fail-safe NIC's tc-BPF data path builds, loads and passes its self-test (`datapath: auto`)."""
    from testbed.errors import TestbedError
    from testbed.failsafe.bpf.build import ensure_object
    from testbed.failsafe.bpf_selftest import self_test

    if os.geteuid() != 0:
        return False, "not root: cannot try (run with sudo)"
    try:
        ensure_object()
    except TestbedError as exc:
        return False, str(exc)
    return self_test()


def probe_registry() -> tuple[bool, str]:
    """Whether a local image registry (Debian's docker-registry) is installed: the pull path of image distribution."""
    from testbed.replication.registry import probe

    return probe()


def cgroup_version() -> str:
    """1 or 2, from the file system mounted on /sys/fs/cgroup."""
    res = proc.run(["stat", "-f", "-c", "%T", "/sys/fs/cgroup"], check=False)
    return "2" if res.stdout.strip() == "cgroup2fs" else "1"


def _module_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def mininet_version() -> str | None:
    """The installed Mininet's version, or None when it cannot be imported."""
    try:
        from mininet.net import VERSION
    except ImportError:
        return None
    return VERSION


def command_version(name: str, args: list[str]) -> str | None:
    """The first line a command prints about its version, or None when it is missing."""
    if not proc.which(name):
        return None
    res = proc.run([name, *args], check=False)
    text = (res.stdout or res.stderr).strip().splitlines()
    return text[0] if text else "present"


def diagnose() -> Report:
    """Run every probe and choose the backends."""
    if os.geteuid() != 0:
        netem, netem_txt = False, "not root: cannot try (run with sudo)"
        ovs_dp, ovs_txt = None, "not root: cannot try (run with sudo)"
    else:
        netem, netem_txt = probe_netem()
        ovs_dp, ovs_txt = probe_ovs()
    docker_ver, docker_txt = probe_docker()
    criu_ok, criu_txt = probe_criu()
    from testbed.checkpoint import trial

    cr = trial() if docker_ver is not None else None
    mn = mininet_version()
    osken = _module_version("os-ken")
    iperf = command_version("iperf3", ["--version"])
    registry_ok, registry_txt = probe_registry()
    checks = [
        Check("root", os.geteuid() == 0, "yes" if os.geteuid() == 0 else "no", True,
              "run as root: sudo .venv/bin/testbed ..."),
        Check("kernel", True, platform.release(), False),
        Check("netem", netem, netem_txt, False,
              "" if netem else "no sch_netem: links use the userspace emulator (accurate to ~0.3 ms)"),
        Check("ovs", ovs_dp is not None, f"{ovs_txt}; datapath {ovs_dp}", True,
              "apt install openvswitch-switch; scripts/setup.sh services"),
        Check("docker", docker_ver is not None, docker_txt, True,
              "apt install docker.io; scripts/setup.sh services"),
        Check("mininet", mn is not None, mn or "not importable", True,
              "apt install mininet; use .venv (made with --system-site-packages)"),
        Check("os-ken", osken is not None, osken or "not installed", True, "scripts/setup.sh venv"),
        Check("iperf3", iperf is not None, iperf or "missing", True, "apt install iperf3"),
        Check("ethtool", proc.which("ethtool") is not None, "present" if proc.which("ethtool") else "missing",
              True, "apt install ethtool"),
        Check("criu", criu_ok, criu_txt, False,
              "" if criu_ok else "checkpoint/restore (live migration) unavailable"),
        Check("checkpoint/restore", bool(cr and cr.ok), cr.reason if cr else "no Docker engine to try it", False,
              "" if cr and cr.ok else "live migration unavailable: cold and state-transfer migration still run"),
        Check("cgroup", True, cgroup_version(), False),
        Check("nic bpf", *probe_nic_bpf(), False,
              hint="NICs with datapath auto use the Python data path (apt install clang libbpf-dev bpftool)"),
        Check("registry", registry_ok, registry_txt, False,
              hint="image pull path unavailable: apt install docker-registry (save/transfer still runs)"),
    ]
    return Report(
        netem=netem,
        ovs_datapath=ovs_dp,
        link_backend="netem" if netem else "userspace",
        docker=docker_ver,
        criu=criu_ok,
        checkpoint_restore=cr.to_dict() if cr else {"ok": False, "reason": "no Docker engine answers"},
        checks=checks,
        registry=registry_ok,
    )


def diagnose_server(name: str, topology: str | None = None) -> list[Check]:
    """`doctor --server NAME`: ssh, tools, OVS on a server of `topology` (or `[user@]address[:port]`)."""
    from testbed.cluster.preflight import server_checks
    from testbed.cluster.server import Server, parse_destination
    from testbed.errors import UsageError

    if topology is None:
        return server_checks(parse_destination(name))
    from testbed.topology.loader import load_topology

    topo = load_topology(topology)
    try:
        spec = topo.server(name)
    except KeyError:
        known = ", ".join(s.name for s in topo.servers) or "none"
        raise UsageError(f"--server {name!r}: no such server in {topology} (servers: {known})") from None
    return server_checks(Server.of(spec))


def state_file() -> Path:
    """Where the last diagnosis is kept for runs to record in their manifest."""
    return Path(os.environ.get("TESTBED_STATE_DIR", "/var/lib/testbed")) / "doctor.json"
