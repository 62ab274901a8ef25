"""`clean_run` removes the images a run built (left behind as after a SIGKILL), and no image not of the run."""

from __future__ import annotations

import secrets
import tarfile
from pathlib import Path

from testbed import ledger, proc
from testbed.clean import clean_run
from testbed.ledger import LABEL, Ledger
from testbed.replication.imagedist import tiny_image


def _exists(image: str) -> bool:
    return proc.run(["docker", "image", "inspect", image], check=False, timeout=30).ok


def _import(tar: Path, name: str, *change: str) -> str:
    proc.run(["docker", "import", *[a for c in change for a in ("--change", c)], str(tar), name], timeout=120)
    return name


def test_clean_run_removes_the_runs_image_only(tmp_path: Path) -> None:
    rid = ledger.new_run_id()
    book = Ledger(rid)
    image = tiny_image(book, tmp_path)  # not removed: what a SIGKILLed run leaves behind
    tar = tmp_path / "true.tar"
    with tarfile.open(tar, "w") as t:
        t.add("/bin/true", arcname="bin/true")
    tag = secrets.token_hex(3)
    outsiders = [_import(tar, f"{book.prefix}/outsider{tag}"),  # the run's prefix, no label
                 _import(tar, f"{book.prefix}/other{tag}", f"LABEL {LABEL}=ffff"),  # another run's label
                 _import(tar, f"outsider{tag}/tiny", f"LABEL {LABEL}={rid}")]  # the label, not the prefix
    try:
        assert any(r.kind == "image" and r.name == image for r in ledger.read(rid)), "recorded before built"
        assert _exists(image)
        out = clean_run(rid)
        assert not out.failed, out.failed
        assert f"image {image}:latest" in out.removed
        assert not _exists(image)
        assert [o for o in outsiders if _exists(o)] == outsiders
        assert list(ledger.read(rid)) == []
    finally:
        for name in [image, *outsiders]:
            proc.run(["docker", "rmi", "-f", name], check=False, timeout=60)
    assert not any(_exists(n) for n in [image, *outsiders])
