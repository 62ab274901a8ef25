"""A running topology: builds Mininet from a TopologySpec and owns every live part until stop()."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Iterable

from mininet.net import Mininet
from mininet.node import Node, OVSSwitch, RemoteController

from testbed import clean, doctor, ledger as ledger_mod, proc
from testbed.controller import Controller, topology_map
from testbed.emulation import netns
from testbed.emulation.dockerhost import READY_CMD, READY_WAIT_S, DockerHost, docker_client, image_command, image_ports
from testbed.emulation.prelaunch import WORKERS, ContainerPlan, Launched, close_shell, prelaunch
from testbed.emulation.link import TestbedLink
from testbed.emulation.plainhost import PlainHost
from testbed.emulation.switch import OVS_TIMEOUT_S, TestbedSwitch, delete_args
from testbed.errors import TestbedError
from testbed.ledger import LABEL, Ledger, RUN_ROOT
from testbed.links.base import LinkBackend
from testbed.topology.model import LOCAL_SERVER, HostSpec, Shape, TopologySpec

log = logging.getLogger(__name__)


def make_backend(name: str, ledger: Ledger, run_dir: Path, seed: int | None = None) -> LinkBackend:
    """The link backend called `name` ("netem" or "userspace"); `seed` drives every link's loss and jitter."""
    if name == "netem":
        from testbed.links.netem import NetemBackend

        return NetemBackend(ledger, seed=seed)
    from testbed.links.userspace import UserspaceBackend

    return UserspaceBackend(ledger, run_dir, seed=seed)


class _ListeningController(RemoteController):
    """Mininet's RemoteController without its telnet probe (whose binary OpenFlow reply can break its
    UTF-8 decoder): Controller.start has already waited until the controller listens."""

    def checkListening(self) -> None:  # noqa: N802
        return None


def cmd_all(commands: dict[Node, str]) -> None:
    """Run each node's shell command, all at once: send every one, then wait for every one.

    One round trip for all the nodes instead of one per node, which matters for Docker hosts, whose
    shells are reached through the Docker engine. Nodes whose shell is gone are skipped.
    """
    busy = []
    for node, command in commands.items():
        if node.shell is None or node.shell.poll() is not None:
            continue
        node.sendCmd(command)
        busy.append(node)
    for node in busy:
        node.waitOutput()


class Testbed:
    """One run of a topology: switches, hosts, NICs, links, the controller; `with` tears it down."""

    __test__ = False  # not a pytest test class

    def __init__(self, topo: TopologySpec, run_dir: Path, *, nics: bool = True,
                 nic_overrides: dict[str, Any] | None = None, shaped_access: Iterable[str] = (),
                 rid: str | None = None, link_backend: str | None = None,
                 ovs_datapath: str | None = None, seed: int | None = None) -> None:
        if topo.servers:  # before anything exists: every server answers and has its tools (exit 2 if not)
            from testbed.cluster.preflight import preflight

            self.server_checks = preflight(topo, f"topology {topo.name}")
        self.topo = topo
        self.seed = seed  # every link's loss and jitter draws are derived from (seed, link id)
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.rid = rid or ledger_mod.new_run_id()
        self.ledger = Ledger(self.rid, self.run_dir)
        self.cluster: Any = None  # testbed.cluster.cluster.Cluster when sites are placed on other servers
        if topo.servers:
            from testbed.cluster.cluster import Cluster

            self.cluster = Cluster(topo, self.ledger)
            self.cluster.check(nics)
        self.want_nics = nics
        self.nic_overrides = nic_overrides or {}
        self.shaped_access = set(shaped_access)
        self._link_backend_name = link_backend
        self._ovs_datapath = ovs_datapath
        self.net: Mininet | None = None
        self.controller = Controller()
        self.links: LinkBackend | None = None
        self.switch_of: dict[str, str] = {}  # site -> bridge name
        self.nic_nodes: dict[str, Node] = {}
        self.nics: dict[str, Any] = {}  # host -> NicProcess
        self._access_ids: dict[str, str] = {}
        self._docker: Any = None  # one Docker SDK client for all hosts
        self._plans: dict[str, ContainerPlan] = {}
        self._launched: dict[str, Launched] = {}  # prelaunched, not yet adopted by a DockerHost
        self._ready_ports: dict[str, tuple[str, ...]] = {}  # host -> ports its image's service listens on
        self._started = False
        self._plain_link_state: dict[str, Any] = {}  # namespace host -> routes to restore on link up
        self._mobility: Any = None  # testbed.emulation.mobility.Mobility, made at the first move

    # -- life cycle -------------------------------------------------------------------------
    def __enter__(self) -> "Testbed":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Bring everything up, in dependency order; on any failure, remove what was made."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _choose_backends(self) -> None:
        if self._link_backend_name is None:
            self._link_backend_name = "netem" if doctor.probe_netem()[0] else "userspace"
        if self._ovs_datapath is None:
            dp, why = doctor.probe_ovs()
            if dp is None:
                raise TestbedError(f"Open vSwitch is not usable: {why}")
            self._ovs_datapath = dp

    def _start(self) -> None:
        t0 = time.monotonic()
        self._choose_backends()
        state = RUN_ROOT / self.rid
        self.ledger.record("file", str(state))
        state.mkdir(parents=True, exist_ok=True)
        state.chmod(0o700)
        self.links = make_backend(self._link_backend_name, self.ledger, self.run_dir, self.seed)
        if self.cluster is not None:  # WAN links to other servers: emulated at their end here
            self.links = self.cluster.links(self.links)
        port = self.controller.start(self.run_dir, self.ledger, app=self.topo.controller.app,
                                     config=self.topo.controller.config)
        if self.cluster is not None:
            self.cluster.start(port)
        datapath = "user" if self._ovs_datapath == "userspace" else "kernel"
        self.net = Mininet(topo=None, build=False, controller=None, autoSetMacs=False,
                           switch=partial(TestbedSwitch, datapath=datapath, protocols="OpenFlow13",
                                          failMode="secure", batch=True, external_ids={LABEL: self.rid}))
        self.net.addController(_ListeningController("c0", ip="127.0.0.1", port=port))
        self._add_switches()
        self._add_hosts()
        self._add_wan()
        self.net.build()
        self.net.start()
        self._tag_bridges()
        self._prepare_interfaces()  # while the switches connect to the controller
        boxes = self._release_services()  # their interfaces are configured: they start while the switches connect
        here = [b for site, b in self.switch_of.items() if not (self.cluster and self.cluster.remote(site))]
        self.controller.wait_connected(here, timeout=30)
        if self.cluster is not None:
            self.cluster.wait_connected(self.switch_of, timeout=30)
        if "topology" in self.controller.commands():  # a steering app: tell it where hosts attach
            self.controller.call("topology", map=topology_map(self.topo, self.net, self.switch_of, self.nic_nodes))
        self._start_nics()
        self._wait_services(boxes)
        self._started = True
        self._write_manifest(time.monotonic() - t0)
        log.info("run %s up in %.1f s", self.rid, time.monotonic() - t0)

    def stop(self) -> None:
        """Tear everything down; then sweep the ledger so nothing of this run is left."""
        for nic in self.nics.values():
            try:
                nic.stop()
            except Exception as exc:
                log.warning("stopping a NIC: %s", exc)
        self.nics.clear()
        for item in self._launched.values():  # start-up failed before every host adopted its shell
            if item.shell is not None:
                close_shell(item.shell)
        self._launched.clear()
        if self.net is not None:
            shells = [n.shell for n in self.net.hosts if getattr(n, "shell", None) is not None]
            self._remove_containers()
            try:
                self.net.stop()
            except Exception as exc:
                log.warning("mininet stop: %s", exc)
            for shell in shells:  # Mininet signals its shells but never reaps them (zombies until GC)
                if proc.wait(shell, 5.0) is None:
                    log.warning("a host shell (pid %d) outlived teardown", shell.pid)
            self.net = None
        if self.links is not None:
            try:
                self.links.close()
            except Exception as exc:
                log.warning("link backend close: %s", exc)
            self.links = None
        if self.cluster is not None:
            self.cluster.stop()
        if self._docker is not None:  # its pooled connections to the engine (a leak of ~25 fds per run)
            self._docker.close()
            self._docker = None
        self.controller.stop()
        leftover = clean.clean_run(self.rid)
        if leftover.failed:
            log.warning("could not remove: %s", "; ".join(leftover.failed))

    # -- building ---------------------------------------------------------------------------
    def _add_switches(self) -> None:
        assert self.net is not None
        for i, site in enumerate(self.topo.sites, start=1):
            name = f"{self.ledger.prefix}s{i}"
            extra = self.cluster.switch_params(site.name, self.net.switch) if self.cluster else {}
            self.ledger.record("ovs_bridge", name, site=site.name, **({"server": extra["door"].name} if extra else {}))
            dpid = f"{(int(self.rid, 16) << 16) | i:016x}"
            switch = self.net.addSwitch(name, dpid=dpid, **extra)
            if extra:  # its shell on the other server, and the ssh carrying it here: cleanup ends both
                self.cluster.record_node(switch, f"shell of switch {name}")
            self.switch_of[site.name] = name

    def _host_node(self, spec: HostSpec) -> Node:
        assert self.net is not None
        params: dict[str, Any] = {"ip": spec.ip}
        if spec.mac:
            params["mac"] = spec.mac
        if spec.is_docker:
            plan = self._plans[spec.name]
            engine = self.cluster.engines.get(plan.server) if self.cluster else None  # another server's
            where = {"client": engine.client, "door": engine.door} if engine else {"client": self._docker}
            return self.net.addHost(
                spec.name, cls=DockerHost, dimage=spec.image, ledger=self.ledger, cpu=spec.cpu,
                memory=spec.memory, environment=dict(spec.env), volumes=spec.volumes,
                dcmd=plan.run_args["command"], launched=self._launched.pop(spec.name),
                ready_ports=self._ready_ports.get(spec.name, ()), plan=plan, **where, **params)
        if self.cluster is not None and self.cluster.remote(spec.site):
            node = self.net.addHost(spec.name, **self.cluster.host_params(spec), **params)
            self.cluster.record_node(node, f"shell of {spec.name}")
            return node
        node = self.net.addHost(spec.name, cls=PlainHost, **params)
        self.ledger.record_process(node.pid, f"shell of {spec.name}")
        return node

    def _access_shape(self, spec: HostSpec) -> tuple[bool, Shape]:
        emulated = spec.access.shaped or spec.name in self.shaped_access
        return emulated, spec.access

    def _prelaunch_containers(self) -> None:
        """Create and start every Docker host's container (and shell) in parallel, before Mininet's serial steps."""
        specs = [h for site in self.topo.sites for h in site.hosts if h.is_docker]
        if not specs:
            return
        engines = self.cluster.engines if self.cluster else {}  # other servers' engines
        server = {h.name: self.cluster.server_of(h.site) if self.cluster else LOCAL_SERVER for h in specs}
        if any(server[h.name] not in engines for h in specs):
            self._docker = docker_client()
        commands: dict[tuple[str, str], list[str]] = {}  # (server, image) -> its CMD, asked once per image
        ports: dict[tuple[str, str], tuple[str, ...]] = {}  # (server, image) -> its exposed ports
        for spec in specs:
            where = server[spec.name]
            client = engines[where].client if where in engines else self._docker
            dcmd, key = spec.command, (where, spec.image)
            if dcmd is None:  # the image's own service: start() waits until it listens on its ports
                if key not in commands:
                    commands[key] = image_command(client, spec.image)
                    ports[key] = image_ports(client, spec.image)
                dcmd = commands[key]
                if dcmd:
                    self._ready_ports[spec.name] = ports[key]
            self._plans[spec.name] = DockerHost.plan(
                spec.name, spec.image, self.ledger, client, spec.cpu, spec.memory, dict(spec.env),
                spec.volumes, dcmd, server=where)
        self._launched = prelaunch(self._docker, list(self._plans.values()), self.ledger, engines=engines)

    def _add_hosts(self) -> None:
        assert self.net is not None
        self._prelaunch_containers()
        for site in self.topo.sites:
            switch = self.net[self.switch_of[site.name]]
            for spec in site.hosts:
                host = self._host_node(spec)
                emulated, shape = self._access_shape(spec)
                link_id = f"acc-{spec.name}"
                shaped = {"backend": self.links if emulated else None, "forward": shape, "reverse": shape}
                if spec.nic is not None and self.want_nics:
                    if self.cluster is not None and self.cluster.remote(spec.site):  # the NIC's node there
                        nic = self.net.addHost(f"{spec.name}-nic", **self.cluster.host_params(spec), ip=None)
                        self.cluster.record_node(nic, f"shell of {spec.name}-nic")
                    else:
                        nic = self.net.addHost(f"{spec.name}-nic", cls=PlainHost, ip=None)
                        self.ledger.record_process(nic.pid, f"shell of {spec.name}-nic")
                    self.nic_nodes[spec.name] = nic
                    link = (lambda a, b: self.cluster.link_cls(a, b, TestbedLink)) if self.cluster else \
                        (lambda a, b: TestbedLink)
                    self.net.addLink(host, nic, cls=link(host, nic), link_id=link_id, ledger=self.ledger,
                                     intfName2="nic-h", addr1=spec.mac, **shaped)
                    self.net.addLink(nic, switch, cls=link(nic, switch), link_id=f"nic-{spec.name}",
                                     ledger=self.ledger, intfName1="nic-n")
                else:
                    cls = self.cluster.link_cls(host, switch, TestbedLink) if self.cluster else TestbedLink
                    self.net.addLink(host, switch, cls=cls, link_id=link_id, ledger=self.ledger,
                                     addr1=spec.mac, **shaped)
                if emulated:
                    self._access_ids[spec.name] = link_id

    def _add_wan(self) -> None:
        assert self.net is not None
        for wan in self.topo.wan:
            a, b = self.net[self.switch_of[wan.a]], self.net[self.switch_of[wan.b]]
            self.net.addLink(a, b, cls=self.cluster.link_cls(a, b, TestbedLink) if self.cluster else TestbedLink,
                             link_id=self.wan_link_id(wan.a, wan.b), ledger=self.ledger,
                             backend=self.links, forward=wan.forward, reverse=wan.reverse)

    def _tag_bridges(self) -> None:
        """Nothing left to do: TestbedSwitch sets the run's label when it makes each bridge."""

    def _prepare_interfaces(self) -> None:
        """Checksum offload off on host interfaces: the userspace datapath does not fill checksums in."""
        assert self.net is not None
        commands = {}
        for node in self.net.hosts:
            names = [intf.name for intf in node.intfList() if intf.name != "lo"]
            if names:
                commands[node] = "; ".join(f"ethtool -K {n} tx off tso off gso off" for n in names)
        cmd_all(commands)

    def _release_services(self) -> list[DockerHost]:
        """Let every Docker host's main command start (their interfaces are configured); the hosts told."""
        assert self.net is not None
        boxes = [node for node in self.net.hosts if isinstance(node, DockerHost)]
        cmd_all({node: READY_CMD for node in boxes})
        return boxes

    def _wait_services(self, boxes: list[DockerHost]) -> None:
        """Wait (at most READY_WAIT_S) until the released hosts' main commands listen on their ports, all at once."""
        late = []
        for door in {node.door for node in boxes}:  # each server's /proc, polled there (one loop per server)
            on = [node for node in boxes if node.door == door]
            late += on[0].namespaces.wait_ports({n.name: (n.netns_pid, n.listen_ports) for n in on}, READY_WAIT_S)
        for name in late:
            log.warning("%s: not listening on %s after %g s", name, ", ".join(self.net[name].ready_ports), READY_WAIT_S)

    def _remove_containers(self) -> None:
        """Remove every Docker host's containers in parallel (Mininet would, one at a time, in net.stop).

        Meanwhile this machine's bridges are deleted (Open vSwitch's work, not the engine's), so that
        net.stop finds them gone.
        """
        assert self.net is not None
        docker_hosts = [node for node in self.net.hosts if isinstance(node, DockerHost)]
        if not docker_hosts:
            return
        bridges = [s.name for s in self.net.switches if type(s) is TestbedSwitch]
        with ThreadPoolExecutor(max_workers=WORKERS + 1, thread_name_prefix="remove") as pool:
            deleting = pool.submit(proc.run, delete_args(bridges), timeout=OVS_TIMEOUT_S + 10, check=False) \
                if bridges else None
            list(pool.map(DockerHost.terminate, docker_hosts))
            if deleting is not None:
                deleting.result()

    def _start_nics(self) -> None:
        if not self.nic_nodes:
            return
        from testbed.failsafe.config import NicConfig
        from testbed.failsafe.launcher import start_nic

        for name, node in self.nic_nodes.items():
            spec = self.topo.host(name)
            if self.nic_overrides and spec.nic is not None:
                spec = dataclasses.replace(spec, nic=dataclasses.replace(spec.nic, **self.nic_overrides))
            config = NicConfig.from_spec(spec, self.topo, self.rid, self.run_dir)
            if name in self._access_ids:  # nic-h's peer is the link emulator's, not the host's
                config = dataclasses.replace(config, host_is_peer=False)
            door = self.cluster.remote(spec.site) if self.cluster is not None else None
            if door is not None:  # on its host's server, controlled from here (testbed/cluster/nics.py)
                from testbed.cluster.nics import start_remote_nic

                self.nics[name] = start_remote_nic(door, node.pid, config, self.ledger, self.run_dir)
                continue
            self.nics[name] = start_nic(node.pid, config, self.ledger, self.run_dir)

    # -- what faults and experiments use -----------------------------------------------------
    def node(self, name: str) -> Node:
        """The Mininet node of host `name` (DockerHost or Host)."""
        assert self.net is not None
        return self.net[name]

    def door(self, name: str) -> Any:
        """The command door (testbed/cluster/server.py) of the server node `name` runs on."""
        from testbed.cluster.nodes import door_of

        return door_of(self.node(name))

    def container(self, name: str):
        """The Docker SDK container of Docker host `name`."""
        node = self.node(name)
        if not isinstance(node, DockerHost):
            raise TestbedError(f"{name} is not a Docker host")
        return node.container

    def start_service(self, host: str) -> None:
        """(Re)start a Docker host's main command."""
        node = self.node(host)
        if isinstance(node, DockerHost):
            node.start_service()

    def wan_link_id(self, a: str, b: str) -> str:
        """The link id of the WAN link between sites `a` and `b` (either order)."""
        link = self.topo.wan_link(a, b)
        return f"wan-{link.a}-{link.b}"

    def access_link_id(self, host: str) -> str:
        """The link id of host's emulated access link (only for shaped or `shaped_access` hosts)."""
        if host not in self._access_ids:
            raise TestbedError(f"{host}'s access link is not emulated: give it an `access` shape")
        return self._access_ids[host]

    def steer(self, ip: str, host: str, *, proto: str | None = None, port: int | None = None,
              mode: str = "make-before-break") -> dict:
        """Ask the controller to send traffic for `ip` (proto/port) to `host`; returns once the switches acked."""
        if "steer" not in self.controller.commands():
            raise TestbedError(f"controller app {self.topo.controller.app} has no northbound steer command")
        args: dict[str, Any] = {"ip": ip, "host": host, "mode": mode}
        if proto is not None:
            args["proto"] = proto
        if port is not None:
            args["port"] = port
        return self.controller.call("steer", **args)

    def move(self, host: str, site: str, gap_s: float = 0.0) -> dict:
        """Re-attach end device `host` to `site`'s switch, attached nowhere for `gap_s`; see emulation/mobility.py."""
        from testbed.emulation.mobility import Mobility

        if self._mobility is None:
            self._mobility = Mobility(self)
        return self._mobility.move(host, site, gap_s).to_dict()

    def site_of(self, host: str) -> str:
        """The site `host` is attached to now (after any moves)."""
        return self._mobility.site(host) if self._mobility is not None else self.topo.host(host).site

    def nic_socket(self, host: str) -> Path:
        """The control socket of the NIC in front of `host`."""
        if host not in self.nics:
            raise TestbedError(f"{host} has no fail-safe NIC in this run")
        return Path(self.nics[host].socket)

    def nic_events(self) -> list[dict]:
        """NIC transitions so far, from every NIC's events log, in time order."""
        events: list[dict] = []
        for nic in self.nics.values():  # a NIC on another server writes its log there
            getattr(nic, "sync_events", lambda: None)()
        for path in self.run_dir.glob("events-*.jsonl"):
            for line in path.read_text().splitlines():
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return sorted(events, key=lambda e: e.get("time", 0))

    def set_interfaces(self, host: str, up: bool) -> None:
        """Take all of a host's interfaces down (isolate) or up, from outside it (works on a frozen host too)."""
        node = self.node(host)
        if isinstance(node, DockerHost):
            node.set_links(up)
            return
        if up:
            netns.links_up(node.pid, self._plain_link_state.pop(host, None))
        else:
            self._plain_link_state[host] = netns.links_down(node.pid)

    def backends(self) -> dict[str, str]:
        """Which backend each part of this run uses."""
        from importlib.metadata import version

        from testbed.failsafe.launcher import datapaths

        return {"link": self._link_backend_name or "", "ovs_datapath": self._ovs_datapath or "",
                "controller": f"os-ken {version('os-ken')}, app {self.topo.controller.app}",
                "hosts": "docker (service container; a holder keeps its netns from the first crash or sidecar)",
                "nic": datapaths(self.nics) if self.nics else "none"}

    def selfcheck(self, count: int = 5, hosts: bool = True) -> list[dict]:
        """Ping every site pair's path and (with `hosts`) every host's access path; configured vs measured RTT, saved to selfcheck.json."""
        from testbed.emulation.selfcheck import measure_wan

        results = measure_wan(self, count, hosts=hosts)
        (self.run_dir / "selfcheck.json").write_text(json.dumps(results, indent=2))
        return results

    def _write_manifest(self, startup_s: float) -> None:
        info = {"rid": self.rid, "topology": self.topo.name, "backends": self.backends(),
                "startup_s": round(startup_s, 2),
                "switches": self.switch_of, "nics": sorted(self.nics)}
        (self.run_dir / "network.json").write_text(json.dumps(info, indent=2))
