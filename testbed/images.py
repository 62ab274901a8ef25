"""Builds the testbed's images: an offline base from Debian/Ubuntu packages, then images/<name>/."""

from __future__ import annotations

import hashlib
import logging
import platform
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from testbed import proc
from testbed.errors import TestbedError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = ROOT / "images"
BASE_TAG = "testbed/base"
INPUTS_LABEL = "testbed.inputs"
BASE_PACKAGES = ("python3", "iproute2", "iputils-ping", "iperf3", "net-tools", "ethtool", "procps",
                 "bash", "ca-certificates")


@dataclass(frozen=True)
class Distro:
    """The distribution the base image is bootstrapped from: the host's own, from its own mirror."""

    id: str
    codename: str
    mirror: str

    @property
    def components(self) -> str:
        return "main,universe" if self.id == "ubuntu" else "main"


def _os_release() -> dict[str, str]:
    text = Path("/etc/os-release").read_text()
    return {k: v.strip('"') for k, _, v in (l.partition("=") for l in text.splitlines()) if k}


def apt_mirrors(codename: str, sources: list[Path] | None = None) -> list[str]:
    """URIs in the machine's apt sources that serve suite `codename` (one-line and deb822 files)."""
    files = sources if sources is not None else [Path("/etc/apt/sources.list"),
                                                 *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    found: list[str] = []
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
                if "deb" in fields.get("Types", "").split() and codename in fields.get("Suites", "").split():
                    found += fields.get("URIs", "").split()
        else:
            for line in text.splitlines():
                parts = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[2] == codename:
                    found.append(parts[1])
    return found


def host_distro() -> Distro:
    """This machine's distribution and the mirror its apt uses for it."""
    rel = _os_release()
    codename = rel.get("VERSION_CODENAME", "")
    mirrors = apt_mirrors(codename)
    if not codename or not mirrors:
        raise TestbedError(f"cannot find an apt mirror for '{codename or rel.get('ID')}' in /etc/apt: "
                           "the offline base image is bootstrapped from the machine's own mirror")
    return Distro(rel.get("ID", "debian"), codename, mirrors[0])


def _docker():
    import docker

    try:
        return docker.from_env(timeout=600)
    except Exception as exc:
        raise TestbedError(f"no Docker engine answers ({exc}); run scripts/setup.sh services") from None


def _label(client, tag: str) -> str | None:
    try:
        return (client.images.get(tag).labels or {}).get(INPUTS_LABEL)
    except Exception:
        return None


def base_inputs(distro: Distro) -> str:
    """A digest of what makes the base image, so it is rebuilt only when that changes."""
    text = f"{distro.id} {distro.codename} {platform.machine()} {' '.join(BASE_PACKAGES)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_base(work: Path, force: bool = False) -> str:
    """Make `testbed/base` offline: debootstrap into a directory, then `docker import` it."""
    client = _docker()
    distro = host_distro()
    digest = base_inputs(distro)
    if not force and _label(client, BASE_TAG) == digest:
        log.info("%s is up to date", BASE_TAG)
        return "up to date"
    rootfs, tar = work / "base-rootfs", work / "base.tar"
    shutil.rmtree(rootfs, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    log.info("bootstrapping %s %s from %s (takes a minute)", distro.id, distro.codename, distro.mirror)
    try:
        proc.run(["debootstrap", "--variant=minbase", f"--components={distro.components}",
                  f"--include={','.join(BASE_PACKAGES)}", distro.codename, str(rootfs), distro.mirror],
                 timeout=1200)
        proc.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], timeout=600)
        client.api.import_image_from_file(
            str(tar), repository=BASE_TAG, tag="latest",
            changes=[f"LABEL {INPUTS_LABEL}={digest}", 'CMD ["bash"]'])
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
        tar.unlink(missing_ok=True)
    return "built"


def image_names() -> list[str]:
    """Every directory under images/ that has a Dockerfile."""
    return sorted(p.parent.name for p in IMAGES_DIR.glob("*/Dockerfile"))


def image_list() -> list[dict]:
    """The base and every image under images/: tag, whether it is built (None: no engine answers), its id."""
    tags = [BASE_TAG] + [f"testbed/{name}" for name in image_names()]
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
    except Exception:
        return [{"tag": tag, "built": None, "id": None} for tag in tags]
    rows = []
    for tag in tags:
        try:
            rows.append({"tag": tag, "built": True, "id": client.images.get(tag).id})
        except Exception:
            rows.append({"tag": tag, "built": False, "id": None})
    return rows


def _ignored(path: Path, context: Path) -> bool:
    """Files that are not inputs: Python caches left by tests that import an image's program."""
    rel = path.relative_to(context)
    return "__pycache__" in rel.parts or path.suffix == ".pyc"


def context_inputs(context: Path, base_id: str) -> str:
    """A digest of an image's build context and its base, so it is rebuilt only when they change."""
    h = hashlib.sha256(base_id.encode())
    for f in sorted(p for p in context.rglob("*") if p.is_file() and not _ignored(p, context)):
        h.update(str(f.relative_to(context)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def build_image(name: str, base: str = BASE_TAG, force: bool = False) -> str:
    """Build images/<name>/Dockerfile as testbed/<name>, unless its inputs are unchanged."""
    client = _docker()
    context = IMAGES_DIR / name
    if not (context / "Dockerfile").exists():
        raise TestbedError(f"no image called {name!r}: images/{name}/Dockerfile does not exist")
    try:
        base_id = client.images.get(base).id
    except Exception:
        base_id = base  # a registry image the build will pull
    digest = context_inputs(context, base_id)
    tag = f"testbed/{name}"
    if not force and _label(client, tag) == digest:
        return "up to date"
    try:
        client.images.build(path=str(context), tag=tag, rm=True, forcerm=True, pull=False,
                            buildargs={"BASE": base}, labels={INPUTS_LABEL: digest})
    except Exception as exc:
        raise TestbedError(f"building {tag} failed: {exc}") from None
    return "built"


def build_all(work: Path, names: list[str] | None = None, base: str = BASE_TAG,
              force: bool = False) -> dict[str, str]:
    """Build the base (when it is ours) and the named images (default: all); what happened to each."""
    done: dict[str, str] = {}
    if base == BASE_TAG:
        done[BASE_TAG] = build_base(work, force)
    for name in names or image_names():
        done[f"testbed/{name}"] = build_image(name, base, force)
    return done
