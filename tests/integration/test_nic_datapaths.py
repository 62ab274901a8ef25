"""Differential test: the same seeded frame corpus through the Python and the BPF data path, byte for byte.

Each data path runs in a namespace of its own (tests/integration/scripts/nic_diff.py): normal,
fail-safe and normal-again phases of critical UDP and TCP, replies, backup replies to NAT ports,
non-critical traffic, ping and ARP for the NIC, VLAN-tagged, IPv6, malformed and fragmented frames,
and a TCP connection carried to the backup at the failover (tcp_carry).
Every frame each path sent out of each port, and the counters at the end, must be identical. Then a
BPF object that cannot load: `auto` falls back to Python, `bpf` is a clear error.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

import pytest

from testbed import proc

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).with_name("scripts") / "nic_diff.py"
SEEDS = [int(s) for s in os.environ.get("NIC_DIFF_SEEDS", "1,2").split(",")]


def run_in_netns(*args: str) -> proc.Result:
    ns = f"tbdiff{secrets.token_hex(3)}"
    proc.run(["ip", "netns", "add", ns])
    try:
        return proc.run([sys.executable, str(SCRIPT), *args], netns=ns, check=False, timeout=300)
    finally:
        proc.run(["ip", "netns", "del", ns], check=False)
        assert ns not in proc.run(["ip", "netns", "list"]).stdout


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


@pytest.mark.parametrize("seed", SEEDS)
def test_both_datapaths_give_the_same_frames_and_counters(seed: int) -> None:
    runs = {}
    for kind in ("python", "bpf"):
        res = run_in_netns(kind, str(seed))
        assert res.ok, res.stderr[-3000:]
        runs[kind] = json.loads(res.stdout)
        assert runs[kind]["datapath"] == kind
    py, bpf = runs["python"], runs["bpf"]
    assert len(py["frames"]) == len(bpf["frames"])
    for a, b in zip(py["frames"], bpf["frames"]):
        assert a["frame"] == b["frame"]
        assert sorted(a["out"]) == sorted(b["out"]), f"{a['phase']} #{a['i']} in {a['in']}: {a['frame']}"
    assert py["counters"] == bpf["counters"]
    received = sum(c["rx_packets"] for c in bpf["counters"]["ports"].values())
    assert 0 < bpf["punted"] < received, (bpf["punted"], received)  # the kernel handled some itself
    reasons = py["counters"]["reasons"]
    for must in ("critical", "reply", "to_backup", "from_backup", "vlan", "arp_answered", "fragment", "non_ip",
                 "carry_open", "carry_stale"):
        assert reasons.get(must, 0) > 0, (must, reasons)  # the corpus exercised it
    assert py["counters"]["handler"]["carried"] == 1  # the connection open across the failover (tcp_carry)


def test_a_bpf_object_that_cannot_load_falls_back_under_auto_and_fails_under_bpf(tmp_path: Path) -> None:
    bad = tmp_path / "broken.bpf.o"
    bad.write_bytes(b"\x7fELF not really")
    env_code = ("import sys, time; sys.path.insert(0, %r)\n"
                "from testbed.failsafe.config import NicConfig\n"
                "from testbed.failsafe.nic import Nic, tune_iface\n"
                "from testbed.failsafe.datapath import open_datapath\n"
                "from testbed import proc\n"
                "proc.run(['ip','link','add','nic-h','type','veth','peer','name','nic-n'])\n"
                "cfg = NicConfig(node='x', rid='0000', host_ip='10.9.0.11', nic_ip='10.9.0.111',"
                " nic_mac='02:00:00:00:01:11', datapath=sys.argv[1], bpf_object=%r)\n"
                "nic = Nic(cfg, time.monotonic())\n"
                "try:\n    dp = open_datapath(cfg.datapath, nic, nic.to_cpu)\n"
                "except Exception as exc:\n    print('ERROR', exc); sys.exit(3)\n"
                "print(dp.name, nic.datapath_fallback); dp.close()\n") % (str(SCRIPT.parents[3]), str(bad))
    script = tmp_path / "load.py"
    script.write_text(env_code)
    results = {}
    for kind in ("auto", "bpf"):
        ns = f"tbdiff{secrets.token_hex(3)}"
        proc.run(["ip", "netns", "add", ns])
        try:
            results[kind] = proc.run([sys.executable, str(script), kind], netns=ns, check=False, timeout=60)
            assert "bpf" not in proc.run(["tc", "filter", "show", "dev", "nic-h", "ingress"], netns=ns).stdout
        finally:
            proc.run(["ip", "netns", "del", ns], check=False)
    assert results["auto"].ok and results["auto"].stdout.startswith("python "), results["auto"]
    assert "cannot open" in results["auto"].stdout or "refused" in results["auto"].stdout
    assert results["bpf"].returncode == 3, results["bpf"]
    assert "datapath bpf cannot be used" in results["bpf"].stdout


def test_a_sigkilled_bpf_nic_leaves_nothing_a_restarted_nic_or_the_cleanup_cannot_remove(tmp_path: Path) -> None:
    import signal
    import socket

    from testbed.failsafe.config import RUN_ROOT, NicConfig, ServiceConfig
    from testbed.failsafe.labnet import BACKUP_IP, MAIN_IP, NIC_IP, Lab, in_netns
    from testbed.failsafe.launcher import start_nic
    from testbed.ledger import Ledger

    rid = secrets.token_hex(2)
    ledger = Ledger(rid, run_dir=tmp_path, state_dir=tmp_path / "state")
    lab = Lab(ledger.prefix, ledger, tmp_path)

    def config(datapath: str) -> NicConfig:
        return NicConfig(node="main", rid=rid, host_ip=MAIN_IP, nic_ip=NIC_IP, nic_mac="02:09:00:00:01:11",
                         services=(ServiceConfig("echo", "udp", 5000, message="udp", payload=b"hb"),),
                         default_backups=((BACKUP_IP, 0),), interval_s=0.05, threshold=4.0, min_rtt_s=0.01,
                         control_socket=str(RUN_ROOT / rid / "nic-main.sock"), datapath=datapath)

    def answered() -> bool:
        sock = in_netns(lab.ns["c"], lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        sock.settimeout(0.5)
        try:
            for _ in range(10):
                sock.sendto(b"x", (MAIN_IP, 5000))
                try:
                    if sock.recv(100).endswith(b":x"):
                        return True
                except socket.timeout:
                    continue
            return False
        finally:
            sock.close()

    def attached() -> str:
        return lab.ns_cmd("n", "tc", "filter", "show", "dev", "nic-h", "ingress").stdout

    try:
        lab.build()
        lab.echo("m", "main", [5000], [], tmp_path / "delay-main")
        lab.echo("b", "backup", [5000], [], tmp_path / "delay-backup")
        nic = start_nic(lab.holder(), config("bpf"), ledger, tmp_path)
        assert answered()
        assert "bpf" in attached()
        os.kill(nic.pid, signal.SIGKILL)
        nic.daemon.popen.wait(timeout=5)
        assert "bpf" in attached()  # the program outlives its process: a restarted NIC must remove it
        (RUN_ROOT / rid / "nic-main.sock").unlink(missing_ok=True)
        nic = start_nic(lab.holder(), config("python"), ledger, tmp_path)
        links = lab.ns_cmd("n", "ip", "link").stdout
        assert "bpf" not in attached() and "tbp0" not in links and "tbc0" not in links
        assert answered()
        nic.stop()
    finally:
        lab.destroy()  # what `testbed clean` does with the lab's recorded namespaces
        import shutil

        shutil.rmtree(RUN_ROOT / rid, ignore_errors=True)
    assert lab.leftovers() == []
