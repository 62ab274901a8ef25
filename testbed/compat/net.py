"""Mininet and Containernet for ported scripts: the machine's switch, the project's controller and links, a run id."""

from __future__ import annotations

import atexit
import logging
import re
import time
from functools import partial
from pathlib import Path
from typing import Any

from mininet import node as mn
from mininet.log import info, output
from mininet.util import waitListening

from testbed import clean
from testbed.compat.docker import Docker
from testbed.compat.link import TCLink, intf_preset, link_class
from testbed.compat.machine import link_backend_name
from testbed.compat.nodes import (Controller, CPULimitedHost, Host, OVSSwitch, RemoteController,
                                  bridge_exists, reference_controller)
from testbed.compat.params import unwrap
from testbed.emulation.net import TestbedNet
from testbed.errors import SpecError, TestbedError
from testbed.ledger import RUN_ROOT, Ledger, new_run_id
from testbed.links.base import LinkBackend

log = logging.getLogger(__name__)


def _with(cls: Any, preset: dict[str, Any]) -> Any:
    """`cls` with its preset options again (as the script's partial or custom() had them)."""
    return partial(cls, **preset) if preset else cls


def switch_factory(factory: Any, where: str) -> Any:
    """The testbed switch for a switch class a script names (Mininet's OVSSwitch maps to ours)."""
    cls, preset = unwrap(factory)
    if cls is mn.OVSBridge:
        return _with(OVSSwitch, {"failMode": "standalone", **preset})
    if cls is mn.OVSSwitch:  # also Mininet's OVSKernelSwitch, which is the same class
        return _with(OVSSwitch, preset)
    if isinstance(cls, type) and issubclass(cls, OVSSwitch):
        return _with(cls, preset)
    raise SpecError(where, f"switch class {getattr(cls, '__name__', cls)} is not available here; use "
                           f"OVSSwitch (Open vSwitch on this machine's datapath)")


def host_factory(factory: Any, where: str) -> Any:
    """The testbed host for a host class a script names (Host and CPULimitedHost map to ours)."""
    cls, preset = unwrap(factory)
    mapped = {mn.Host: Host, mn.CPULimitedHost: CPULimitedHost}.get(cls, cls)
    if not (isinstance(mapped, type) and issubclass(mapped, mn.Host)):
        raise SpecError(where, f"host class {getattr(cls, '__name__', cls)} is not a Mininet Host")
    return _with(mapped, preset)


def controller_factory(factory: Any, where: str) -> Any:
    """The controller for a controller class a script names; a reference one not installed is refused."""
    if factory is None:
        return None
    cls, preset = unwrap(factory)
    if cls is mn.RemoteController:
        return _with(RemoteController, preset)
    if isinstance(cls, type) and issubclass(cls, (Controller, RemoteController)):
        return _with(cls, preset)
    if cls in (mn.Controller, mn.OVSController):
        reference_controller(cls, where)
        return _with(cls, preset)
    if isinstance(cls, type) and issubclass(cls, mn.Controller):
        return _with(cls, preset)
    raise SpecError(where, f"{getattr(cls, '__name__', cls)} is not a controller class")


class Mininet(TestbedNet):
    """Mininet whose defaults are this machine's; `from testbed.compat import Mininet` is the whole port.

    Defaults: OVSSwitch on the datapath `testbed doctor` finds, the project's os-ken controller,
    TCLink emulated by netem or the userspace emulator, a run id whose ledger lets
    `testbed clean --run ID` remove everything after a crash. The run id is printed at the start.
    """

    def __init__(self, topo: Any = None, switch: Any = OVSSwitch, host: Any = Host,
                 controller: Any = Controller, link: Any = TCLink, intf: Any = None,
                 ledger: Ledger | None = None, run_dir: Path | str | None = None, **params: Any) -> None:
        self.owns_ledger = ledger is None
        if ledger is None:
            rid = new_run_id()
            ledger = Ledger(rid, Path(run_dir) if run_dir else None)
            state = RUN_ROOT / rid
            ledger.record("file", str(state))
            state.mkdir(parents=True, exist_ok=True)
        self.run_dir = Path(run_dir) if run_dir else RUN_ROOT / ledger.rid
        self.rid = ledger.rid
        self._backend: LinkBackend | None = None
        self._stopped = False
        intf_preset(intf, "Mininet.intf")
        link_class(link, "Mininet.link")
        info(f"*** testbed run {ledger.rid} (after a crash: testbed clean --run {ledger.rid})\n")
        atexit.register(self._at_exit)
        super().__init__(topo=topo, switch=switch_factory(switch, "Mininet.switch"),
                         host=host_factory(host, "Mininet.host"),
                         controller=controller_factory(controller, "Mininet.controller"), link=link,
                         intf=intf, ledger=ledger, **params)

    # -- what the script adds --------------------------------------------------------------
    def link_backend(self) -> LinkBackend:
        """The run's link backend (netem or userspace), made when the first shaped link needs it."""
        if self._backend is None:
            from testbed.emulation.testbed import make_backend

            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._backend = make_backend(link_backend_name(), self.ledger, self.run_dir)
            info(f"*** links shaped by the {self._backend.name} backend\n")
        return self._backend

    def addLink(self, node1: Any, node2: Any, port1: int | None = None, port2: int | None = None,  # noqa: N802
                cls: Any = None, **params: Any):
        """Mininet's addLink through the testbed's link classes (Mininet's TCLink and Link map to them)."""
        a = node1 if not isinstance(node1, str) else self[node1]
        b = node2 if not isinstance(node2, str) else self[node2]
        klass, preset = link_class(cls if cls is not None else self.link, f"link {a.name}-{b.name}")
        link_id = f"{a.name}-{b.name}-{len(self.links)}"
        factory = partial(klass, ledger=self.ledger, backend=self.link_backend, link_id=link_id, **preset)
        return super().addLink(a, b, port1=port1, port2=port2, cls=factory, **params)

    def addSwitch(self, name: str, cls: Any = None, **params: Any):  # noqa: N802
        """Mininet's addSwitch; a bridge of that name that exists already (another run's) is refused."""
        factory = switch_factory(cls, f"switch {name}") if cls is not None else self.switch
        if bridge_exists(name):
            raise TestbedError(f"switch {name}: an Open vSwitch bridge {name} exists already (another "
                               f"run? `testbed clean`); name the switch differently")
        return super().addSwitch(name, cls=factory, ledger=self.ledger, **params)

    def addHost(self, name: str, cls: Any = None, **params: Any):  # noqa: N802
        """Mininet's addHost with the host class mapped (Host, CPULimitedHost, Docker)."""
        factory = host_factory(cls, f"host {name}") if cls is not None else self.host
        return super().addHost(name, cls=factory, **params)

    def addController(self, name: Any = "c0", controller: Any = None, **params: Any):  # noqa: N802
        """Mininet's addController; the os-ken controller gets the run's ledger and directory."""
        if isinstance(name, mn.Controller):
            return super().addController(name)
        factory = controller_factory(controller, f"controller {name}") if controller else self.controller
        if factory is None:
            raise SpecError(f"controller {name}", "no controller class (the network was made with controller=None)")
        cls, _ = unwrap(factory)
        if isinstance(cls, type) and issubclass(cls, Controller):
            params.setdefault("ledger", self.ledger)
            params.setdefault("run_dir", self.run_dir)
        ctl = super().addController(name, controller=factory, **params)
        self.ledger.record_process(ctl.pid, f"shell of controller {name}")
        return ctl

    def iperf(self, hosts: list | None = None, l4Type: str = "TCP", udpBw: str = "10M",  # noqa: N803
              fmt: str | None = None, seconds: int = 5, port: int = 5001) -> list[str]:
        """Mininet's iperf (iperf2, server rate first); it stops only the server it started (Mininet's
        kills every iperf process on the machine by name) and is bounded in time (Mininet's waits
        forever for a report iperf 2.1 never prints)."""
        hosts = hosts or [self.hosts[0], self.hosts[-1]]
        client, server = hosts
        output(f"*** Iperf: testing {l4Type} bandwidth between {client} and {server}\n")
        args = f"iperf -p {port} " + ("-u " if l4Type == "UDP" else "") + (f"-f {fmt} " if fmt else "")
        if l4Type not in ("TCP", "UDP"):
            raise SpecError("iperf.l4Type", f"expected TCP or UDP, got {l4Type!r}")
        server.sendCmd(args + "-s")
        if l4Type == "TCP" and not waitListening(client, server.IP(), port):
            raise TestbedError(f"iperf server on {server.name} did not listen on port {port}")
        bw = f"-b {udpBw} " if l4Type == "UDP" else ""
        cliout = client.cmd(f"{args}-t {seconds} -c {server.IP()} {bw}")
        servout = ""  # iperf 2.1 reports nothing for waitListening's probe: one report is the test's
        deadline = time.monotonic() + seconds + 30
        while not re.findall("/sec", servout):
            if time.monotonic() > deadline:
                server.sendInt()
                server.waitOutput()
                raise TestbedError(f"iperf server on {server.name} reported nothing; client said: "
                                   f"{cliout.strip().splitlines()[-1:]}")
            servout += server.monitor(timeoutms=1000)
        server.sendInt()
        servout += server.waitOutput()
        result = [self._parseIperf(servout), self._parseIperf(cliout)]
        if l4Type == "UDP":
            result.insert(0, udpBw)
        output(f"*** Results: {result}\n")
        return result

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start everything (with the default controller when none was added); a switch that would forward
        nothing (failMode secure, controller=None) is refused."""
        if not self.built:
            self.build()
        if self.switches and not self.controllers and self.controller:  # as Mininet does for a Topo
            self.addController("c0", self.controller)
        secure = [s.name for s in self.switches if getattr(s, "failMode", "") == "secure"]
        if secure and not self.controllers:
            raise TestbedError(f"switches {', '.join(secure)} have no controller and failMode 'secure': "
                               f"they would drop every packet; add a controller or use failMode='standalone'")
        super().start()

    def stop(self) -> None:
        """Mininet's stop, then the link backend; an implicit run is swept from its ledger."""
        if self._stopped:
            return
        self._stopped = True
        try:
            super().stop()
        finally:
            if self._backend is not None:
                self._backend.close()
                self._backend = None
            if self.owns_ledger:
                left = clean.clean_run(self.rid)
                if left.failed:
                    log.warning("run %s: could not remove %s", self.rid, "; ".join(left.failed))

    def _at_exit(self) -> None:
        """A script that ends without net.stop() still leaves nothing behind."""
        if not self._stopped:
            try:
                self.stop()
            except Exception as exc:  # noqa: BLE001 - exiting anyway
                log.warning("run %s: stop at exit: %s", self.rid, exc)


class Containernet(Mininet):
    """Containernet: Mininet with `addDocker`/`removeDocker`; Docker hosts are testbed containers."""

    docker_cls = Docker

