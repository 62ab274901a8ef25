"""Finds out, by trying, whether Docker can checkpoint a running container and restore it (CRIU).

`criu check` passing is not enough (Debian 12's criu 3.17 fails to dump on new kernels; criu
4.1 dumps nothing with an INET socket since Linux 6.16): the trial starts a throwaway container
of `testbed/base` labelled `testbed.doctor`, whose shell counts in a file, checkpoints it
(`docker checkpoint create`), restores it (`docker start --checkpoint`) and checks that the
count went on from where it was, not from zero. The container is removed by its id whatever
happens. The reason for a failure is the engine's own (no `--experimental`, criu's first error).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from testbed import proc
from testbed.errors import CommandError

log = logging.getLogger(__name__)

IMAGE = "testbed/base"
LABEL = "testbed.doctor"
#: The trial's process: a count written to a file, faster than the trial reads it.
COUNTER = "i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.01; done"
_LOG_PATH = re.compile(r"path= ?(/\S+\.log)")


@dataclass(frozen=True)
class Trial:
    """What the checkpoint/restore trial found: ok, and why not (or how long each step took)."""

    ok: bool
    reason: str
    checkpoint_s: float | None = None
    restore_s: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def criu_error(message: str) -> str:
    """The first `Error` line of the criu log a Docker error message names, else the message's last line."""
    found = _LOG_PATH.search(message)
    if found:
        try:
            for line in Path(found.group(1)).read_text(errors="replace").splitlines():
                if "Error" in line:
                    return "criu: " + line.split("): ", 1)[-1].strip()
        except OSError:
            pass
    lines = [x for x in message.strip().splitlines() if x.strip()]
    return lines[-1].strip() if lines else "failed"


def _docker(args: list[str], timeout: float = 30.0) -> proc.Result:
    return proc.run(["docker", *args], timeout=timeout, check=False)


def _count(cid: str) -> int | None:
    res = _docker(["exec", cid, "cat", "/tmp/count"], timeout=10)
    text = res.stdout.strip()
    return int(text) if res.ok and text.isdigit() else None


def trial(image: str = IMAGE) -> Trial:
    """Checkpoint and restore a throwaway container for real; the outcome and its reason."""
    if not proc.which("docker"):
        return Trial(False, "the docker command is missing")
    exp = _docker(["version", "--format", "{{.Server.Experimental}}"], timeout=10)
    if not exp.ok:
        return Trial(False, f"no Docker engine answers: {(exp.stderr.strip().splitlines() or ['?'])[-1]}")
    if exp.stdout.strip() != "true":
        return Trial(False, "the Docker daemon runs without --experimental (docker checkpoint needs it)")
    if not proc.which("criu"):
        return Trial(False, "criu is not installed")
    token = secrets.token_hex(3)
    try:
        started = _docker(["run", "-d", "--label", f"{LABEL}={token}", "--network", "none", "--name",
                           f"tbdoc{token}", image, "sh", "-c", COUNTER])
    except CommandError as exc:
        return Trial(False, f"cannot start a trial container: {exc}")
    if not started.ok:
        return Trial(False, f"cannot start a trial container of {image}: {criu_error(started.stderr)}")
    cid = started.stdout.strip()
    try:
        return _checkpoint_restore(cid)
    finally:
        _docker(["rm", "-f", cid], timeout=30)


def _checkpoint_restore(cid: str) -> Trial:
    deadline = time.monotonic() + 10
    before = _count(cid)
    while (before or 0) < 20 and time.monotonic() < deadline:  # evidence that the count runs
        time.sleep(0.05)
        before = _count(cid)
    if before is None:
        return Trial(False, "the trial container's counter never ran")
    t0 = time.monotonic()
    made = _docker(["checkpoint", "create", cid, "tbcp"], timeout=60)
    t1 = time.monotonic()
    if not made.ok:
        return Trial(False, f"docker checkpoint create failed: {criu_error(made.stderr + made.stdout)}")
    back = _docker(["start", "--checkpoint", "tbcp", cid], timeout=60)
    t2 = time.monotonic()
    if not back.ok:
        return Trial(False, f"docker start --checkpoint failed: {criu_error(back.stderr + back.stdout)}",
                     checkpoint_s=t1 - t0)
    after = _count(cid)
    if after is None or after < before:
        return Trial(False, f"restored container counts from {after}, was at {before}: memory not restored",
                     checkpoint_s=t1 - t0, restore_s=t2 - t1)
    return Trial(True, f"checkpoint {t1 - t0:.2f} s, restore {t2 - t1:.2f} s, count {before} -> {after}",
                 checkpoint_s=t1 - t0, restore_s=t2 - t1)


@lru_cache(maxsize=1)
def available() -> Trial:
    """The trial's outcome, tried once per process (live migration asks before anything starts)."""
    found = trial()
    log.debug("checkpoint/restore: %s (%s)", "works" if found.ok else "unavailable", found.reason)
    return found
