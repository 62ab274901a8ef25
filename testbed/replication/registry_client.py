"""A registry v2 HTTP client run in a host's network namespace: wait for, push to and pull from a registry.

Run as a script (standard library only) through `nsenter -t PID -n`, so its connection leaves from
that host and crosses the topology's links. One command per run, one JSON line printed at the end:

    wait URL SECONDS                      until GET /v2/ answers 200: {"ready": seconds}
    push URL REPO TAG SAVED_TAR           a `docker save` archive, each layer gzip'd (as `docker push`
                                          does), blobs then a schema-2 manifest: {"pushed": bytes, ...}
    pull URL REPO TAG OUT_TAR IMAGE       manifest and blobs (digests checked), written as an archive
                                          `docker load` takes, tagged IMAGE: {"bytes": body bytes, ...}
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import IO, Any

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CHUNK = 1 << 16


class Client:
    """One keep-alive HTTP connection to the registry; counts requests and body bytes received."""

    def __init__(self, url: str, timeout: float = 600.0) -> None:
        u = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
        self.requests = 0
        self.received = 0

    def request(self, method: str, path: str, body: Any = None, headers: dict | None = None,
                expect: tuple[int, ...] = (200,)) -> http.client.HTTPResponse:
        self.requests += 1
        self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        if resp.status not in expect:
            text = resp.read()[:300].decode(errors="replace")
            raise SystemExit(f"{method} {path}: HTTP {resp.status} {text}")
        return resp

    def read_all(self, resp: http.client.HTTPResponse) -> bytes:
        data = resp.read()
        self.received += len(data)
        return data


def wait(url: str, seconds: float) -> dict:
    """Until GET /v2/ answers 200 (the registry is serving); seconds waited."""
    t0 = time.monotonic()
    while True:
        try:
            c = Client(url, timeout=2)
            c.read_all(c.request("GET", "/v2/"))
            return {"ready": round(time.monotonic() - t0, 3)}
        except (OSError, http.client.HTTPException, SystemExit) as exc:
            if time.monotonic() - t0 > seconds:
                raise SystemExit(f"registry at {url} did not answer within {seconds:g} s: {exc}")
            time.sleep(0.05)  # a refused connect returns at once: poll the evidence, not a guess


def _gzip_to(src: IO[bytes], dst: IO[bytes]) -> tuple[str, int]:
    """Compress `src` into `dst` (level 6, as Go's default), hashing the output: (digest, size)."""
    h, size = hashlib.sha256(), 0

    class Tee:
        def write(self, b: bytes) -> int:
            nonlocal size
            h.update(b)
            size += len(b)
            return dst.write(b)

        def flush(self) -> None:
            dst.flush()

    with gzip.GzipFile(fileobj=Tee(), mode="wb", compresslevel=6, mtime=0) as z:  # type: ignore[arg-type]
        shutil.copyfileobj(src, z, CHUNK)
    return "sha256:" + h.hexdigest(), size


def _upload(c: Client, repo: str, digest: str, size: int, body: IO[bytes]) -> bool:
    """One blob (skipped when the registry has it); True when it was sent."""
    head = c.request("HEAD", f"/v2/{repo}/blobs/{digest}", expect=(200, 404))
    c.read_all(head)
    if head.status == 200:
        return False
    start = c.request("POST", f"/v2/{repo}/blobs/uploads/", expect=(202,))
    c.read_all(start)
    loc = urllib.parse.urlsplit(start.getheader("Location", ""))
    path = loc.path + "?" + (loc.query + "&" if loc.query else "") + urllib.parse.urlencode({"digest": digest})
    c.read_all(c.request("PUT", path, body=body, headers={"Content-Length": str(size),
                                                           "Content-Type": "application/octet-stream"},
                         expect=(201,)))
    return True


def push(url: str, repo: str, tag: str, saved: str) -> dict:
    """Push the image in `docker save` archive `saved` as REPO:TAG; bytes of the blobs it holds."""
    c = Client(url)
    layers, sent = [], 0
    with tarfile.open(saved) as tar, tempfile.TemporaryDirectory() as tmp:
        entry = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = tar.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
        for i, name in enumerate(entry["Layers"]):
            gz = Path(tmp) / f"{i}.gz"
            with tar.extractfile(name) as src, open(gz, "wb") as dst:  # type: ignore[union-attr]
                digest, size = _gzip_to(src, dst)
            with open(gz, "rb") as body:
                sent += size if _upload(c, repo, digest, size, body) else 0
            gz.unlink()
            layers.append({"mediaType": LAYER_GZIP, "size": size, "digest": digest})
    cdigest = "sha256:" + hashlib.sha256(config).hexdigest()
    sent += len(config) if _upload(c, repo, cdigest, len(config), config) else 0  # type: ignore[arg-type]
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_V2,
                           "config": {"mediaType": CONFIG_V1, "size": len(config), "digest": cdigest},
                           "layers": layers}).encode()
    c.read_all(c.request("PUT", f"/v2/{repo}/manifests/{tag}", body=manifest,
                         headers={"Content-Type": MANIFEST_V2}, expect=(201,)))
    return {"pushed": sent, "blobs": len(layers) + 1, "blob_bytes": sum(l["size"] for l in layers) + len(config),
            "requests": c.requests}


class _Hashing:
    """A reader over a response that hashes and counts what it gives."""

    def __init__(self, resp: http.client.HTTPResponse) -> None:
        self.resp, self.h, self.n = resp, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        b = self.resp.read(n)
        self.h.update(b)
        self.n += len(b)
        return b


def _add(tar: tarfile.TarFile, name: str, size: int, src: Any) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = size, int(time.time())
    tar.addfile(info, src)


def pull(url: str, repo: str, tag: str, out: str, image: str) -> dict:
    """Pull REPO:TAG into a `docker load` archive `out` tagged `image`; body bytes and requests made."""
    c = Client(url)
    c.read_all(c.request("GET", "/v2/"))  # as a docker pull starts: the API version check
    manifest = json.loads(c.read_all(c.request("GET", f"/v2/{repo}/manifests/{tag}",
                                               headers={"Accept": MANIFEST_V2})))
    entries = []
    with tarfile.open(out, "w") as tar:
        for blob in [manifest["config"], *manifest["layers"]]:
            digest, size = blob["digest"], blob["size"]
            resp = c.request("GET", f"/v2/{repo}/blobs/{digest}")
            src = _Hashing(resp)
            hexd = digest.split(":", 1)[1]
            name = f"{hexd}.json" if blob is manifest["config"] else f"{hexd}/layer.tar"
            _add(tar, name, size, src)
            c.received += src.n
            if "sha256:" + src.h.hexdigest() != digest or resp.read(1):
                raise SystemExit(f"blob {digest}: content does not match its digest")
            entries.append(name)
        load = json.dumps([{"Config": entries[0], "RepoTags": [image], "Layers": entries[1:]}]).encode()
        _add(tar, "manifest.json", len(load), io.BytesIO(load))
    return {"bytes": c.received, "blobs": len(entries), "requests": c.requests}


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    if cmd == "wait":
        result = wait(args[0], float(args[1]))
    elif cmd == "push":
        result = push(*args[:4])
    elif cmd == "pull":
        result = pull(*args[:5])
    else:
        raise SystemExit(f"unknown command {cmd!r} (wait, push, pull)")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
