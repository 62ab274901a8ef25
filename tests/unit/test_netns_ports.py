"""Readiness from outside a namespace: /proc/PID/net tables read for the ports a service should listen on."""

from __future__ import annotations

import os
import socket

import pytest

from testbed.emulation import netns


def test_parse_port_reads_docker_notation() -> None:
    assert netns.parse_port("7000/udp") == ("udp", 7000)
    assert netns.parse_port("80") == ("tcp", 80)
    assert netns.parse_port("8080/tcp") == ("tcp", 8080)


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_listening_sees_a_socket_of_this_process_and_not_a_closed_port(proto: str) -> None:
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        if proto == "tcp":
            assert not netns.listening(os.getpid(), proto, port)  # bound, not listening yet
            s.listen()
        assert netns.listening(os.getpid(), proto, port)
    assert not netns.listening(os.getpid(), proto, port)


def test_wait_ports_returns_only_the_keys_still_not_listening() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, socket.socket() as closed:
        s.bind(("127.0.0.1", 0))
        closed.bind(("127.0.0.1", 0))  # bound TCP, never listening
        me = os.getpid()
        late = netns.wait_ports({"up": (me, [("udp", s.getsockname()[1])]),
                                 "down": (me, [("tcp", closed.getsockname()[1])]),
                                 "nothing": (me, [])}, timeout=0.1)
    assert late == ["down"]
