"""A real HTTP client hammering a service behind a fail-safe NIC across a host crash never sees a reset.

And curl with HTTP/1.1 keep-alive, fetching over ONE connection across the crash: the NIC carries the
connection to the backup (carry_tcp): 0 resets, 0 lost, one connect, on both data paths.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from testbed import proc

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


#: An HTTP/1.1 keep-alive server (http.server's default is HTTP/1.0: one connection per request) on
#: KEEPALIVE_PORT in the web image: each GET answers the host's name (/srv/www/who) and its path.
KEEPALIVE = r"""
import http.server as h
class H(h.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        b = (open("/srv/www/who").read().strip() + " " + self.path).encode()
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b))
    def log_message(self, *a):
        pass
h.ThreadingHTTPServer(("0.0.0.0", 8081), H).serve_forever()
"""
KEEPALIVE_PORT = 8081


def web_pair(datapath: str | None = None):
    """cli, and mec1 (web, behind a NIC that backs the HTTP port up to mec2) and mec2 (web) on one site.

    With `datapath`, the NIC runs it and also backs up KEEPALIVE_PORT (the test starts that server).
    """
    t = MecTopo("httpfo", subnet="10.32.0.0/24")
    t.addSite("lab")
    t.addHost("cli", site="lab", ip="10.32.0.1")
    web = [t.service("web", "tcp", 8080)]
    if datapath is not None:
        web.append(t.service("web-ka", "tcp", KEEPALIVE_PORT))
    nic = t.nic(ip="10.32.0.111", backups=["mec2"], interval="50ms", services=web)
    if datapath is not None:
        nic["datapath"] = datapath
    t.addDocker("mec1", site="lab", dimage="testbed/web", ip="10.32.0.11", nic=nic)
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
        out = client.stdout.read()  # (through the reader readline used: it may hold the next bytes)
        client.wait(timeout=60)
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


@pytest.mark.parametrize("datapath", ["python", "bpf"])
def test_curl_keepalive_across_a_host_crash(tmp_path: Path, datapath: str):
    tb = Testbed(web_pair(datapath), tmp_path / "run")
    with tb:
        for host in ("mec1", "mec2"):
            services.wait_ready(tb, ServiceRun(host, "web"))
            tb.node(host).exec(["sh", "-c", f"echo {host} > /srv/www/who"])
            tb.node(host).exec(["sh", "-c", 'python3 -c "$0" > /dev/null 2>&1 &', KEEPALIVE])
            url = f"http://{tb.node(host).IP()}:{KEEPALIVE_PORT}/ready"
            deadline = time.monotonic() + 15
            while not proc.run_in(tb.node("cli"), ["curl", "-sf", "-m", "1", url], check=False).ok:
                assert time.monotonic() < deadline, f"{host}: keep-alive server not up"
                time.sleep(0.1)
        from testbed.experiment.runner import wait_nics_learned

        wait_nics_learned(tb, ["mec1"], timeout=30)
        # one curl: 120 URLs over one keep-alive connection, 20 a second, each transfer's outcome a line
        fmt = " code=%{http_code} connects=%{num_connects} exit=%{exitcode}\\n"
        client = tb.node("cli").popen(["curl", "-sN", "--rate", "20/s", "-m", "3", "-w", fmt,
                                       f"http://10.32.0.11:{KEEPALIVE_PORT}/n[1-120]"])
        lines = []
        while len(lines) < 40:  # the crash comes after request 40 has been answered
            line = client.stdout.readline().decode()
            assert line, "curl ended early"
            lines.append(line)
        tb.node("mec1").crash()
        out = client.stdout.read()  # (through the reader readline used: it may hold the next bytes)
        client.wait(timeout=60)
    lines = [ln.strip() for ln in lines + out.decode().splitlines() if " code=" in ln]
    assert len(lines) == 120, lines
    bad = [ln for ln in lines if " code=200 " not in ln or not ln.endswith(" exit=0")]
    assert bad == [], (bad, lines)  # no reset, no timeout
    got = [ln.split(" code=")[0].split() for ln in lines]
    assert [g[1] for g in got] == [f"/n{i}" for i in range(1, 121)], lines  # none lost
    assert sum(int(ln.split("connects=")[1].split()[0]) for ln in lines) == 1, lines  # ONE connection
    who = [g[0] for g in got]
    assert who[:40] == ["mec1"] * 40 and who[-40:] == ["mec2"] * 40, who
    assert leftovers(tb.rid) == []
    assert live_processes(tb.run_dir) == []
