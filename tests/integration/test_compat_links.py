"""Link parameters of ported scripts are honoured or refused by name; a SIGKILLed script is fully cleaned."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_compat_containernet import ROOT, assert_nothing_left
from tests.integration.test_compat_mininet import binomial_ok

SCRIPTS = Path(__file__).parent / "scripts"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def test_mininets_own_tclink_gives_20ms_rtt_and_10pct_round_trip_loss():
    done = subprocess.run([sys.executable, str(SCRIPTS / "mininet_tclink.py")], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stdout[-3000:]
    rid = re.search(r"testbed run ([0-9a-f]{4})", done.stdout).group(1)
    sent, received = map(int, re.search(r"(\d+) packets transmitted, (\d+) received", done.stdout).groups())
    assert binomial_ok(sent - received, sent, 1 - 0.95 ** 2), done.stdout  # 5 % each way
    avg = float(re.search(r"= [\d.]+/([\d.]+)/", done.stdout).group(1))
    assert abs(avg - 20.0) <= 3.0 + 0.05 * 20, done.stdout
    assert_nothing_left(rid, ["s1"])


def test_a_tclink_option_that_cannot_be_honoured_is_refused_by_name():
    done = subprocess.run([sys.executable, str(SCRIPTS / "mininet_tclink.py"), "use_tbf=True"],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300, env=ENV)
    assert done.returncode != 0
    assert "link h1-s1.use_tbf: TBF scheduling is not emulated" in done.stdout
    rid = re.search(r"testbed run ([0-9a-f]{4})", done.stdout).group(1)
    assert_nothing_left(rid, ["s1"])


def _wait_line(p: subprocess.Popen, want: str, timeout: float) -> tuple[str, bool]:
    """Read `p`'s output (unbuffered, from its pipe) until a line equal to `want`: (all read, seen it)."""
    seen = b""
    fd = p.stdout.fileno()
    while want.encode() not in seen.splitlines():
        ready, _, _ = select.select([fd], [], [], timeout)
        chunk = os.read(fd, 65536) if ready else b""
        if not chunk:
            return seen.decode(errors="replace"), False
        seen += chunk
    return seen.decode(errors="replace"), True


def _clean(rid: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.cli", "clean", "--run", rid], capture_output=True,
                          text=True, timeout=300, env=ENV, cwd=ROOT)


@pytest.mark.parametrize("kind", ["tclink", "link", "mininet-tclink", "docker"])
def test_sigkill_mid_run_then_clean_leaves_nothing(kind):
    p = subprocess.Popen([sys.executable, str(SCRIPTS / "kill_midrun.py"), kind], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ENV)
    seen, ready = _wait_line(p, "READY", 300)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    rid = re.search(r"testbed run ([0-9a-f]{4})", seen).group(1)
    if not ready:
        _clean(rid)
        pytest.fail(f"the script never said READY: {seen[-2000:]}")
    assert Path(f"/var/lib/testbed/runs/{rid}.jsonl").exists()  # the kill left the run to clean
    done = _clean(rid)
    assert done.returncode == 0, done.stderr
    assert_nothing_left(rid, ["s1", "s2", "h1", "h2", "d1"])
