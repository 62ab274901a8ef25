"""proc's doors into a Mininet node: run_in (exit status, quoting, timeout, dead shell), popen_in, spawn_pty.

The node is a stand-in with Mininet's Node I/O (sendCmd, read, sendInt, waiting, readbuf) around a
real bash on a pty started with proc.spawn_pty, as Mininet starts a host's shell: no root needed.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from testbed import proc
from testbed.errors import CommandError, TestbedError

SENTINEL = chr(127)


class ShellNode:
    """Mininet's Node shell protocol, trimmed: PS1 is the sentinel, commands are written to the pty."""

    def __init__(self, name: str = "h1") -> None:
        self.name = name
        self.master, self.slave, self.shell = proc.spawn_pty(
            ["env", f"PS1={SENTINEL}", "bash", "--norc", "--noediting", "-is", f"mininet:{name}"])
        self.stdout = self.stdin = os.fdopen(self.master, "r")
        self.readbuf = ""
        self.waiting = False
        self.lastCmd: str | None = None
        self.sent: list[str] = []
        out = ""
        while not out.endswith(SENTINEL):  # the first prompt
            select.select([self.master], [], [], 5)
            out += self.read(1024)
        self.sendCmd("unset HISTFILE; stty -echo; set +m")
        while self.waiting:
            if SENTINEL in self.read(1024):
                self.waiting = False

    def read(self, size: int = 1024) -> str:
        if self.readbuf:
            data, self.readbuf = self.readbuf[:size], self.readbuf[size:]
            return data
        return os.read(self.master, size).decode(errors="replace")

    def write(self, data: str) -> None:
        os.write(self.master, data.encode())

    def sendCmd(self, cmd: str) -> None:  # noqa: N802 - Mininet's name
        assert not self.waiting
        self.sent.append(cmd)
        self.lastCmd = cmd
        self.write(cmd + "\n")
        self.waiting = True

    def sendInt(self) -> None:  # noqa: N802
        self.write(chr(3))

    def popen(self, argv: list[str], **kwargs: object) -> subprocess.Popen:
        return subprocess.Popen(argv, **kwargs)  # type: ignore[call-overload]

    def close(self) -> None:
        if self.shell.poll() is None:
            os.killpg(self.shell.pid, signal.SIGKILL)
        self.shell.wait(5)
        self.stdout.close()  # owns the master fd: closing it again with os.close could hit a reused number
        try:
            os.close(self.slave)
        except OSError:
            pass


@pytest.fixture
def node() -> Iterator[ShellNode]:
    n = ShellNode()
    yield n
    n.close()


def test_run_in_returns_output_and_quotes_arguments(node: ShellNode) -> None:
    res = proc.run_in(node, ["printf", "%s|%s", "a b", "$HOME; echo pwned"])
    assert res.ok and res.stdout == "a b|$HOME; echo pwned"  # no newline of its own: none added
    assert node.sent[-1] == "printf '%s|%s' 'a b' '$HOME; echo pwned'; echo __tb_rc=$?"
    assert proc.run_in(node, ["echo", "two", "lines"]).stdout == "two lines\n"
    assert proc.run_in(node, ["true"]).stdout == ""
    with pytest.raises(ValueError, match="line break"):
        proc.run_in(node, ["printf", "a\nb"])
    assert not node.waiting


def test_run_in_raises_with_output_on_a_failing_command(node: ShellNode) -> None:
    with pytest.raises(CommandError) as exc:
        proc.run_in(node, ["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"])
    assert exc.value.returncode == 3
    assert "to-stdout" in exc.value.stderr and "to-stderr" in exc.value.stderr
    res = proc.run_in(node, ["sh", "-c", "echo out; exit 4"], check=False)
    assert (res.returncode, res.stdout) == (4, "out\n")
    assert proc.run_in(node, ["echo", "still usable"]).stdout == "still usable\n"


def test_run_in_interrupts_a_command_past_its_timeout(node: ShellNode) -> None:
    t0 = time.monotonic()
    with pytest.raises(CommandError, match="timed out") as exc:
        proc.run_in(node, ["sleep", "30"], timeout=0.3)
    assert exc.value.returncode is None and time.monotonic() - t0 < 5
    assert proc.run_in(node, ["echo", "after"]).stdout == "after\n"  # the shell is back at its prompt


def test_run_in_raises_when_the_shell_is_gone(node: ShellNode) -> None:
    os.killpg(node.shell.pid, signal.SIGKILL)
    node.shell.wait(5)
    with pytest.raises(TestbedError, match="h1: its shell is gone"):
        proc.run_in(node, ["true"])
    with pytest.raises(TestbedError, match="h1: its shell is gone"):
        proc.popen_in(node, ["true"])


def test_run_in_raises_when_the_shell_dies_meanwhile(node: ShellNode) -> None:
    with pytest.raises(TestbedError, match="shell died while running|without an exit status"):
        proc.run_in(node, ["sh", "-c", "kill -9 $PPID; sleep 5"], timeout=10)


def test_run_in_refuses_a_busy_shell(node: ShellNode) -> None:
    node.sendCmd("sleep 1")
    with pytest.raises(TestbedError, match="busy with 'sleep 1'"):
        proc.run_in(node, ["true"])


def test_popen_in_pipes_stdout_and_appends_stderr(node: ShellNode, tmp_path: Path) -> None:
    log = tmp_path / "err.log"
    p = proc.popen_in(node, ["sh", "-c", "echo out; echo err >&2"], stderr=log)
    assert proc.communicate(p, timeout=5) == b"out\n"
    assert log.read_text() == "err\n"


def test_communicate_stops_a_process_past_its_timeout(tmp_path: Path) -> None:
    p = proc.spawn_piped(["sleep", "30"])
    with pytest.raises(CommandError, match="sleep 30 timed out"):
        proc.communicate(p, timeout=0.2)
    assert p.poll() is not None


def test_stop_and_wait() -> None:
    p = proc.spawn(["sleep", "30"], output=None)
    assert proc.wait(p, 0.05) is None
    assert proc.stop(p, timeout=2) == -signal.SIGTERM
    assert proc.stop(p) == -signal.SIGTERM  # already ended: nothing signalled


def test_spawn_pty_gives_a_terminal() -> None:
    master, slave, p = proc.spawn_pty(["sh", "-c", "test -t 0 && test -t 1 && echo tty"])
    try:
        out = b""
        while b"tty" not in out:
            ready, _, _ = select.select([master], [], [], 5)
            assert ready, out
            out += os.read(master, 100)
        assert p.wait(5) == 0
    finally:
        os.close(master)
        os.close(slave)


def test_shell_line() -> None:
    assert proc.shell_line(["ip", "link", "set", "eth0", "up"]) == "ip link set eth0 up; echo __tb_rc=$?"
    assert proc.shell_line(["echo", "it's"]) == "echo 'it'\"'\"'s'; echo __tb_rc=$?"
