"""The pull path of image distribution: a local registry in an emulated host, pulled from across the topology.

Debian's `docker-registry` (distribution 2.8) runs as a process in the network namespace of an
edge host (`nsenter -t PID -n`), listening on that host's migration address, its storage a
directory of the run. The image is pushed to it from inside the same namespace (registry_client.py:
the `docker save` archive's layers gzip'd and uploaded, a schema-2 manifest put; not timed as part
of the start). A pull is then the same client in the destination host's namespace fetching the
manifest and blobs over HTTP, so it crosses the emulated links (their rate and delay apply),
writing an archive `docker load` takes; then `docker load`, then run. The Docker engine itself
pulls from the root namespace, which has no route into the topology: hence the client.
Both edges share one engine, so `load` finds the layers present already (a lower bound, as for `ship`).
Where the binary is missing, `RegistryUnavailable` (exit 2) says so; nothing is faked.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from testbed import proc
from testbed.emulation.netns import nsenter
from testbed.errors import TestbedError
from testbed.migration import transfer
from testbed.replication.imagedist import Phases, Shipment, image_bytes, run_argv

log = logging.getLogger(__name__)
BINARY = "docker-registry"
PORT = 47900
CLIENT = Path(__file__).with_name("registry_client.py")


class RegistryUnavailable(TestbedError):
    """The pull path was asked for where no registry binary is installed; exit code 2."""

    exit_code = 2


def probe() -> tuple[bool, str]:
    """Whether Debian's docker-registry is installed, and its version (for `testbed doctor`)."""
    path = proc.which(BINARY)
    if path is None:
        return False, f"{BINARY} is not installed"
    res = proc.run([path, "--version"], check=False, timeout=10)
    text = (res.stdout or res.stderr).strip().splitlines()
    return res.ok, text[0] if text else f"{BINARY} --version exited {res.returncode}"


def require() -> str:
    """The registry binary's path; RegistryUnavailable (exit 2) naming what is missing."""
    ok, why = probe()
    if not ok:
        raise RegistryUnavailable(f"image pull path: registry unavailable ({why}; apt install docker-registry)")
    return str(proc.which(BINARY))


def config_text(root: Path, addr: str) -> str:
    """The registry's config.yml: file system storage under `root`, HTTP on `addr`, no auth (pure)."""
    return json.dumps({  # JSON is YAML
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root)}, "delete": {"enabled": True}},
        "http": {"addr": addr},
    }, indent=1) + "\n"


def client_argv(pid: int, args: list[Any]) -> list[str]:
    """registry_client.py run in the network namespace of process `pid` (pure)."""
    return nsenter(pid, [sys.executable, "-u", str(CLIENT), *[str(a) for a in args]])


def client(pid: int, args: list[Any], timeout: float) -> dict:
    """Run the client to its end; the JSON line it printed."""
    res = proc.run(client_argv(pid, args), timeout=timeout)
    found = transfer.lines_of(res.stdout)
    if not found:
        raise TestbedError(f"registry client {args[0]} printed nothing: {res.stderr.strip()[-200:]}")
    return found[-1]


class Registry:
    """One registry process in host `host`'s namespace, recorded in the run's ledger; `with` stops it."""

    def __init__(self, tb: Any, host: str, work: Path, port: int = PORT) -> None:
        self.tb, self.host, self.port = tb, host, port
        self.dir = Path(work) / f"{tb.ledger.prefix}registry"
        self.popen: proc.Process | None = None
        self.ip = ""

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"

    def __enter__(self) -> "Registry":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Write its config, start it in the host's namespace (PID recorded first), wait until it answers."""
        binary = require()
        ledger = self.tb.ledger
        self.ip = transfer.ensure_address(self.tb, self.host)
        ledger.record("file", str(self.dir))
        (self.dir / "storage").mkdir(parents=True, exist_ok=True)
        cfg = self.dir / "config.yml"
        cfg.write_text(config_text(self.dir / "storage", f"{self.ip}:{self.port}"))
        what = f"image registry on {self.host}"
        self.popen = proc.spawn(nsenter(self.tb.node(self.host).pid, [binary, "serve", str(cfg)]),
                                output=Path(self.tb.run_dir) / "registry.log",
                                on_start=lambda pid: ledger.record_process(pid, what))
        try:
            client(self.tb.node(self.host).pid, ["wait", self.url, 30], timeout=40)
        except BaseException:
            self.stop()
            raise
        log.info("%s at %s", what, self.url)

    def stop(self) -> None:
        """Stop the process and remove its storage."""
        if self.popen is not None:
            proc.stop(self.popen, timeout=5)
            self.popen = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def push(self, image: str, saved: Path) -> dict:
        """Push `docker save` archive `saved` of `image` from inside the registry's host; what the client said."""
        repo, tag = repo_tag(image)
        return client(self.tb.node(self.host).pid, ["push", self.url, repo, tag, saved], timeout=600)


def repo_tag(image: str) -> tuple[str, str]:
    """`name[:tag]` as (repository, tag), `latest` by default (pure)."""
    if ":" in image.rsplit("/", 1)[-1]:
        name, tag = image.rsplit(":", 1)
        return name, tag
    return image, "latest"


def pull(tb: Any, image: str, src: str, dst: str, work: Path) -> Shipment:
    """A registry on `src` holding `image`; `dst` pulls it over the emulated network, loads, runs; each phase timed."""
    require()
    ledger = tb.ledger
    box = Path(work) / f"{ledger.prefix}pull"
    ledger.record("file", str(box))
    box.mkdir(parents=True, exist_ok=True)
    result = Shipment(image, image_bytes(image), path="pull")
    timed = Phases(tb.run_dir, result, src, dst)

    try:
        with Registry(tb, src, work) as reg:
            saved, pulled = box / "saved.tar", box / "pulled.tar"
            timed("save", lambda: proc.run(["docker", "save", "-o", str(saved), image], timeout=600), result.setup_s)
            pushed = timed("push", lambda: reg.push(image, saved), result.setup_s)
            saved.unlink()
            result.archive_bytes = int(pushed["blob_bytes"])
            repo, tag = repo_tag(image)
            got = timed("pull", lambda: client(tb.node(dst).pid, ["pull", reg.url, repo, tag, pulled,
                                                                   f"{repo}:{tag}"], timeout=900))
            result.sent_bytes, result.requests = int(got["bytes"]), int(got["requests"])
        timed("load", lambda: proc.run(["docker", "load", "-i", str(pulled)], timeout=600))
        name = f"{ledger.prefix}pulled"
        ledger.record("container", name)
        timed("run", lambda: proc.run(run_argv(ledger, name, image), timeout=120))
    finally:
        shutil.rmtree(box, ignore_errors=True)
    return result
