"""The testbed's edge switch: Mininet's OVSSwitch whose bridges and ports are made by argument lists.

Mininet sends a switch's whole `ovs-vsctl -- add-br … -- add-port …` line through the switch's
terminal shell, whose line discipline cuts it at 4,095 characters: with the testbed's port names
that is about 43 ports, then `no row "tb…s1" in table Bridge`. Here every switch's commands are
planned as data (`BridgePlan`, testable without root) and applied by `testbed.proc` in a few
ovs-vsctl transactions for all the switches at once: the bridges with their controllers and
options in one, their ports in batches of PORTS_PER_TRANSACTION. Teardown deletes every bridge
in one transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from mininet.node import OVSSwitch

from testbed import proc

log = logging.getLogger(__name__)

#: Ports added per ovs-vsctl transaction (one transaction per batch: vswitchd reconfigures once).
PORTS_PER_TRANSACTION = 200
OVS_TIMEOUT_S = 60


@dataclass(frozen=True)
class BridgePlan:
    """What one bridge needs: options as `key=value`, controllers as (id, target), ports as (name, ofport)."""

    name: str
    options: tuple[str, ...]
    controllers: tuple[tuple[str, str], ...] = ()
    ports: tuple[tuple[str, int], ...] = ()
    external_ids: tuple[tuple[str, str], ...] = ()
    reconnect_ms: int | None = None


def bridge_args(plan: BridgePlan) -> list[str]:
    """ovs-vsctl commands (joined by `--`) that replace any bridge of that name with a fresh one."""
    args: list[str] = []
    for cid, target in plan.controllers:
        args += ["--", f"--id=@{cid}", "create", "Controller", f'target="{target}"']
        if plan.reconnect_ms:
            args.append(f"max_backoff={plan.reconnect_ms}")
    cids = ",".join(f"@{cid}" for cid, _ in plan.controllers)
    args += ["--", "--if-exists", "del-br", plan.name, "--", "add-br", plan.name,
             "--", "set", "bridge", plan.name, f"controller=[{cids}]", *plan.options,
             *(f"external_ids:{k}={v}" for k, v in plan.external_ids)]
    return args


def port_args(bridge: str, ports: Iterable[tuple[str, int]]) -> list[str]:
    """ovs-vsctl commands that add each port to `bridge` with its OpenFlow port number."""
    args: list[str] = []
    for name, ofport in ports:
        args += ["--", "add-port", bridge, name, "--", "set", "Interface", name, f"ofport_request={ofport}"]
    return args


def transactions(plans: Sequence[BridgePlan], per_transaction: int = PORTS_PER_TRANSACTION) -> list[list[str]]:
    """Argument lists of the ovs-vsctl runs that make `plans`: all bridges in one, then ports in batches."""
    runs: list[list[str]] = []
    bridges = [a for p in plans for a in bridge_args(p)]
    if bridges:
        runs.append(bridges)
    pending = [(p.name, port) for p in plans for port in p.ports]
    for i in range(0, len(pending), per_transaction):
        chunk = pending[i:i + per_transaction]
        runs.append([a for bridge, port in chunk for a in port_args(bridge, [port])])
    return [["ovs-vsctl", f"--timeout={OVS_TIMEOUT_S}", *run] for run in runs]


def delete_args(names: Iterable[str]) -> list[str]:
    """One ovs-vsctl run that deletes every bridge in `names` that exists."""
    args = ["ovs-vsctl", f"--timeout={OVS_TIMEOUT_S}"]
    for name in names:
        args += ["--", "--if-exists", "del-br", name]
    return args


class TestbedSwitch(OVSSwitch):
    """Mininet's OVSSwitch (same fail mode, protocols, datapath, dpid, controllers), made through argument lists.

    `external_ids` are set on the bridge when it is made (the run's label, so cleanup finds it).
    With `batch=True` (the testbed's way) `start()` only plans and `batchStartup` makes every
    switch in a few transactions; with `batch=False` `start()` makes this one at once.
    """

    __test__ = False

    def __init__(self, name: str, external_ids: dict[str, str] | None = None, **params: Any) -> None:
        self.external_ids = dict(external_ids or {})
        self.plan: BridgePlan | None = None
        super().__init__(name, **params)

    def bridge_plan(self, controllers: Sequence[Any]) -> BridgePlan:
        """This switch as data: Mininet's bridge options, controller targets and its ports' numbers."""
        int(self.dpid, 16)  # a DPID must be hexadecimal
        targets = [(self.name + c.name, f"{c.protocol}:{c.IP()}:{c.port}") for c in controllers]
        if self.listenPort:
            targets.append((self.name + "-listen", f"ptcp:{self.listenPort}"))
        ports = tuple((intf.name, self.ports[intf]) for intf in self.intfList() if self.ports[intf] and not intf.IP())
        return BridgePlan(self.name, tuple(self.bridgeOpts().split()), tuple(targets), ports,
                          tuple(sorted(self.external_ids.items())), self.reconnectms or None)

    def start(self, controllers: Sequence[Any]) -> None:  # type: ignore[override]
        """Plan the bridge; make it now unless batched (then batchStartup makes it)."""
        if self.inNamespace:
            raise RuntimeError("an Open vSwitch switch does not work in a namespace")
        self.plan = self.bridge_plan(controllers)
        if not self.batch:
            self.apply([self.plan])

    @staticmethod
    def apply(plans: Sequence[BridgePlan]) -> None:
        """Run the transactions that make `plans`."""
        for args in transactions(plans):
            proc.run(args, timeout=OVS_TIMEOUT_S + 10)

    @classmethod
    def batchStartup(cls, switches: Sequence["TestbedSwitch"], run: Any = None) -> Sequence["TestbedSwitch"]:  # noqa: N802
        """Make every planned switch: all bridges in one transaction, then ports in batches."""
        plans = [s.plan for s in switches if s.batch and s.plan is not None]
        if plans:
            cls.apply(plans)
            log.info("%d bridges with %d ports made", len(plans), sum(len(p.ports) for p in plans))
        for s in switches:
            s.batch = False  # later attach()/vsctl() calls act at once, as in Mininet after a batch start
        return switches

    def stop(self, deleteIntfs: bool = True) -> None:  # noqa: N803
        """Delete the bridge (and, in the userspace datapath, its internal interface), then the node."""
        proc.run(delete_args([self.name]), timeout=OVS_TIMEOUT_S + 10, check=False)
        if self.datapath == "user":
            proc.run(["ip", "link", "del", self.name], check=False)
        super(OVSSwitch, self).stop(deleteIntfs)

    @classmethod
    def batchShutdown(cls, switches: Sequence["TestbedSwitch"], run: Any = None) -> Sequence["TestbedSwitch"]:  # noqa: N802
        """Delete every bridge in one transaction, then end each switch's shell."""
        if switches:
            proc.run(delete_args(s.name for s in switches), timeout=OVS_TIMEOUT_S + 10, check=False)
        for s in switches:
            s.terminate()
        return switches


