"""Shared frame builders for the fail-safe NIC unit tests (addresses of a small MEC site)."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from testbed.failsafe.classifier import Classifier
from testbed.failsafe.conntrack import ConnTrack
from testbed.failsafe.failsafe_handler import FailsafeHandler
from testbed.failsafe.packet import PROTO_TCP, PROTO_UDP, ip_bytes, mac_bytes
from testbed.failsafe.pipeline import Pipeline
from testbed.failsafe.service_table import ServiceTable

CLIENT, CLIENT_MAC = "10.0.0.7", "02:00:00:00:00:07"
HOST, HOST_MAC = "10.0.0.11", "02:00:00:00:00:11"
BACKUP, BACKUP_MAC = "10.0.0.12", "02:00:00:00:00:12"
NIC, NIC_MAC = "10.0.0.111", "02:00:00:00:01:11"


def udp_request(sport: int = 1111, dport: int = 5000, payload: bytes = b"ping", dst: str = HOST,
                src: str = CLIENT, src_mac: str = CLIENT_MAC, dst_mac: str = HOST_MAC) -> bytes:
    return bytes(Ether(src=src_mac, dst=dst_mac) / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload)


def udp_reply(sport: int = 5000, dport: int = 1111, payload: bytes = b"pong", src: str = HOST,
              dst: str = CLIENT, src_mac: str = HOST_MAC, dst_mac: str = CLIENT_MAC) -> bytes:
    return bytes(Ether(src=src_mac, dst=dst_mac) / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload)


def tcp_segment(flags: str, sport: int = 2222, dport: int = 7000, src: str = CLIENT, dst: str = HOST,
                src_mac: str = CLIENT_MAC, dst_mac: str = HOST_MAC, seq: int = 100, ack: int = 0,
                payload: bytes = b"") -> bytes:
    return bytes(Ether(src=src_mac, dst=dst_mac) / IP(src=src, dst=dst) /
                 TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack) / payload)


def arp_reply(src: str, src_mac: str, dst: str = NIC, dst_mac: str = NIC_MAC) -> bytes:
    return bytes(Ether(src=src_mac, dst=dst_mac) / ARP(op=2, psrc=src, hwsrc=src_mac, pdst=dst, hwdst=dst_mac))


def arp_request(src: str, src_mac: str, target: str) -> bytes:
    return bytes(Ether(src=src_mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, psrc=src, hwsrc=src_mac, pdst=target))


def make_pipeline(backups: tuple[tuple[str, int], ...] = ((BACKUP, 0),), know_backup: bool = True,
                  chooser=None) -> Pipeline:
    """A pipeline protecting udp/5000 ("echo") and tcp/7000 ("web") on HOST, backed up by BACKUP."""
    cls = Classifier()
    cls.add("echo", HOST, PROTO_UDP, 5000)
    cls.add("web", HOST, PROTO_TCP, 7000)
    services = ServiceTable(default=backups)
    kwargs = {"chooser": chooser} if chooser else {}
    handler = FailsafeHandler(ip_bytes(NIC), mac_bytes(NIC_MAC), services, ConnTrack(), **kwargs)
    neigh = {ip_bytes(BACKUP): mac_bytes(BACKUP_MAC)} if know_backup else {}
    return Pipeline(ip_bytes(NIC), mac_bytes(NIC_MAC), ip_bytes(HOST), mac_bytes(HOST_MAC), cls, handler, neigh)
