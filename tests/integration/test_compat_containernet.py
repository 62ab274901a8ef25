"""Containernet's examples, ported by changing the import (examples/), run as scripts: what they print holds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from testbed.testing import leftovers

ROOT = Path(__file__).resolve().parents[2]
#: Emulator tolerance on a ping RTT (test_emulation's): 3 ms + 5 %.
TOL_MS, TOL_REL = 3.0, 0.05


def run_example(name: str, timeout: float = 600) -> tuple[str, str]:
    """Run examples/NAME as a user would (no terminal: the CLI ends at EOF); its output and run id."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name)], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                          env=env, cwd=ROOT)
    out = done.stdout
    assert done.returncode == 0, out[-3000:]
    rid = re.search(r"\*\*\* testbed run ([0-9a-f]{4})", out).group(1)
    return out, rid


def assert_nothing_left(rid: str, switches: list[str]) -> None:
    """No container, bridge, interface, namespace of the run, nor any interface of its switches."""
    assert leftovers(rid) == []
    bridges = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout.split()
    assert not set(switches) & set(bridges)
    assert not [i for i in os.listdir("/sys/class/net") if i.split("-")[0] in switches]
    assert not Path(f"/var/lib/testbed/runs/{rid}.jsonl").exists()


def rtt_avg(out: str) -> float:
    """The average RTT of the first ping summary in `out`."""
    return float(re.search(r"rtt min/avg/max/mdev = [\d.]+/([\d.]+)/", out).group(1))


def serialization_ms(frame_bytes: int, mbit: float) -> float:
    """Time to put one frame on a link of `mbit` Mbit/s."""
    return frame_bytes * 8 / (mbit * 1000)


def test_containernet_example_100ms_link_between_two_containers():
    out, rid = run_example("containernet_example.py")
    assert "*** Results: 0% dropped (2/2 received)" in out
    expected = 2 * 100 + 2 * serialization_ms(98, 1)  # 100 ms each way, 98-byte frames at 1 Mbit/s
    assert abs(rtt_avg(out) - expected) <= TOL_MS + TOL_REL * expected, out
    assert_nothing_left(rid, ["s1", "s2"])


def test_dockerhosts_limits_second_interface_and_runtime_host():
    out, rid = run_example("dockerhosts.py")
    results = re.findall(r"\*\*\* Results: (\d+)% dropped \((\d+)/(\d+) received\)", out)
    # d1<->d2, d1->10.0.0.252, d2/d3->11.0.0.254, runtime d4 reachable; then d4 removed: unreachable
    assert [r[0] for r in results] == ["0", "0", "0", "0", "100"], out
    assert "d2 cpu: 50000/100000" in out  # cpu_quota 25000 / cpu_period 50000 = half a core
    assert "d3 memory: 67108864" in out  # mem_limit='64m'
    assert "d2 cpu updated: 20000/100000" in out  # updateCpuLimit(cpu_quota=10000) on the 50000 period
    assert "d3 memory updated: 134217728" in out
    assert "d5 volume: " + Path("/etc/hostname").read_text().strip() in out
    assert_nothing_left(rid, ["s1", "s2", "s3"])


def test_cmd_field_service_runs_and_answers_across_the_link():
    out, rid = run_example("containernet_example_cmd_field.py")
    m = re.search(r"reply b'hello\\n' after ([\d.]+) ms", out)
    assert m, out
    expected = 2 * 100  # one request/response across the 100 ms link (the TCP handshake came before)
    assert abs(float(m.group(1)) - expected) <= TOL_MS + TOL_REL * expected + 5  # + Python's own timing
    assert int(re.search(r"(\d+) echo process\(es\) in d2", out).group(1)) >= 1
    assert_nothing_left(rid, ["s1", "s2"])
