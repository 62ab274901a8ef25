"""Control interface of the NIC (paper 3.6): where its socket is; the protocol is testbed.control's.

The NIC serves `testbed.control.ControlServer` on `RUN_ROOT/<run>/nic-<node>.sock` with the
handlers of `control_handlers`; `testbed failsafe NODE CMD ...` finds that socket with `socket_for`
and sends one request with `call`. The names below are re-exported for the NIC's callers.
"""

from __future__ import annotations

from pathlib import Path

from testbed.control import MAX_CLIENTS, MAX_REQUEST, ControlServer, call  # noqa: F401 - re-exported
from testbed.errors import UsageError
from testbed.ledger import RUN_ROOT

__all__ = ["MAX_CLIENTS", "MAX_REQUEST", "ControlServer", "call", "socket_path", "socket_for"]


def socket_path(rid: str, node: str) -> Path:
    """Where the NIC of `node` in run `rid` listens."""
    return RUN_ROOT / rid / f"nic-{node}.sock"


def socket_for(node: str, rid: str | None = None) -> Path:
    """The control socket of `node`'s NIC (in run `rid`, or the only run that has one)."""
    if rid is not None:
        path = socket_path(rid, node)
        if not path.exists():
            raise UsageError(f"no fail-safe NIC for {node!r} in run {rid} (no {path})")
        return path
    found = sorted(RUN_ROOT.glob(f"*/nic-{node}.sock")) if RUN_ROOT.is_dir() else []
    if not found:
        raise UsageError(f"no running fail-safe NIC for {node!r} (nothing at {RUN_ROOT}/*/nic-{node}.sock)")
    if len(found) > 1:
        runs = ", ".join(p.parent.name for p in found)
        raise UsageError(f"{node!r} has a NIC in several runs ({runs}): choose one with --run RID")
    return found[0]
