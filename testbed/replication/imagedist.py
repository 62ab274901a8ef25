"""Starting a service where its image is (pre-cached) or is not (shipped from the previous edge), phases timed.

Farris et al.'s Figs. 4 and 5. `startup` times `docker run` of an image already in the engine
until its container has run a command (create, start, exit). `ship` moves an image from one edge
host to another as the paper did: `docker save`, compress (gzip -1), send the archive over the
emulated WAN between the two hosts (`testbed.migration.transfer.copy_dir`: the state agent run in
both hosts' network namespaces, between their migration addresses, so the link's rate and delay
apply), `docker load`, run. Both edges here share one Docker engine, so at `load` the image's
layers are present already: that phase is a lower bound. The pull path (from a registry) is registry.py.
Every file and container is named with the run's prefix and recorded in its ledger first.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from testbed import proc
from testbed.ledger import LABEL, Ledger
from testbed.migration import transfer

log = logging.getLogger(__name__)
PORT = 47800
EVENTS = "images.jsonl"  # one line per phase of every shipment, in the run directory


def image_bytes(image: str) -> int:
    """The image's size in the engine (bytes)."""
    return int(proc.run(["docker", "image", "inspect", "--format", "{{.Size}}", image], timeout=30).stdout.strip())


def run_argv(ledger: Ledger, name: str, image: str) -> list[str]:
    """A container of `image` that runs `true` and is removed (no network: none is needed to start)."""
    return ["docker", "run", "--rm", "--name", name, "--label", f"{LABEL}={ledger.rid}", "--network", "none",
            image, "true"]


def startup(ledger: Ledger, image: str, n: int = 3) -> list[float]:
    """Seconds from `docker run` to the container's exit, `n` times, image pre-cached."""
    out = []
    for i in range(n):
        name = f"{ledger.prefix}start{i}"
        ledger.record("container", name)
        t0 = time.monotonic()
        proc.run(run_argv(ledger, name, image), timeout=120)
        out.append(time.monotonic() - t0)
    return out


def tiny_image(ledger: Ledger, work: Path) -> str:
    """A Busybox-sized image (about 2 MB: /bin/true and the libraries it links), imported and labelled with the run."""
    import tarfile

    name, tar = f"{ledger.prefix}/tiny", Path(work) / f"{ledger.prefix}tiny.tar"
    ledger.record("file", str(tar))
    ledger.record("image", name)
    libs = [w for line in proc.run(["ldd", "/bin/true"], timeout=10).stdout.splitlines()
            for w in line.split() if w.startswith("/")]
    with tarfile.open(tar, "w") as t:
        for path in ["/bin/true", *libs]:
            t.add(str(Path(path).resolve()), arcname=path.lstrip("/"))
    try:
        proc.run(["docker", "import", "--change", f"LABEL {LABEL}={ledger.rid}", str(tar), name], timeout=120)
    finally:
        tar.unlink(missing_ok=True)
    return name


def large_image(ledger: Ledger, work: Path, base: str, extra_mb: int = 200) -> str:
    """`base` plus a layer of `extra_mb` MB of random bytes (incompressible), committed and labelled with the run."""
    name, box, blob = f"{ledger.prefix}/large", f"{ledger.prefix}fig4large", Path(work) / f"{ledger.prefix}blob"
    ledger.record("file", str(blob))
    ledger.record("container", box)
    ledger.record("image", name)
    try:
        with open(blob, "wb") as f:
            for _ in range(extra_mb):
                f.write(os.urandom(1 << 20))
        proc.run(["docker", "create", "--name", box, "--label", f"{LABEL}={ledger.rid}", "--network", "none",
                  base, "true"], timeout=60)
        proc.run(["docker", "cp", str(blob), f"{box}:/blob"], timeout=300)
        proc.run(["docker", "commit", box, name], timeout=300)  # the container's label goes with the image
    finally:
        blob.unlink(missing_ok=True)
        proc.run(["docker", "rm", "-f", box], check=False, timeout=60)
    return name


def remove_images(ledger: Ledger) -> list[str]:
    """Remove the images labelled with this run (made by tiny_image/large_image); their names."""
    found = proc.run(["docker", "images", "--filter", f"label={LABEL}={ledger.rid}", "--format",
                      "{{.Repository}}:{{.Tag}}"], timeout=30).stdout.split()
    for name in found:
        proc.run(["docker", "rmi", "-f", name], check=False, timeout=120)
    return found


@dataclass
class Shipment:
    """One image shipped between two edges: sizes and each phase's seconds."""

    image: str
    image_bytes: int
    archive_bytes: int = 0  # the compressed image: the gzip'd archive (save path), the registry's blobs (pull)
    sent_bytes: int = 0  # what crossed the emulated network
    phases_s: dict[str, float] = field(default_factory=dict)  # the start: (transfer | pull), load, run, ...
    path: str = "save"  # save (docker save, compress, send) | pull (from a registry: registry.py)
    requests: int = 0  # HTTP requests of a pull
    setup_s: dict[str, float] = field(default_factory=dict)  # preparing the source (a registry's save, push)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Phases:
    """Times each phase of a shipment into a dict, and writes it to the run's images.jsonl (the events)."""

    def __init__(self, run_dir: Path, result: Shipment, src: str, dst: str) -> None:
        self.events, self.result, self.where = Path(run_dir) / EVENTS, result, {"src": src, "dst": dst}

    def __call__(self, phase: str, fn: Callable[[], Any], into: dict[str, float] | None = None) -> Any:
        into = self.result.phases_s if into is None else into
        t0 = time.monotonic()
        value = fn()
        into[phase] = round(time.monotonic() - t0, 3)
        with open(self.events, "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": time.time(), "image": self.result.image, "path": self.result.path,
                                **self.where, "phase": phase, "s": into[phase]}) + "\n")
        return value


def ship(tb: Any, image: str, src: str, dst: str, work: Path) -> Shipment:
    """save | compress | transfer src -> dst over the emulated network | load | run; each phase timed."""
    ledger = tb.ledger
    outbox, inbox = work / f"{ledger.prefix}out", work / f"{ledger.prefix}in"
    for d in (outbox, inbox):
        ledger.record("file", str(d))
        d.mkdir(parents=True, exist_ok=True)
    tar = outbox / "image.tar"
    result = Shipment(image, image_bytes(image))
    timed = Phases(tb.run_dir, result, src, dst)
    try:
        timed("save", lambda: proc.run(["docker", "save", "-o", str(tar), image], timeout=600))
        timed("compress", lambda: proc.run(["gzip", "-1", "-f", str(tar)], timeout=600))
        result.archive_bytes = (outbox / "image.tar.gz").stat().st_size
        result.sent_bytes = timed("transfer", lambda: send_dir(tb, src, dst, outbox, inbox))
        timed("load", lambda: proc.run(["docker", "load", "-i", str(inbox / "image.tar.gz")], timeout=600))
        name = f"{ledger.prefix}shipped"
        ledger.record("container", name)
        timed("run", lambda: proc.run(run_argv(ledger, name, image), timeout=120))
    finally:
        for d in (outbox, inbox):
            shutil.rmtree(d, ignore_errors=True)
    return result


def send_dir(tb: Any, src: str, dst: str, outbox: Path, inbox: Path) -> int:
    """Send directory `outbox` from host `src` to `inbox` on host `dst`, over the emulated network; bytes sent."""
    return transfer.copy_dir(tb, src, dst, outbox, inbox, PORT, "image", timeout=900)


def expected_transfer_s(nbytes: int, rate_mbit: float, rtt_s: float, handshakes: int = 3) -> float:
    """What sending `nbytes` over TCP should take on a link of `rate_mbit` and round trip `rtt_s`: frames / rate + handshakes."""
    from testbed.linkemu.schedule import TCP_FRAME, TCP_MSS

    wire = nbytes + -(-nbytes // TCP_MSS) * (TCP_FRAME - TCP_MSS)  # each segment's headers count against the rate
    return wire * 8 / (rate_mbit * 1e6) + handshakes * rtt_s
