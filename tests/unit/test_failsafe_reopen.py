"""A client's new SYN on the ports of a closing fail-safe connection opens a new one (nic_bench's punted rows).

Seen in bench/nic_bench.py: a second NIC process starts its NAT ports at 40000 again, the backup still
holds the first one's connection on that port in TIME-WAIT and answers the new SYN with the old ACK;
the client resets and retransmits its SYN on the same ports. The RST marked the connection closing and
the retransmitted SYN used to continue it, closing for good: the BPF data path keeps closing
connections out of the kernel, so every segment of that bulk transfer went to the Python pipeline.
"""

from __future__ import annotations

from types import SimpleNamespace

from scapy.layers.inet import TCP
from scapy.layers.l2 import Ether

from testbed.failsafe.bpf_datapath import NAT, BpfDatapath
from testbed.failsafe.conntrack import flow_key
from testbed.failsafe.packet import PROTO_TCP, ip_bytes, mac_bytes

from failsafe_frames import BACKUP_MAC, CLIENT, HOST, NIC_MAC, make_pipeline, tcp_segment

KEY = flow_key(PROTO_TCP, ip_bytes(CLIENT), 2222, ip_bytes(HOST), 7000)


def reopened():  # noqa: ANN201 - (pipeline, first NAT port, the retransmitted SYN as sent)
    """SYN, the client's RST (after a backup's stale ACK), the same SYN again, all in fail-safe mode."""
    pipe = make_pipeline()
    pipe.set_failsafe("web", True, 0.0)
    first = Ether(pipe.process(tcp_segment("S", seq=100), "net", 1.0)[0][1])[TCP].sport
    pipe.process(tcp_segment("R", seq=101), "net", 1.01)
    assert pipe.handler.conntrack.get(KEY).closing  # type: ignore[union-attr]
    again = pipe.process(tcp_segment("S", seq=100), "net", 1.02)
    return pipe, first, again


def test_a_syn_on_a_closing_connection_opens_a_new_one_on_a_new_nat_port() -> None:
    pipe, first, again = reopened()
    conn = pipe.handler.conntrack.get(KEY)
    assert conn is not None and not conn.closing
    assert len(again) == 1 and again[0][0] == "net"
    syn = Ether(again[0][1])
    assert syn[TCP].flags == "S" and syn[TCP].sport == conn.nat_port != first  # the stale port is not met again
    assert pipe.handler.conntrack.by_nat(PROTO_TCP, first) is None and len(pipe.handler.conntrack) == 1
    # the connection's data goes on as any other's
    data = pipe.process(tcp_segment("PA", seq=101, ack=1, payload=b"x" * 100), "net", 1.03)
    assert Ether(data[0][1])[TCP].sport == conn.nat_port and not conn.closing


def test_a_syn_on_a_closing_connection_in_normal_mode_goes_to_the_host() -> None:
    pipe, _, _ = reopened()
    pipe.handler.conntrack.get(KEY).closing = True  # type: ignore[union-attr]
    pipe.set_failsafe("web", False, 2.0)
    out = pipe.process(tcp_segment("S", seq=500), "net", 2.1)
    assert out[0][0] == "host"


class FakeMap:
    """A BPF hash map in a dict."""

    def __init__(self) -> None:
        self.d: dict[bytes, bytes] = {}

    def update(self, key: bytes, value: bytes) -> None:
        self.d[bytes(key)] = bytes(value)

    def delete(self, key: bytes) -> None:
        self.d.pop(bytes(key), None)

    def lookup(self, key: bytes) -> bytes | None:
        return self.d.get(bytes(key))


def test_the_kernel_gets_the_reopened_connection_s_rewrite() -> None:
    """After the re-opening SYN, `conns` has the client side's entry with the backup's MAC (no punting)."""
    pipe, _, _ = reopened()
    dp = object.__new__(BpfDatapath)
    dp.nic = SimpleNamespace(handler=pipe.handler, pipeline=pipe, nic_mac=mac_bytes(NIC_MAC))
    dp.m_conns = FakeMap()
    dp._pushed, dp._folded, dp._sidx = {}, {}, {"web": 0}  # noqa: SLF001
    dp._sync_conns(True)  # noqa: SLF001
    raw = dp.m_conns.lookup(BpfDatapath._map_key(KEY))  # noqa: SLF001
    assert raw is not None, "the client's segments would all punt"
    assert NAT.unpack(raw[:NAT.size])[1][:6] == mac_bytes(BACKUP_MAC)
