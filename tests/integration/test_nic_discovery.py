"""Neighbour discovery between live NICs: announcements exchanged, failed backups skipped, flows spread evenly.

Hosts a and b each sit behind a NIC of their own; x is a plain backup host without a NIC. a's
services: echo (udp 5000, backups b:5000 and x:5000) and alt (udp 5001, backups b:5001 and x:5001;
b's NIC does not protect 5001, so only b's host-level "ip:*" key speaks for it). b's service: echo
(udp 5000, backup x:5000). b's NIC does not list a at all (no backup symmetry, no configured peer):
it learns a's NIC from a's announcements and answers with its own, so a still knows b's state.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from testbed.failsafe.config import RUN_ROOT, NicConfig, ServiceConfig
from testbed.failsafe.control import call
from testbed.failsafe.labnet import CLIENT_IP, PeerLab, in_netns
from testbed.failsafe.launcher import NicProcess, start_nic
from testbed.ledger import Ledger

pytestmark = pytest.mark.integration

A_IP, B_IP, X_IP = "10.9.0.11", "10.9.0.12", "10.9.0.13"
A_NIC, B_NIC = "10.9.0.111", "10.9.0.112"
FLOWS = 20


class Env:
    """The running lab: both NICs and the delay files of the hosts' echo servers."""

    def __init__(self, lab: PeerLab, nics: dict[str, NicProcess], delay: dict[str, Path]) -> None:
        self.lab, self.nics, self.delay = lab, nics, delay

    def ask_new_flow(self, port: int, timeout: float = 1.0) -> str | None:
        """One UDP request to host a from a fresh client socket (a new flow); who answered."""
        sock = in_netns(self.lab.ns["c"], lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        try:
            sock.bind((CLIENT_IP, 0))
            payload = secrets.token_hex(4).encode()
            deadline = time.monotonic() + timeout
            for _ in range(3):  # a lost first packet (ARP on a busy machine) is retried on the same flow
                sock.sendto(payload, (A_IP, port))
                sock.settimeout(max(0.01, min(timeout / 3, deadline - time.monotonic())))
                try:
                    while True:
                        name, _, body = sock.recv(2048).partition(b":")
                        if body == payload:
                            return name.decode()
                except socket.timeout:
                    continue
            return None
        finally:
            sock.close()

    def discovery(self, key: str) -> dict:
        return call(self.nics[key].socket, "discovery")  # type: ignore[return-value]

    def peer_view(self, key: str, peer_nic: str) -> dict:
        """What NIC `key` currently believes peer NIC `peer_nic` announced."""
        return self.discovery(key)["peers"][peer_nic]

    def wait(self, check, timeout: float, what: str) -> None:  # noqa: ANN001 - a predicate
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")

    def wait_no_flows(self, key: str) -> None:
        """Wait until NIC `key` has forgotten every redirected flow (short UDP timeout in the config)."""
        self.wait(lambda: not self.discovery(key)["peers"]["_flows"], 5.0, f"NIC {key} to forget its flows")

    def modes(self, key: str) -> dict[str, str]:
        return {k: v["mode"] for k, v in call(self.nics[key].socket, "heartbeat_show").items()}  # type: ignore[union-attr]


def nic_config(rid: str, tmp: Path, key: str) -> NicConfig:
    """NIC a (echo and alt, backed by b and x; peer: b's NIC) or NIC b (echo, backed by x; no peers)."""
    if key == "a":
        services = (ServiceConfig("echo", "udp", 5000, message="udp", payload=b"hb", backups=((B_IP, 0), (X_IP, 0))),
                    ServiceConfig("alt", "udp", 5001, message="udp", payload=b"hb", backups=((B_IP, 0), (X_IP, 0))))
        host, nic, mac, peers = A_IP, A_NIC, "02:09:00:00:01:11", (B_NIC,)
    else:
        services = (ServiceConfig("echo", "udp", 5000, message="udp", payload=b"hb", backups=((X_IP, 0),)),)
        host, nic, mac, peers = B_IP, B_NIC, "02:09:00:00:01:12", ()
    return NicConfig(node=f"host{key}", rid=rid, host_ip=host, nic_ip=nic, nic_mac=mac, services=services,
                     interval_s=0.05, threshold=4.0, learn=5, hysteresis=3, min_rtt_s=0.02, peers=peers,
                     udp_timeout_s=1.0, control_socket=str(RUN_ROOT / rid / f"nic-{key}.sock"),
                     events_path=str(tmp / f"events-{key}.jsonl"))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    tmp = tmp_path_factory.mktemp("nicdisc")
    rid = secrets.token_hex(2)
    ledger = Ledger(rid, run_dir=tmp, state_dir=tmp / "state")
    lab = PeerLab(ledger.prefix, ledger, tmp, hosts={"a": (A_IP, "02:09:00:00:00:11", True),
                                                     "b": (B_IP, "02:09:00:00:00:12", True),
                                                     "x": (X_IP, "02:09:00:00:00:13", False)})
    nics: dict[str, NicProcess] = {}
    try:
        lab.build()
        delay = {k: tmp / f"delay-{k}" for k in ("a", "b", "x")}
        for k, d in delay.items():
            d.write_text("0")
            lab.echo(k, k, [5000, 5001], [], d)
        for k in ("a", "b"):
            nics[k] = start_nic(lab.nic_holder(k), nic_config(rid, tmp, k), ledger, tmp)
        e = Env(lab, nics, delay)
        for k in ("a", "b"):
            e.wait(lambda k=k: set(e.modes(k).values()) == {"normal"}, 10, f"NIC {k} heartbeats learnt")
        e.wait(lambda: e.peer_view("a", B_NIC)["alive"] and e.peer_view("b", A_NIC)["alive"], 5,
               "both NICs to hear each other")
        yield e
    finally:
        for k, nic in nics.items():
            nic.stop()
            log = (tmp / f"nic-host{k}.log")
            text = log.read_text(errors="replace") if log.exists() else ""
            assert "Traceback" not in text, text[-3000:]
        lab.destroy()
        shutil.rmtree(RUN_ROOT / rid, ignore_errors=True)
        assert lab.leftovers() == []


def spread(env: Env, port: int, flows: int = FLOWS) -> Counter:
    """Force a's service on `port` into fail-safe, open `flows` new flows, count who answered each."""
    service = "echo" if port == 5000 else "alt"
    env.wait_no_flows("a")
    call(env.nics["a"].socket, "mode", service=service, mode="on")
    try:
        return Counter(env.ask_new_flow(port) for _ in range(flows))
    finally:
        call(env.nics["a"].socket, "mode", service=service, mode="auto")


def test_nics_announce_services_and_host_to_each_other(env: Env) -> None:
    view = env.peer_view("a", B_NIC)
    assert view["alive"] and view["services"][f"{B_IP}:5000"]["state"] == "normal"
    assert view["services"][f"{B_IP}:*"]["state"] == "normal"
    view = env.peer_view("b", A_NIC)
    assert {f"{A_IP}:5000", f"{A_IP}:5001", f"{A_IP}:*"} <= set(view["services"])


def test_a_backup_nic_that_does_not_list_this_nic_still_tells_it_its_state(env: Env) -> None:
    assert env.peer_view("b", A_NIC)["listener"] is True  # learnt from a's announcements
    assert env.peer_view("a", B_NIC)["listener"] is False and env.peer_view("a", B_NIC)["alive"]
    view = env.peer_view("a", B_NIC)
    assert view["heard_s_ago"] is not None and view["heard_s_ago"] < 1.0


def test_two_healthy_backups_share_new_flows_evenly(env: Env) -> None:
    got = spread(env, 5000)
    assert set(got) == {"b", "x"}, got  # every flow answered, by the backups only
    assert abs(got["b"] - got["x"]) <= 1, got
    per = call(env.nics["a"].socket, "counters")["failsafe_handler"]["per_backup"]  # type: ignore[index]
    assert set(per) == {B_IP, X_IP}


def test_backup_whose_nic_announces_the_service_failed_is_never_chosen(env: Env) -> None:
    env.delay["b"].write_text("0.3")  # b's echo answers too late: b's NIC puts it into fail-safe
    try:
        env.wait(lambda: env.modes("b")["echo"] == "failsafe", 5, "b's echo in fail-safe")
        env.wait(lambda: env.peer_view("a", B_NIC)["services"][f"{B_IP}:5000"]["state"] == "failsafe", 2,
                 "a to hear that b's echo failed")
        assert env.peer_view("a", B_NIC)["services"][f"{B_IP}:*"]["state"] == "normal"
        got = spread(env, 5000, flows=10)
        assert got == Counter({"x": 10}), got
    finally:
        env.delay["b"].write_text("0")
    env.wait(lambda: env.peer_view("a", B_NIC)["services"][f"{B_IP}:5000"]["state"] == "normal", 10,
             "b's echo announced normal again")
    got = spread(env, 5000, flows=4)
    assert got == Counter({"b": 2, "x": 2}), got  # b is chosen again once it recovered


def test_backup_on_a_host_that_is_down_is_never_chosen(env: Env) -> None:
    env.lab.ns_cmd("b", "ip", "link", "set", "eth0", "down")
    try:
        env.wait(lambda: env.peer_view("a", B_NIC)["services"][f"{B_IP}:*"]["state"] == "failsafe", 5,
                 "a to hear that host b is down")
        # b's NIC never announced port 5001: only the host-level key keeps a away from b:5001
        assert f"{B_IP}:5001" not in env.peer_view("a", B_NIC)["services"]
        got = spread(env, 5001, flows=8)
        assert got == Counter({"x": 8}), got
        got = spread(env, 5000, flows=4)
        assert got == Counter({"x": 4}), got
    finally:
        env.lab.ns_cmd("b", "ip", "link", "set", "eth0", "up")
    env.wait(lambda: env.peer_view("a", B_NIC)["services"][f"{B_IP}:*"]["state"] == "normal", 10,
             "host b announced up again")
    got = spread(env, 5001, flows=4)
    assert got == Counter({"b": 2, "x": 2}), got
