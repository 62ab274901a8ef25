"""Does the NIC's tc-BPF data path load here and forward a frame? (`testbed doctor`, and `datapath: auto`).

`self_test()` makes a throwaway namespace with two veth pairs (h0 - nic-h, nic-n - n0), runs
`python -m testbed.failsafe.bpf_selftest` inside it (the program, its maps and the punt veth are
per namespace), and removes the namespace. Inside, the BPF data path is attached with a minimal
config; a UDP frame sent into nic-n must come out of nic-h unchanged (forwarded by the kernel) and a
frame to the NIC's own IP must reach the punt veth (and so the pipeline).
"""

from __future__ import annotations

import secrets
import socket
import sys
import time

from testbed import proc
from testbed.errors import CommandError, TestbedError

NIC_IP, HOST_IP, CLIENT_IP = "10.250.0.111", "10.250.0.11", "10.250.0.7"


def self_test(timeout: float = 60.0) -> tuple[bool, str]:
    """(True, what was checked) when the BPF data path loads and forwards; (False, why not) otherwise."""
    ns = f"tbbpf{secrets.token_hex(3)}"
    try:
        proc.run(["ip", "netns", "add", ns])
    except CommandError as exc:
        return False, f"cannot create a network namespace: {exc.stderr.strip()}"
    try:
        from testbed import daemon

        res = proc.run(daemon.module_argv("testbed.failsafe.bpf_selftest"), netns=ns, check=False, timeout=timeout)
        text = (res.stdout + res.stderr).strip().splitlines()
        return res.ok, text[-1] if text else f"self-test exited {res.returncode}"
    finally:
        proc.run(["ip", "netns", "del", ns], check=False)


def _frame(dst_ip: str, dport: int) -> bytes:
    from testbed.failsafe.packet import PROTO_UDP, ip_bytes, ipv4_frame, mac_bytes, udp

    src, dst = ip_bytes(CLIENT_IP), ip_bytes(dst_ip)
    return ipv4_frame(mac_bytes("02:00:00:00:00:02"), mac_bytes("02:00:00:00:00:07"), src, dst, PROTO_UDP,
                      udp(src, dst, 4000, dport, b"self-test"))


def _inside() -> str:
    """The check itself, run inside the throwaway namespace."""
    from testbed.failsafe.bpf_datapath import BpfDatapath
    from testbed.failsafe.config import NicConfig
    from testbed.failsafe.nic import Nic, tune_iface

    for a, b in (("h0", "nic-h"), ("nic-n", "n0")):
        proc.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        for i in (a, b):
            tune_iface(i)
    cfg = NicConfig(node="selftest", rid="0000", host_ip=HOST_IP, nic_ip=NIC_IP, nic_mac="02:00:00:00:01:11",
                    datapath="bpf")
    nic = Nic(cfg, time.monotonic())
    dp = BpfDatapath(nic, lambda frame, now: [])
    try:
        socks = {}
        for name in ("h0", "n0"):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
            s.bind((name, 0))
            s.settimeout(2.0)
            socks[name] = s
        sent = _frame(HOST_IP, 9)
        socks["n0"].send(sent)
        deadline = time.monotonic() + 2.0
        while True:
            if time.monotonic() > deadline:
                raise TestbedError("a forwarded frame never came out of nic-h")
            if socks["h0"].recv(2048) == sent:
                break
        assert dp.punt is not None
        dp.punt.settimeout(2.0)
        socks["n0"].send(_frame(NIC_IP, 9))
        dp.punt.recv(2048)
        dp.refresh()
        fwd = nic.pipeline.counters.ports["net"].rx_packets
        if fwd < 1:
            raise TestbedError("the kernel's counters were not read back")
        return "loads, forwards in the kernel, punts frames for the NIC to userspace, counters read back"
    except (socket.timeout, TimeoutError):
        raise TestbedError("a frame for the NIC never reached the punt veth") from None
    finally:
        dp.close()


def main() -> int:
    """Print the result line; exit 1 on failure."""
    try:
        print(f"BPF data path: {_inside()}")
    except (TestbedError, OSError, CommandError) as exc:
        print(f"BPF data path unavailable: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
