"""The kill script cleanup runs on every server (and here): recorded PID and start time, TERM, KILL, gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from testbed import clean, ledger
from testbed.cluster.cleanup import KILL

IGNORES_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"


def kill(pid: int, start: int | None) -> str:
    return subprocess.run([sys.executable, "-c", KILL, str(pid), str(start)], capture_output=True, text=True,
                          timeout=20).stdout.strip()


def started(code: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline() == "up\n"
    return p


def test_a_process_that_ignores_sigterm_is_gone_when_the_script_says_killed() -> None:
    p = started(IGNORES_TERM)
    t0 = time.monotonic()
    assert kill(p.pid, ledger.proc_start_time(p.pid)) == "killed"
    assert time.monotonic() - t0 >= 1.5  # it had its 2 s of grace first
    assert p.poll() == -9  # already dead when the script answered: reaped without waiting


def test_a_dead_unreaped_process_counts_as_gone() -> None:
    p = started("print('up', flush=True)")
    start = ledger.proc_start_time(p.pid)
    deadline = time.monotonic() + 5
    while open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert kill(p.pid, start) == ""  # a zombie is not the recorded running process: nothing to kill
    p.wait()


def test_another_start_time_is_left_alone() -> None:
    p = started(IGNORES_TERM)
    try:
        assert kill(p.pid, (ledger.proc_start_time(p.pid) or 0) + 1).startswith("not ours: started at ")
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()


def test_local_cleanup_reports_the_kill() -> None:
    p = started("import time; print('up', flush=True); time.sleep(60)")
    out = clean.Cleanup()
    clean._kill(p.pid, ledger.proc_start_time(p.pid), out)  # noqa: SLF001
    assert out.removed == [f"process {p.pid}"] and out.failed == []
    assert p.wait(5) == -15


def test_live_processes_reports_only_running_recorded_processes(tmp_path) -> None:
    from testbed.testing import live_processes

    p = started("print('up', flush=True); import time; time.sleep(60)")
    try:
        gone = started("print('up', flush=True)")
        gone.wait(5)
        lines = [{"kind": "process", "name": str(p.pid), "start": ledger.proc_start_time(p.pid), "what": "sleeper"},
                 {"kind": "process", "name": str(gone.pid), "start": None, "what": "gone when recorded"},
                 {"kind": "process", "name": str(p.pid), "start": 1, "what": "an earlier holder of the PID"}]
        (tmp_path / "resources.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        assert live_processes(tmp_path) == [f"process {p.pid} (sleeper)"]
    finally:
        p.kill()
        p.wait(5)
    assert live_processes(tmp_path) == []


def test_a_remote_process_gone_before_it_is_recorded_is_not_written_down() -> None:
    from types import SimpleNamespace

    from testbed.cluster.server import record_remote_process

    written: list[tuple] = []
    book = SimpleNamespace(record=lambda *a, **kw: written.append((a, kw)))
    stat = f"{os.getpid()} (python3) S 1 " + " ".join(["0"] * 17) + " 4242 0"
    answers = {"777": "", "888": stat, "999": stat.replace(") S ", ") Z ")}
    door = SimpleNamespace(name="far", run=lambda args, check: SimpleNamespace(stdout=answers[args[1].split("/")[2]]))
    record_remote_process(book, door, 777, "short-lived child")
    record_remote_process(book, door, 999, "exited, not yet reaped")
    record_remote_process(book, door, 888, "link emulator")
    assert written == [(("process", "888"), {"start": 4242, "what": "link emulator", "server": "far"})]
