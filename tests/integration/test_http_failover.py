"""A real HTTP client hammering a service behind a fail-safe NIC across a host crash never sees a reset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.emulation.testbed import Testbed
from testbed.experiment import services
from testbed.experiment.spec import ServiceRun
from testbed.testing import leftovers, live_processes
from testbed.topology.api import MecTopo

#: urllib in a loop inside `cli`: one new connection per request, 20 a second; each outcome a JSON line.
CLIENT = r"""
import json, sys, time, urllib.request, urllib.error
n, url = int(sys.argv[1]), sys.argv[2]
start = time.time()
for i in range(n):
    time.sleep(max(0.0, start + i * 0.05 - time.time()))
    try:
        body = urllib.request.urlopen(url, timeout=1).read().decode().strip()
        out = {"i": i, "who": body}
    except (ConnectionResetError, ConnectionRefusedError) as exc:
        out = {"i": i, "error": "reset", "why": repr(exc)}
    except urllib.error.URLError as exc:
        kind = "reset" if isinstance(exc.reason, (ConnectionResetError, ConnectionRefusedError)) else "timeout"
        out = {"i": i, "error": kind, "why": repr(exc.reason)}
    except Exception as exc:
        out = {"i": i, "error": "timeout" if "timed out" in repr(exc) else "other", "why": repr(exc)}
    print(json.dumps(out), flush=True)
"""


def web_pair():
    """cli, and mec1 (web, behind a NIC that backs the HTTP port up to mec2) and mec2 (web) on one site."""
    t = MecTopo("httpfo", subnet="10.32.0.0/24")
    t.addSite("lab")
    t.addHost("cli", site="lab", ip="10.32.0.1")
    web = [t.service("web", "tcp", 8080)]
    t.addDocker("mec1", site="lab", dimage="testbed/web", ip="10.32.0.11",
                nic=t.nic(ip="10.32.0.111", backups=["mec2"], interval="50ms", services=web))
    t.addDocker("mec2", site="lab", dimage="testbed/web", ip="10.32.0.12")
    return t.build()


def test_http_client_across_a_host_crash_gets_no_reset(tmp_path: Path):
    tb = Testbed(web_pair(), tmp_path / "run")
    with tb:
        for host in ("mec1", "mec2"):
            services.wait_ready(tb, ServiceRun(host, "web"))
            tb.node(host).exec(["sh", "-c", f"echo {host} > /srv/www/who"])
        from testbed.experiment.runner import wait_nics_learned

        wait_nics_learned(tb, ["mec1"], timeout=30)
        script = tmp_path / "client.py"
        script.write_text(CLIENT)
        client = tb.node("cli").popen(["python3", str(script), "120", "http://10.32.0.11:8080/who"])
        lines = []
        while len(lines) < 40:  # the crash comes after request 40 has been answered
            line = client.stdout.readline().decode()
            assert line, "the client ended early"
            lines.append(line)
        tb.node("mec1").crash()
        out, _ = client.communicate(timeout=60)
    results = [json.loads(line) for line in lines + out.decode().splitlines() if line.startswith("{")]
    assert len(results) == 120
    resets = [r for r in results if r.get("error") == "reset"]
    assert resets == [], resets
    assert all("error" not in r for r in results[:30]) and {r["who"] for r in results[:30]} == {"mec1"}
    tail = results[-40:]
    assert all(r.get("who") == "mec2" for r in tail), tail
    lost = [r for r in results if "error" in r]
    assert len(lost) <= 5, lost  # only requests caught in the detection window, and only by timeout
    assert leftovers(tb.rid) == []
    assert live_processes(tb.run_dir) == []
