"""Switches, controllers and hosts for ported scripts: the machine's OVS datapath, the project's os-ken controller."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

from mininet import node as mn
from mininet.node import CPULimitedHost as MininetCPULimitedHost
from mininet.util import errRun

from testbed import controller as osken, proc
from testbed.compat.machine import mininet_datapath, ovs_datapath
from testbed.emulation.plainhost import PlainHost, tolerant_decoder
from testbed.errors import SpecError, TestbedError
from testbed.ledger import LABEL, Ledger

log = logging.getLogger(__name__)

#: How long a started switch may take to connect to its controllers.
CONNECT_TIMEOUT_S = 30.0


class OVSSwitch(mn.OVSSwitch):
    """Mininet's OVSSwitch on the datapath this machine has; its bridge is tagged with the run id.

    `start()` returns once the bridge is connected to its controllers (read from ovsdb), so a
    `pingAll` right after it does not race the OpenFlow handshake.
    """

    def __init__(self, name: str, ledger: Ledger | None = None, **params: Any) -> None:
        params.setdefault("datapath", mininet_datapath())
        params.setdefault("protocols", "OpenFlow10,OpenFlow13")
        if params["datapath"] != "user" and ovs_datapath() != "kernel":
            raise SpecError(f"switch {name}.datapath", "the kernel datapath is not available here "
                            "(no openvswitch module); leave datapath out for the userspace one")
        self.ledger = ledger
        super().__init__(name, **params)

    def start(self, controllers: list) -> None:  # type: ignore[override]
        """Start the bridge (or queue its commands, in a batch), then tag it and wait for its controllers."""
        self._controllers = list(controllers)
        batched = self.batch
        super().start(controllers)
        if not batched:
            self._started()

    @classmethod
    def batchStartup(cls, switches: list, run: Any = errRun) -> list:  # noqa: N802
        """Mininet's batch start of many switches; then each is tagged and connected."""
        started = super().batchStartup(switches, run)
        for switch in switches:
            switch._started()
        return started

    def _started(self) -> None:
        """Tag the bridge with the run id (cleanup finds it by that too); wait until its controllers have it."""
        if not bridge_exists(self.name):
            raise TestbedError(f"switch {self.name}: Open vSwitch did not make the bridge")
        if self.ledger is not None:
            proc.run(["ovs-vsctl", "--timeout=10", "set", "bridge", self.name,
                      f"external_ids:{LABEL}={self.ledger.rid}"])
        if getattr(self, "_controllers", None) and self.failMode == "secure":
            osken.wait_connected([self.name], CONNECT_TIMEOUT_S)


class OVSKernelSwitch(OVSSwitch):
    """An OVSSwitch that insists on the kernel datapath: refused where there is no openvswitch module."""

    def __init__(self, name: str, **params: Any) -> None:
        params["datapath"] = "kernel"
        super().__init__(name, **params)


def bridge_exists(name: str) -> bool:
    """True when Open vSwitch has a bridge called `name` already."""
    return proc.run(["ovs-vsctl", "--timeout=5", "br-exists", name], check=False).returncode == 0


class Controller(mn.Controller):
    """The project's os-ken controller (by default its L2 learning switch; `app=` another) as a Mininet node.

    It listens on a free port of 127.0.0.1 chosen when it starts (a `port=` asked for is noted and
    replaced: a fixed port may be another run's); its process is in the run's ledger.
    """

    def __init__(self, name: str, ledger: Ledger | None = None, run_dir: Path | None = None,
                 app: str = osken.LEARNING, config: dict | None = None, port: int | None = None,
                 **params: Any) -> None:
        if ledger is None or run_dir is None:
            raise TestbedError(f"controller {name}: add it through the network (net.addController)")
        self.ledger, self.run_dir, self.app, self.config = ledger, Path(run_dir), app, config
        self.asked_port = port
        self.process = osken.Controller()
        params.pop("command", None)
        params.pop("cargs", None)
        super().__init__(name, command="python3 -m testbed.controller", port=port or 0, **params)

    def checkListening(self) -> None:  # noqa: N802
        """Nothing to check before start: our process picks a port nobody listens on."""

    def start(self) -> None:
        """Start os-ken (once) and set `port` to where it listens."""
        if self.process.alive():
            return
        self.port = self.process.start(self.run_dir / self.name, self.ledger, app=self.app, config=self.config)
        note = f" (port {self.asked_port} asked; the testbed picks a free one)" if self.asked_port else ""
        log.info("%s: os-ken %s on %s%s", self.name, self.app, self.process.target, note)

    def stop(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Stop our os-ken process, then the node's shell."""
        self.process.stop()
        mn.Node.stop(self, *args, **kwargs)

    def isListening(self, ip: str, port: int) -> bool:  # noqa: N802
        return self.process.alive()


class RemoteController(mn.RemoteController):
    """A controller the user runs; its address is checked by a TCP connect (no telnet needed)."""

    def checkListening(self) -> None:  # noqa: N802
        try:
            socket.create_connection((self.ip, self.port), timeout=2).close()
        except OSError:
            log.warning("no controller answers on %s:%s yet", self.ip, self.port)


def reference_controller(cls: Any, where: str) -> None:
    """Refuse Mininet's reference controllers whose program is not installed (they would fail later)."""
    programs = {mn.OVSController: ("ovs-testcontroller", "ovs-controller", "test-controller"),
                mn.Controller: ("controller",)}
    for klass, names in programs.items():
        if cls is klass:
            if not any(proc.which(n) for n in names):
                raise SpecError(where, f"Mininet's {cls.__name__} needs the program "
                                       f"{' or '.join(names)}, not installed here; use "
                                       f"testbed.compat.Controller (the project's os-ken controller)")
            return


class Host(PlainHost):
    """Mininet's Host (a namespace), with tolerant output decoding; its shell is in the ledger."""


class CPULimitedHost(MininetCPULimitedHost):
    """Mininet's CPULimitedHost; its cgroups are in the ledger, and one another run owns is refused."""

    CGROUP_ROOT = Path("/sys/fs/cgroup")
    takes_ledger = True

    def __init__(self, name: str, ledger: Ledger | None = None, sched: str = "cfs", **params: Any) -> None:
        if sched != "cfs" and not (self.CGROUP_ROOT / "cpu" / "cpu.rt_runtime_us").exists():
            raise SpecError(f"host {name}.sched", f"{sched!r} needs RT group scheduling, which this "
                                                  f"kernel lacks; use 'cfs'")
        dirs = [self.CGROUP_ROOT / c / name for c in ("cpu", "cpuacct", "cpuset")]
        taken = [str(d) for d in dirs if d.exists()]
        if taken:
            raise TestbedError(f"host {name}: cgroup {taken[0]} exists already (another run's "
                               f"CPULimitedHost {name}?)")
        if ledger is not None:
            for d in dirs:
                ledger.record("file", str(d), what=f"cgroup of {name}")
        super().__init__(name, sched=sched, **params)

    def startShell(self, mnopts: Any = None) -> None:  # noqa: N802
        self.decoder = tolerant_decoder()
        super().startShell(mnopts)

    def cgroup_dirs(self) -> list[Path]:
        """This host's cgroup directories (cpu, cpuacct, cpuset)."""
        return [self.CGROUP_ROOT / c / self.name for c in ("cpu", "cpuacct", "cpuset")]


__all__ = ["Controller", "CPULimitedHost", "Host", "OVSKernelSwitch", "OVSSwitch", "RemoteController",
           "bridge_exists", "reference_controller"]
