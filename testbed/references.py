"""References from input files to things outside them (Docker images), checked before anything starts."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Iterable

from testbed.errors import SpecError
from testbed.topology.checks import host_path
from testbed.topology.model import TopologySpec

log = logging.getLogger(__name__)

_TESTBED_IMAGE = re.compile(r"^testbed/([A-Za-z0-9][A-Za-z0-9_.-]*)(?::latest)?$")


@dataclass(frozen=True)
class ImageRef:
    """One place a file names a Docker image: the file, the key path inside it, the image."""

    source: str
    path: str
    image: str


def topology_images(topo: TopologySpec, source: str) -> list[ImageRef]:
    """The images the Docker hosts of `topo` (read from `source`) run."""
    return [ImageRef(source, f"{host_path(h.site, h.name)}.image", h.image) for h in topo.hosts() if h.image]


def buildable(image: str) -> str | None:
    """The images/<name>/ directory name when `image` is `testbed/<name>` and its Dockerfile exists."""
    from testbed.images import IMAGES_DIR

    m = _TESTBED_IMAGE.match(image)
    return m.group(1) if m and (IMAGES_DIR / m.group(1) / "Dockerfile").is_file() else None


def local_images(names: Iterable[str]) -> tuple[set[str] | None, str]:
    """Which of `names` the local Docker engine has, or (None, why) when no engine answers."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as exc:  # any failure to reach the engine: say so, do not guess
        return None, " ".join(str(exc).split())[:120] or type(exc).__name__
    found: set[str] = set()
    try:
        for name in set(names):
            try:
                client.images.get(name)
                found.add(name)
            except docker.errors.ImageNotFound:
                pass
    except Exception as exc:
        return None, " ".join(str(exc).split())[:120] or type(exc).__name__
    finally:
        client.close()
    return found, ""


def check_images(refs: list[ImageRef]) -> None:
    """SpecError at the first image that is neither in the local engine nor buildable from images/<name>/.

    With no engine answering, the images cannot be checked: that is logged in one line, not an error
    (`testbed run` reports the engine itself when it needs it).
    """
    if not refs:
        return
    found, why = local_images(r.image for r in refs)
    if found is None:
        log.warning("images not checked: no Docker engine answers (%s)", why)
        return
    for ref in refs:
        if ref.image in found:
            continue
        name = buildable(ref.image)
        if name is None:
            raise SpecError(ref.path, f"no Docker image {ref.image!r} here (not in the local engine, and no "
                                      f"images/<name>/Dockerfile builds it)", ref.source)
        log.warning("%s: %s: image %s is not built yet; `testbed images build %s` makes it",
                    ref.source, ref.path, ref.image, name)
