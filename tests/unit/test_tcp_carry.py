"""TCP connections carried over a failover (testbed/failsafe/tcp_carry.py) through the pipeline, without root."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from testbed.failsafe.packet import PROTO_TCP, ip_bytes
from testbed.failsafe.tcp_carry import TcpCarry, seq_diff, tcp_options

from failsafe_frames import BACKUP, BACKUP_MAC, CLIENT, CLIENT_MAC, HOST, HOST_MAC, NIC, NIC_MAC, make_pipeline

CLIENT_OPTS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]


def seg(flags: str, seq: int, ack: int = 0, payload: bytes = b"", src: str = CLIENT, dst: str = HOST,
        sport: int = 2222, dport: int = 7000, src_mac: str = CLIENT_MAC, dst_mac: str = HOST_MAC,
        options: list | None = None, window: int = 502) -> bytes:
    return bytes(Ether(src=src_mac, dst=dst_mac) / IP(src=src, dst=dst) /
                 TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=window,
                     options=options or []) / payload)


def host_seg(flags: str, seq: int, ack: int, payload: bytes = b"", options: list | None = None) -> bytes:
    return seg(flags, seq, ack, payload, src=HOST, dst=CLIENT, sport=7000, dport=2222, src_mac=HOST_MAC,
               dst_mac=CLIENT_MAC, options=options)


def valid(frame: bytes) -> TCP:
    """The frame's TCP layer, after checking both checksums against scapy's own computation."""
    pkt = Ether(frame)
    again = Ether(frame)
    del again[IP].chksum
    del again[TCP].chksum
    again = Ether(bytes(again))
    assert pkt[IP].chksum == again[IP].chksum and pkt[TCP].chksum == again[TCP].chksum
    return pkt[TCP]


def carrying_pipeline(max_bytes: int = 65536):
    pipe = make_pipeline()
    pipe.carry = TcpCarry(pipe.handler.stats, max_bytes=max_bytes)
    return pipe


def open_connection(pipe, t: float = 1.0) -> None:
    """Handshake, one answered request and one the host never answers ("req2\\n", at 1006)."""
    for frame, port in ((seg("S", 1000, options=CLIENT_OPTS), "net"),
                        (host_seg("SA", 5000, 1001, options=[("MSS", 1460), ("WScale", 7)]), "host"),
                        (seg("A", 1001, 5001), "net"), (seg("PA", 1001, 5001, b"req1\n"), "net"),
                        (host_seg("PA", 5001, 1006, b"req1\n"), "host"), (seg("PA", 1006, 5006, b"req2\n"), "net")):
        out = pipe.process(frame, port, t)
        assert out == [("host" if port == "net" else "net", frame)]


def failover(pipe, t: float = 2.0) -> tuple[bytes, TCP]:
    out = pipe.set_failsafe("web", True, t)
    assert len(out) == 1 and out[0][0] == "net"
    frame = out[0][1]
    pkt = Ether(frame)
    assert pkt.dst == BACKUP_MAC and pkt[IP].src == NIC and pkt[IP].dst == BACKUP
    return frame, valid(frame)


def test_established_connection_continues_on_the_backup() -> None:
    pipe = carrying_pipeline()
    open_connection(pipe)
    _, syn = failover(pipe)
    assert syn.flags == "S" and syn.seq == 1005 and syn.dport == 7000  # the first unacknowledged byte - 1
    opts = dict(syn.options)
    assert opts["MSS"] == 1460 and opts["WScale"] == 7 and "SAckOK" not in opts and "Timestamp" not in opts
    nat = syn.sport
    # the client retransmits while the backup has not answered: held (its bytes are kept)
    assert pipe.process(seg("PA", 1006, 5006, b"req2\n"), "net", 2.1) == []
    # the backup's SYN-ACK is answered by the NIC, which re-sends the client's unacknowledged bytes
    synack = seg("SA", 9000, 1006, src=BACKUP, dst=NIC, sport=7000, dport=nat, src_mac=BACKUP_MAC, dst_mac=NIC_MAC,
                 options=[("MSS", 1460), ("WScale", 7)])
    out = pipe.process(synack, "net", 2.2)
    assert [p for p, _ in out] == ["net"]
    data = valid(out[0][1])
    assert (data.seq, data.ack, bytes(data.payload)) == (1006, 9001, b"req2\n")
    assert Ether(out[0][1]).dst == BACKUP_MAC
    assert pipe.handler.stats.carried == 1 and pipe.handler.stats.carry_failed == 0
    # the backup's answer reaches the client from the service, in the host's sequence space
    reply = seg("PA", 9001, 1011, b"req2\n", src=BACKUP, dst=NIC, sport=7000, dport=nat, src_mac=BACKUP_MAC,
                dst_mac=NIC_MAC)
    out = pipe.process(reply, "net", 2.3)
    assert len(out) == 1
    pkt = Ether(out[0][1])
    back = valid(out[0][1])
    assert (pkt[IP].src, pkt[IP].dst, back.sport, back.dport) == (HOST, CLIENT, 7000, 2222)
    assert (back.seq, back.ack, bytes(back.payload)) == (5006, 1011, b"req2\n")
    # the client's next request goes to the backup with its acknowledgement shifted
    out = pipe.process(seg("PA", 1011, 5011, b"req3\n"), "net", 2.4)
    fwd = valid(out[0][1])
    assert (Ether(out[0][1])[IP].dst, fwd.seq, fwd.ack) == (BACKUP, 1011, 9006)
    # the host's own segments on it (a late retransmission) would corrupt it: dropped
    assert pipe.process(host_seg("PA", 5006, 1011, b"main:req2\n"), "host", 2.5) == []
    assert pipe.counters.reasons["carry_stale"] == 1
    # after the host is back, the carried connection stays on the backup
    pipe.set_failsafe("web", False, 3.0)
    out = pipe.process(seg("A", 1016, 5016), "net", 3.1)
    assert Ether(out[0][1])[IP].dst == BACKUP and valid(out[0][1]).ack == 9011


def test_backup_refusing_resets_the_client_and_counts() -> None:
    pipe = carrying_pipeline()
    open_connection(pipe)
    _, syn = failover(pipe)
    rst = seg("RA", 0, 1006, src=BACKUP, dst=NIC, sport=7000, dport=syn.sport, src_mac=BACKUP_MAC, dst_mac=NIC_MAC)
    out = pipe.process(rst, "net", 2.2)
    assert len(out) == 1
    pkt = Ether(out[0][1])
    r = valid(out[0][1])
    assert (pkt[IP].src, pkt[IP].dst, r.flags, r.seq) == (HOST, CLIENT, "RA", 5006)
    assert pipe.handler.stats.carry_failed == 1 and pipe.handler.stats.carried == 0
    assert len(pipe.handler.conntrack) == 0


def test_backup_silent_resets_the_client_after_the_bound() -> None:
    pipe = carrying_pipeline()
    open_connection(pipe)
    failover(pipe, t=2.0)
    assert pipe.carry_timeouts(2.5) == []
    out = pipe.carry_timeouts(3.1)
    assert len(out) == 1 and valid(out[0][1]).flags == "RA"
    assert pipe.handler.stats.carry_failed == 1 and len(pipe.handler.conntrack) == 0 and not pipe.carry.carried


def test_unacknowledged_bytes_beyond_the_bound_go_to_the_backup_as_before_and_count() -> None:
    pipe = carrying_pipeline(max_bytes=8)
    open_connection(pipe)
    pipe.process(seg("PA", 1011, 5006, b"0123456789"), "net", 1.5)
    assert pipe.carry.bulk and not pipe.carry.streams  # a bulk transfer: no longer followed
    assert pipe.set_failsafe("web", True, 2.0) == []
    assert pipe.handler.stats.carry_failed == 1
    out = pipe.process(seg("PA", 1021, 5006, b"more"), "net", 2.1)
    assert Ether(out[0][1])[IP].dst == BACKUP and valid(out[0][1]).seq == 1021  # which will reset it


def test_a_gap_in_what_the_nic_saw_resets_at_failover() -> None:
    pipe = carrying_pipeline()
    open_connection(pipe)
    pipe.process(seg("PA", 1020, 5006, b"later"), "net", 1.5)  # 1011..1020 never seen
    out = pipe.set_failsafe("web", True, 2.0)
    assert len(out) == 1 and Ether(out[0][1])[IP].dst == CLIENT
    r = valid(out[0][1])
    assert (r.flags, r.seq) == ("RA", 5006) and pipe.handler.stats.carry_failed == 1


def test_a_request_the_host_acknowledged_but_never_answered_is_resent() -> None:
    pipe = carrying_pipeline()
    open_connection(pipe)
    assert pipe.process(host_seg("A", 5006, 1011), "host", 1.5) == [("net", host_seg("A", 5006, 1011))]
    _, syn = failover(pipe)
    assert syn.seq == 1005  # "req2\n" at 1006 is still kept: only the host's answers count


def test_without_carry_the_connection_is_redirected_as_before() -> None:
    pipe = make_pipeline()
    open_connection(pipe)
    assert pipe.set_failsafe("web", True, 2.0) == []
    out = pipe.process(seg("PA", 1006, 5006, b"req2\n"), "net", 2.1)
    t = valid(out[0][1])
    assert t.flags == "PA" and t.seq == 1006  # the backup, knowing no such connection, will answer RST


def test_window_rescaled_when_the_backup_scales_differently() -> None:
    pipe = carrying_pipeline()
    open_connection(pipe)
    _, syn = failover(pipe)
    pipe.process(seg("SA", 9000, 1006, src=BACKUP, dst=NIC, sport=7000, dport=syn.sport, src_mac=BACKUP_MAC,
                     dst_mac=NIC_MAC, options=[("WScale", 5)]), "net", 2.2)
    reply = bytes(Ether(src=BACKUP_MAC, dst=NIC_MAC) / IP(src=BACKUP, dst=NIC) /
                  TCP(sport=7000, dport=syn.sport, flags="A", seq=9001, ack=1011, window=1024))
    out = pipe.process(reply, "net", 2.3)
    assert valid(out[0][1]).window == (1024 << 5) >> 7


def test_stream_follows_acks_gaps_and_overflow() -> None:
    pipe = make_pipeline()
    carry = TcpCarry(pipe.handler.stats, max_bytes=10)
    key = bytes([PROTO_TCP]) + ip_bytes(CLIENT) + ip_bytes(HOST) + (2222).to_bytes(2, "big") + (7000).to_bytes(2, "big")

    def client(frame: bytes) -> None:
        carry.client_segment(key, frame, 34, len(frame), "web", 1.0)

    def host(frame: bytes) -> None:
        carry.host_segment(key, frame, 34, len(frame), 1.0)

    client(seg("S", 0xFFFFFFF0, options=CLIENT_OPTS))
    host(host_seg("SA", 7, 0xFFFFFFF1))
    s = carry.streams[key]
    client(seg("PA", 0xFFFFFFF1, 8, b"abcdefgh"))  # across the wrap of sequence space
    client(seg("PA", 0xFFFFFFF5, 8, b"efgh"))  # a retransmission adds nothing
    assert bytes(s.data) == b"abcdefgh" and s.end == 0xFFFFFFF9
    host(host_seg("A", 8, 0xFFFFFFF9))  # a pure ACK does not count
    assert bytes(s.data) == b"abcdefgh"
    host(host_seg("PA", 8, 0xFFFFFFF5, b"r"))
    assert bytes(s.data) == b"efgh" and s.una == 0xFFFFFFF5
    client(seg("PA", 0x10, 8, b"zz"))  # a gap: not carriable until everything is acknowledged
    assert s.broken == "gap" and not s.data
    host(host_seg("PA", 9, 0x12, b"r"))
    assert s.broken == "" and s.una == 0x12
    host(host_seg("FA", 10, 0x12))
    assert key not in carry.streams  # a closing connection is not carried
    client(seg("S", 0x100, options=CLIENT_OPTS))  # the same ports again: a new connection
    host(host_seg("SA", 50, 0x101))
    host(host_seg("PA", 51, 0x101, b"x" * 11))  # the host sends more than the bound unasked: a bulk transfer
    assert key not in carry.streams and key in carry.bulk
    client(seg("S", 0x200, options=CLIENT_OPTS))
    assert key in carry.streams and key not in carry.bulk
    host(host_seg("SA", 60, 0x201))
    host(host_seg("PA", 61, 0x201, b"x" * 11))
    host(host_seg("FA", 72, 0x201))  # a bulk transfer that ended: forgotten, no carry failure at failover
    assert key not in carry.bulk and carry.start("web") == ([], []) and carry.stats.carry_failed == 0
    client(seg("S", 0x300, options=CLIENT_OPTS))
    host(host_seg("SA", 80, 0x301))
    host(host_seg("PA", 81, 0x301, b"x" * 11))
    client(seg("FA", 0x301, 92))
    assert key not in carry.bulk
    assert seq_diff(1, 0xFFFFFFFF) == 2 and seq_diff(0xFFFFFFFF, 1) == -2


def test_tcp_options_stop_at_malformed() -> None:
    frame = seg("S", 1, options=[("MSS", 1400), ("WScale", 3)])
    assert tcp_options(frame, 34) == {2: (1400).to_bytes(2, "big"), 3: b"\x03"}
    bad = bytearray(frame)
    bad[34 + 20 + 1] = 0  # MSS length 0
    assert tcp_options(bytes(bad), 34) == {}
