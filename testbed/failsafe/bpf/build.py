"""Compiles nic.bpf.c with clang into .build/bpf/nic.bpf.o (at set-up, and again whenever the source is newer).

`python -m testbed.failsafe.bpf.build` is the set-up step (scripts/setup.sh); `ensure_object()` is what
the NIC and `testbed doctor` call: the object's path, or a TestbedError saying why there is none.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

from testbed import proc
from testbed.errors import TestbedError

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("nic.bpf.c")
OBJECT = Path(__file__).resolve().parents[3] / ".build" / "bpf" / "nic.bpf.o"
INCLUDE = "/usr/include/x86_64-linux-gnu"


def clang_argv(source: Path = SOURCE, obj: Path = OBJECT) -> list[str]:
    """The compile command (no vmlinux.h needed: UAPI headers only)."""
    return ["clang", "-O2", "-g", "-Wall", "-target", "bpf", f"-I{INCLUDE}", "-c", str(source), "-o", str(obj)]


def ensure_object(source: Path = SOURCE, obj: Path = OBJECT) -> Path:
    """The compiled object, built now if missing or older than its source."""
    if obj.exists() and obj.stat().st_mtime >= source.stat().st_mtime:
        return obj
    if shutil.which("clang") is None:
        raise TestbedError(f"BPF data path: {obj} is not built and clang is not installed (scripts/setup.sh)")
    obj.parent.mkdir(parents=True, exist_ok=True)
    tmp = obj.with_suffix(".tmp.o")
    res = proc.run(clang_argv(source, tmp), timeout=120.0, check=False)
    if not res.ok:
        tmp.unlink(missing_ok=True)
        raise TestbedError(f"BPF data path: clang failed on {source}: {res.stderr.strip()[-500:]}")
    tmp.replace(obj)
    return obj


def main() -> int:
    """Build the object; exit 1 with the reason if it cannot be built."""
    try:
        print(ensure_object())
    except TestbedError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
