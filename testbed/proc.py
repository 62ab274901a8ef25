"""Runs external commands: argument lists only, with timeouts, checked exit status, stderr kept."""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from testbed.errors import CommandError

log = logging.getLogger(__name__)


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
    output: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen:
    """Start long-running `args` in its own session, stdout and stderr appended to `output`."""
    argv = [str(a) for a in args]
    log.debug("spawn %s > %s", argv, output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "ab") as out:
        try:
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, cwd=cwd, start_new_session=True,
            )
        except FileNotFoundError:
            raise CommandError(argv, 127, f"{argv[0]}: command not found") from None
