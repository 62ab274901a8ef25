"""Starts the NIC process inside its network namespace (testbed.daemon) and waits until its control socket answers."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from testbed import daemon, proc
from testbed.errors import TestbedError
from testbed.failsafe.config import NicConfig
from testbed.ledger import Ledger

log = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0


@dataclass
class NicProcess:
    """A running NIC process: its daemon (PID, control socket, log file) and its config."""

    daemon: daemon.Daemon
    config: NicConfig

    @property
    def pid(self) -> int:
        return self.daemon.pid

    @property
    def socket(self) -> Path:
        return self.daemon.socket

    @property
    def log_path(self) -> Path:
        return self.daemon.log_path

    @property
    def popen(self) -> proc.Process:
        return self.daemon.popen

    def alive(self) -> bool:
        """True while the process runs."""
        return self.daemon.alive()

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM (then SIGKILL after `timeout`) the NIC; its exit status."""
        return self.daemon.stop(timeout)


def datapaths(nics: dict[str, NicProcess]) -> str:
    """The manifest's NIC backend: which data path each running NIC uses (asked through its control socket)."""
    from testbed.failsafe.control import call

    names: dict[str, list[str]] = {}
    for node, nic in sorted(nics.items()):
        try:
            show = call(nic.socket, "show")
            name = str(show.get("datapath")) if isinstance(show, dict) else "unknown"  # type: ignore[union-attr]
        except (TestbedError, OSError):
            name = "unknown"
        names.setdefault(name, []).append(node)
    detail = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(names.items()))
    return f"testbed.failsafe ({detail})"


def nic_argv(config_path: Path) -> list[str]:
    """The NIC's command line (run inside its namespace by `start_nic`)."""
    return daemon.module_argv("testbed.failsafe.nic", "--config", config_path)


def start_nic(netns_pid: int, config: NicConfig, ledger: Ledger, run_dir: Path) -> NicProcess:
    """Write the config, start the NIC in `netns_pid`'s netns, record it, wait for its control socket."""
    if not config.control_socket:
        raise TestbedError(f"NIC {config.node}: config has no control_socket")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / f"nic-{config.node}.json"
    # The config and log are results kept in the run directory; only the socket is ours to remove.
    cfg_path.write_text(config.to_json(), encoding="utf-8")
    if config.datapath in ("auto", "bpf"):
        # the tc-BPF program, its clsact qdiscs and punt/copy veths live in the NIC's namespace and go
        # with it; a restarted NIC removes a SIGKILLed one's (datapath.detach_stale)
        for iface in (config.host_iface, config.net_iface, "tbp0", "tbc0"):
            ledger.record("qdisc", f"{config.node}/{iface}",
                          what=f"NIC {config.node} tc-BPF data path", netns_pid=netns_pid, inside_netns=True)
    d = daemon.start(f"fail-safe NIC {config.node}", nic_argv(cfg_path), socket=Path(config.control_socket),
                     log_path=run_dir / f"nic-{config.node}.log", ledger=ledger, netns_pid=netns_pid,
                     timeout=START_TIMEOUT_S)
    return NicProcess(d, config)
