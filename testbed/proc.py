"""Runs external commands: argument lists only, with timeouts, checked exit status, stderr kept.

The one door for every process the testbed starts: short commands (`run`), commands inside a
Mininet node's shell (`run_in`) or beside it in its namespace (`popen_in`), long-running processes
(`spawn`, optionally held until the caller has recorded their PID), processes on a pty for shells
(`spawn_pty`), processes whose output the caller reads (`spawn_piped`), and stopping them (`stop`).
No other module imports subprocess.
"""

from __future__ import annotations

import logging
import os
import pty
import re
import select
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Sequence

from testbed.errors import CommandError, TestbedError

log = logging.getLogger(__name__)

#: A started process (for type hints outside this module).
Process = subprocess.Popen
#: Exit status of a held process whose starter died before releasing it.
EXIT_NOT_RELEASED = 111
# Waits on stdin for one line, then becomes the command (same PID, same start time).
_HOLD = 'read -r go || exit %d; exec "$@" </dev/null' % EXIT_NOT_RELEASED


@dataclass(frozen=True)
class Result:
    """What a finished command returned."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run(
    args: Sequence[str],
    *,
    timeout: float = 30.0,
    check: bool = True,
    input: str | None = None,
    netns: str | None = None,
) -> Result:
    """Run `args` (in network namespace `netns` if given); raise CommandError on failure when `check`."""
    argv = [str(a) for a in args]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    log.debug("run %s", argv)
    try:
        done = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, None, (exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")) from None
    except FileNotFoundError:
        raise CommandError(argv, 127, f"{argv[0]}: command not found") from None
    result = Result(argv, done.returncode, done.stdout, done.stderr)
    if check and not result.ok:
        raise CommandError(argv, done.returncode, done.stderr or done.stdout)
    return result


def which(name: str) -> str | None:
    """Full path of command `name`, also looking in the sbin directories root has."""
    return shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")


def spawn(
    args: Sequence[str],
    *,
    output: Path | None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    on_start: Callable[[int], None] | None = None,
) -> subprocess.Popen:
    """Start long-running `args` in its own session, stdout and stderr appended to `output` (None: discarded).

    With `on_start`, the process is held before it runs `args` until `on_start(pid)` returns (the
    place to record it in the ledger): it then execs `args` under the same PID and start time. If
    `on_start` raises, the process is killed; if this process dies first, the held one exits
    without running `args`. So a recorded process is never missed by cleanup.
    """
    argv = [str(a) for a in args]
    log.debug("spawn %s > %s", argv, output)
    run_argv = ["/bin/sh", "-c", _HOLD, "sh", *argv] if on_start is not None else argv
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
    out: Any = open(output, "ab") if output is not None else subprocess.DEVNULL
    try:
        if on_start is not None:  # the held shell would only say "not found" after on_start
            found = which(argv[0])
            if found is None:
                raise CommandError(argv, 127, f"{argv[0]}: command not found")
            run_argv[4] = found
        p = subprocess.Popen(
            run_argv, stdin=subprocess.PIPE if on_start is not None else subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True,
        )
    except FileNotFoundError:
        raise CommandError(argv, 127, f"{argv[0]}: command not found") from None
    finally:
        if output is not None:
            out.close()
    if on_start is not None:
        _release(p, on_start)
    return p


def _release(p: subprocess.Popen, on_start: Callable[[int], None]) -> None:
    """Call `on_start(pid)` for a held process, then let it run (kill it if `on_start` fails)."""
    assert p.stdin is not None
    try:
        on_start(p.pid)
    except BaseException:
        p.kill()
        p.wait()
        p.stdin.close()
        raise
    try:
        p.stdin.write(b"go\n")
        p.stdin.close()
    except BrokenPipeError:
        pass  # it died already; the caller sees its exit status
    p.stdin = None


def spawn_piped(args: Sequence[str], *, stderr: Path | None = None, env: dict[str, str] | None = None,
                cwd: Path | None = None) -> subprocess.Popen:
    """Start `args` with stdout on a pipe the caller reads (`p.stdout`), stderr appended to `stderr`."""
    argv = [str(a) for a in args]
    log.debug("spawn_piped %s", argv)
    err: Any = open(stderr, "ab") if stderr is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                env=env, cwd=cwd)
    except FileNotFoundError:
        raise CommandError(argv, 127, f"{argv[0]}: command not found") from None
    finally:
        if stderr is not None:
            err.close()


def spawn_pty(args: Sequence[str]) -> tuple[int, int, subprocess.Popen]:
    """Start `args` (an interactive shell) in its own session on a new pty: (master fd, slave fd, process).

    The caller owns both fds (Mininet's Node keeps them as `master`/`slave` and reads the master).
    """
    argv = [str(a) for a in args]
    log.debug("spawn_pty %s", argv)
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                             start_new_session=True)
    except FileNotFoundError:
        os.close(master)
        os.close(slave)
        raise CommandError(argv, 127, f"{argv[0]}: command not found") from None
    return master, slave, p


def popen_in(node: Any, args: Sequence[str], *, stderr: Path | None = None) -> subprocess.Popen:
    """Start `args` in Mininet node `node` (its `popen`: mnexec, or docker exec), stdout on a pipe.

    Raises TestbedError when the node's shell is gone (a dead host runs nothing).
    """
    argv = [str(a) for a in args]
    _check_shell(node, argv)
    err: Any = open(stderr, "ab") if stderr is not None else subprocess.DEVNULL
    try:
        p = node.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
    finally:
        if stderr is not None:
            err.close()
    log.debug("%s: popen %s (pid %s)", getattr(node, "name", node), argv, p.pid)
    return p


def communicate(p: subprocess.Popen, timeout: float) -> bytes:
    """Wait for `p` to end and return the rest of its stdout; kill it and raise CommandError on timeout."""
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(p, timeout=1.0)
        raise CommandError([str(a) for a in p.args], None, "") from None
    return out or b""


def stop(p: subprocess.Popen, timeout: float = 5.0) -> int | None:
    """SIGTERM process `p` (only it, by its handle), SIGKILL it after `timeout`; its exit status."""
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("pid %d ignored SIGTERM for %g s; killing it", p.pid, timeout)
            p.kill()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("pid %d did not die on SIGKILL within %g s", p.pid, timeout)
    return p.returncode


def wait(p: subprocess.Popen, timeout: float) -> int | None:
    """Exit status of `p` once it ends within `timeout` seconds, else None (it keeps running)."""
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


# --- commands in a Mininet node's shell ------------------------------------------------------------

#: Written after each `run_in` command with its exit status; the shell's own output never has it.
RC_MARK = "__tb_rc="
_RC = re.compile(re.escape(RC_MARK) + r"(\d+)\s*$")
_SENTINEL = chr(127)  # what Mininet's shell prints when a command is done


def _check_shell(node: Any, argv: list[str]) -> None:
    shell = getattr(node, "shell", None)
    if shell is None or shell.poll() is not None:
        raise TestbedError(f"{getattr(node, 'name', node)}: its shell is gone (host down?); "
                           f"cannot run {shlex.join(argv)}")


def shell_line(args: Sequence[str]) -> str:
    """The shell line `run_in` sends: `args` quoted, then its exit status after RC_MARK.

    ValueError for an argument with a line break: the shell would prompt for the rest of the line.
    """
    argv = [str(a) for a in args]
    if any("\n" in a or "\r" in a for a in argv):
        raise ValueError(f"cannot run {argv!r} through a shell: an argument has a line break (use popen_in)")
    return f"{shlex.join(argv)}; echo {RC_MARK}$?"


def run_in(node: Any, args: Sequence[str], *, timeout: float = 30.0, check: bool = True) -> Result:
    """Run `args` in Mininet node `node`'s shell and return its output (stdout and stderr together).

    Unlike `node.cmd`, the exit status is recovered (CommandError with the output when it is not 0
    and `check`), a command that outlives `timeout` is interrupted (CommandError, status None),
    and a node whose shell is gone, or dies meanwhile, raises TestbedError instead of returning "".
    """
    argv = [str(a) for a in args]
    line = shell_line(argv)
    _check_shell(node, argv)
    name = getattr(node, "name", node)
    if getattr(node, "waiting", False):
        raise TestbedError(f"{name}: its shell is busy with {getattr(node, 'lastCmd', '?')!r}; cannot run "
                           f"{shlex.join(argv)}")
    log.debug("%s: run_in %s", name, argv)
    node.sendCmd(line)
    out, done = _read_until_done(node, argv, time.monotonic() + timeout)
    if not done:
        node.sendInt()
        more, done = _read_until_done(node, argv, time.monotonic() + 2.0)
        node.waiting = False
        raise CommandError(argv, None, out + more)
    out = out.replace("\r\n", "\n")
    found = _RC.search(out)
    if found is None:
        raise TestbedError(f"{name}: {shlex.join(argv)} ended without an exit status (shell exited?): "
                           f"{out.strip()[-200:]!r}")
    text = out[: found.start()]
    result = Result(argv, int(found.group(1)), text, "")
    if check and not result.ok:
        raise CommandError(argv, result.returncode, text)
    return result


def readable(fd: int, timeout: float) -> bool:
    """Whether `fd` has input within `timeout` seconds (poll, not select: a long-lived process may hold fds above 1023)."""
    waiter = select.poll()
    waiter.register(fd, select.POLLIN)
    return bool(waiter.poll(max(0.0, timeout) * 1000))


def _read_until_done(node: Any, argv: list[str], deadline: float) -> tuple[str, bool]:
    """Output of the node's shell until Mininet's sentinel (True) or `deadline` (False).

    Polls the shell's output fd itself: Mininet's `monitor` may block in read() on a pty whose poll
    set also reports POLLOUT (a Docker host's shell), and returns nothing while its buffer is full.
    """
    out: list[str] = []
    stdout: IO[Any] = node.stdout
    while True:
        shell = node.shell
        if shell is None or shell.poll() is not None:
            node.waiting = False
            raise TestbedError(f"{getattr(node, 'name', node)}: its shell died while running "
                               f"{shlex.join(argv)}: {''.join(out).strip()[-200:]!r}")
        if not node.readbuf:
            left = deadline - time.monotonic()
            if left <= 0:
                return "".join(out), False
            if not readable(stdout.fileno(), min(left, 0.2)):
                continue
        data = node.read(1024)
        if _SENTINEL in data:
            out.append(data.replace(_SENTINEL, ""))
            node.waiting = False
            return "".join(out), True
        out.append(data)
