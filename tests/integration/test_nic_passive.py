"""Passive failure evidence on a live NIC: a crashed TCP service's RSTs never reach the client, and detection is faster.

The lab (testbed/failsafe/labnet.py): a client, the NIC in front of the main host, a backup host;
both hosts run the lab's echo server (udp 5000, tcp 7000). The client opens a new TCP connection to
the main host every 5 ms; the main host's echo server is killed (SIGKILL: its kernel then resets
every SYN to port 7000). Measured both ways, with the NIC's passive evidence off (detection by the
TCP heartbeat's timeout) and on (the first RST answering a pending SYN), as the time from the kill to
the NIC's fail-safe activation, and the connections the client saw refused.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from testbed.failsafe.config import ServiceConfig
from testbed.failsafe.control import call
from testbed.failsafe.labnet import MAIN_IP, Lab, in_netns, lab_run
from testbed.failsafe.launcher import NicProcess

pytestmark = pytest.mark.integration

INTERVAL, THRESHOLD, MIN_RTT = 0.1, 1.5, 0.005  # the shipped topologies' defaults
PORT = 7000


class Env:
    def __init__(self, lab: Lab, nic: NicProcess, tmp: Path) -> None:
        self.lab, self.nic, self.tmp = lab, nic, tmp
        self.main = None

    def start_main(self) -> None:
        self.main = self.lab.echo("m", "main", [5000], [PORT], self.tmp / "delay-main")

    def modes(self) -> dict[str, str]:
        return {k: v["mode"] for k, v in call(self.nic.socket, "heartbeat_show").items()}  # type: ignore[union-attr]

    def wait_normal(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while set(self.modes().values()) != {"normal"}:
            assert time.monotonic() < deadline, f"NIC never normal: {self.modes()}"
            time.sleep(0.02)

    def connect(self) -> str:
        """One new TCP connection to the main host's service: who answered, "refused" or "timeout"."""
        sock = in_netns(self.lab.ns["c"], lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        sock.settimeout(1.5)
        try:
            sock.connect((MAIN_IP, PORT))
            sock.sendall(b"x")
            return sock.recv(100).partition(b":")[0].decode() or "closed"
        except ConnectionRefusedError:
            return "refused"
        except ConnectionResetError:
            return "reset"
        except socket.timeout:
            return "timeout"
        finally:
            sock.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    tmp = tmp_path_factory.mktemp("nicpassive")
    with lab_run(tmp) as run:
        (tmp / "delay-main").write_text("0")
        run.lab.echo("b", "backup", [5000], [PORT], tmp / "delay-backup")
        e = Env(run.lab, None, tmp)  # type: ignore[arg-type]
        e.start_main()
        e.nic = run.start_nic(services=(ServiceConfig("web", "tcp", PORT, message="tcp"),), interval_s=INTERVAL,
                              threshold=THRESHOLD, learn=5, hysteresis=3, min_rtt_s=MIN_RTT)
        e.wait_normal()
        yield e


def crash_under_load(env: Env, passive: bool) -> dict:
    """Kill the main host's service while the client connects every 5 ms; detection and what the client saw."""
    assert call(env.nic.socket, "passive", mode="on" if passive else "off") == {"passive": "on" if passive else "off"}
    env.wait_normal()
    events = Path(env.nic.config.events_path)
    seen = len(events.read_text().splitlines()) if events.exists() else 0
    before: list[str] = []
    after: list[str] = []
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        before.append(env.connect())
        time.sleep(0.005)
    t_fault = time.time()
    assert env.main is not None
    env.main.kill()  # SIGKILL: the kernel closes the listener, and resets every SYN from now on
    env.main.wait(5)
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        after.append(env.connect())
        time.sleep(0.005)
    new = [json.loads(line) for line in events.read_text().splitlines()[seen:]]
    on = [e for e in new if e["target"] == "web" and e["active"]]
    assert on, f"no fail-safe activation (passive {passive}): {new}"
    env.start_main()
    env.wait_normal()
    return {"detection_s": on[0]["time"] - t_fault, "reason": on[0]["reason"], "before": before, "after": after,
            "refused": sum(1 for r in after if r in ("refused", "reset")),
            "backup": sum(1 for r in after if r == "backup"), "timeout": after.count("timeout")}


def test_passive_evidence_detects_a_crashed_service_at_once_and_hides_its_resets(env: Env) -> None:
    off = crash_under_load(env, passive=False)
    on = crash_under_load(env, passive=True)
    for name, r in (("passive off", off), ("passive on", on)):
        print(f"{name}: detection {r['detection_s'] * 1e3:.1f} ms ({r['reason']}); after the kill "
              f"{len(r['after'])} connections: {r['backup']} by the backup, {r['refused']} refused, "
              f"{r['timeout']} timed out")
    assert set(off["before"]) == {"main"} and set(on["before"]) == {"main"}
    assert off["reason"].startswith("timeout") and on["reason"].startswith("passive: RST")
    assert on["refused"] == 0, on["after"]  # no RST from the dead service reached the client
    assert off["refused"] >= 1, off["after"]  # the defect the passive signal removes
    assert on["detection_s"] < off["detection_s"]
    assert on["detection_s"] < 0.05
    assert on["backup"] >= len(on["after"]) - 1, on["after"]
    counters = call(env.nic.socket, "failover")
    assert counters["passive"] >= 1 and counters["refused"] >= 1  # type: ignore[index]
