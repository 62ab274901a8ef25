"""Failure experiments as frozen data: the YAML format, strict validation and loading.

The YAML shape (every key not listed here is an error naming its path)::

    name: fatriot-fig11                  # required
    description: Host crash at request 50 (Fatriot Fig. 11)
    topology: fatriot                    # required: shipped name or file path (relative to this file)
    seed: 1                              # default 1; every random choice is seeded from it
    repetitions: 3                       # default 1
    services:                            # started and ready-checked on hosts after the network is up
      - {host: mec1, name: echo, image: testbed/echo, critical: true}   # critical: must have a NIC
      - host: mec2                       # every key but host and name defaults from the image's service.yaml
        name: web
        image: testbed/web               # another image than the host's: its own container in the host's network
        command: [python3, -m, http.server, "8080"]
        ports: [{proto: tcp, port: 8080, critical: true}]
        ready: {http: 8080, path: /, timeout: 10s}   # or {tcp: P} | {udp: P, send: ping, expect: ping}
                                                     # | {command: [test, -e, /run/ok]} | {listen: true}
        env: {MODE: fast}
        state_dir: /srv/state            # what replication and migration copy
        delay_control: /run/web/delay_ms # a file holding the processing delay in ms (needed by delay app)
    traffic:                             # at least one flow
      - {name: probe, from: gen, to: mec1, service: echo-udp, proto: udp, port: 7000,
         rate: 10, count: 100, timeout: 1s}                # kind: probe (default)
      - {name: bulk, kind: iperf3, from: gen, to: mec1, duration: 10s,
         server: mec2, port: 5201, proto: tcp, bw: 100, start: 0s}   # server: where iperf3 -s runs (default: to)
    faults:
      - {kind: host_down, mode: kill, host: mec1, at: packet 50}      # mode: kill | freeze | isolate | site
      - {kind: host_down, mode: site, site: lab, at: 5s, for: 2s}
      - {kind: service_down, host: mec1, at: 5s, for: 3s}
      - {kind: delay, mode: app, host: mec1, delay: 50ms, at: packet 40, until: packet 80}  # app | cpu | link
      - {kind: delay, mode: cpu, host: mec1, cpu: 0.05, at: 2s, for: 5s}
      - {kind: network, link: [edge1, cloud], delay: 50ms, loss: 5, rate: 10, at: 2s, for: 5s}
      - {kind: network, link: [edge1, cloud], down: true, at: 2s, for: 5s}
    variants:                            # default: one variant {name: default, nic: true}
      - {name: with-nic, nic: true, heartbeat_interval: 100ms, threshold: 1.5}
      - {name: without-nic, nic: false}
      - {name: failsafe-path, nic: true, force_failsafe: [mec1]}   # NIC of mec1 forced into fail-safe
      - {name: direct, nic: true, to: mec2}                        # every flow sent to mec2 instead
      - {name: bbm, nic: false, switch: break-before-make}          # every schedule switch in this mode
      - {name: reactive, nic: false, replication: reactive}        # replicated services: testbed/replication/spec.py
      - {name: reset, nic: false, healing: reset}                   # VF chains (kind: chain): testbed/migration/chain_spec.py
    schedule:                            # users moving, traffic switched: testbed/experiment/mobility_spec.py
      - {kind: move, host: ue1, to: edge2, at: 10s, gap: 50ms}
      - {kind: switch, service_ip: 10.0.0.50, from: meca, to: mecb, mode: make-before-break, at: 5s}
    migrations:                          # services moved between anycast twins: testbed/migration/spec.py
      - {kind: migrate, mode: state-transfer, service: counter, from: mec1, to: mec2, at: packet 50}
    claims:
      - "Fig. 11: with Fatriot, delivered rate and RTT stay stable after the crash; without, delivery stops."
    headline: probe                      # optional: the probe flow of the short summary table (default: the first)

Times: `at`/`until` are `packet N` (fires right after the prober sent request N; requests are
numbered from 1) or a time with its unit (`5s`, seconds after the traffic started, at most when
the last request is sent or the last iperf3 flow ends). Every duration (`for`, `timeout`,
`duration`, `start`, `delay`, `heartbeat_interval`) is written with its unit, `250us`, `100ms` or
`1s`, as in topology files; a bare number is an error (except 0). `loss` is percent, `rate`/`bw`
Mbit/s, `cpu` cores. A `kill` fault with `for`/`until` brings the host back: its containers
restart from their images (interfaces, addresses, shaping and NIC are kept: a holder container,
made before the traffic starts, owns the host's network namespace) and its services are started
and ready-checked again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from testbed import yamlio
from testbed.errors import SpecError
from testbed.experiment.values import Trigger, Values
from testbed.topology.model import TopologySpec

FAULT_MODES: dict[str, tuple[str, ...]] = {
    "host_down": ("kill", "freeze", "isolate", "site"),
    "service_down": ("kill",),
    "delay": ("app", "cpu", "link"),
    "network": ("shape",),
}
_FAULT_KEYS = {"kind", "mode", "host", "site", "link", "at", "until", "for", "delay", "cpu", "loss", "rate",
               "down", "probe", "service"}
_TOP_KEYS = {"name", "description", "topology", "seed", "repetitions", "services", "traffic", "faults",
             "variants", "claims", "headline", "migrations", "schedule"}


@dataclass(frozen=True)
class ServicePort:
    """A port a service listens on; `critical` ones are mission-critical (classified by the host's NIC)."""

    proto: str
    port: int
    critical: bool = False


@dataclass(frozen=True)
class Readiness:
    """How the runner knows a service is ready: `listen` (every port bound), `tcp`/`udp`/`http` probes, or a `command`."""

    kind: str = "listen"
    port: int | None = None
    send: str | None = None  # tcp/udp: payload sent; the reply must contain `expect` (if given)
    expect: str | None = None
    path: str = "/"  # http: the path GET must answer with 2xx or 3xx
    command: tuple[str, ...] = ()  # command: run in the service's container, ready when it exits 0
    timeout_s: float = 15.0


@dataclass(frozen=True)
class ServiceRun:
    """A service on a host: which image and command, its ports, how it is ready, and its optional controls.

    A service whose image is the host's runs in the host's own container (its `command` replacing the
    image's); one with another image runs in a container of its own in the host's network namespace.
    Unset fields come from the image's `images/<name>/service.yaml` (see `service_defaults`).
    """

    host: str
    name: str
    image: str | None = None
    critical: bool = False
    command: tuple[str, ...] | None = None  # None: the image's service command (or its CMD)
    ports: tuple[ServicePort, ...] = ()
    ready: Readiness | None = None  # None: every port listening
    env: tuple[tuple[str, str], ...] = ()
    state_dir: str | None = None  # where the service keeps its state (what replication/migration copy)
    delay_control: str | None = None  # a file whose number (ms) is the service's processing delay

    @property
    def critical_ports(self) -> tuple[ServicePort, ...]:
        """The ports that are mission-critical: those marked, or all when the service is."""
        return tuple(p for p in self.ports if p.critical or self.critical)


@dataclass(frozen=True)
class ProbeFlow:
    """Numbered requests at a fixed rate from one host to a service, each settled as answered or lost."""

    name: str
    src: str
    dst: str
    proto: str = "udp"
    port: int = 7000
    rate: float = 10.0
    count: int = 100
    timeout_s: float = 1.0
    service: str | None = None  # the NIC service the requests belong to (informative)
    persistent: bool = False  # TCP: every request over one connection (resets counted), not one per request


@dataclass(frozen=True)
class BulkFlow:
    """An iperf3 throughput flow from `src` to `dst` (server process on `server`)."""

    name: str
    src: str
    dst: str
    server: str
    duration_s: float
    port: int = 5201
    proto: str = "tcp"
    bw_mbit: float | None = None
    start_s: float = 0.0


@dataclass(frozen=True)
class FaultSpec:
    """One injected fault: what, on which target, from `at` until `until` (or for `duration_s`)."""

    kind: str
    mode: str
    at: Trigger
    host: str | None = None
    site: str | None = None
    link: tuple[str, str] | None = None
    until: Trigger | None = None
    duration_s: float | None = None
    delay_ms: float | None = None
    cpu: float | None = None
    loss_pct: float | None = None
    rate_mbit: float | None = None
    down: bool = False
    probe: str | None = None  # whose packet numbers `packet N` counts
    service: str | None = None  # service_down, delay app: which of the host's services (default: its first)

    @property
    def target(self) -> str:
        if self.link:
            return "-".join(self.link)
        return self.site or self.host or ""

    @property
    def has_undo(self) -> bool:
        return self.until is not None or self.duration_s is not None


@dataclass(frozen=True)
class Variant:
    """One configuration the whole experiment is run under (with/without NIC, parameter sweeps)."""

    name: str
    nic: bool = True
    heartbeat_interval_s: float | None = None
    threshold: float | None = None
    force_failsafe: tuple[str, ...] = ()  # hosts whose NIC is forced into fail-safe for every critical service
    to: str | None = None  # send every flow to this host instead
    switch: str | None = None  # every schedule `switch` in this mode instead of its own (mobility_spec.py)
    replication: str | None = None  # proactive | reactive | off for every replicated service (replication/spec.py)
    healing: str | None = None  # cold | state-transfer | reset | none for every chain (testbed/migration/chain_spec.py)

    datapath: str | None = None  # auto | bpf | python for every NIC (the NIC's data path)
    carry_tcp: bool | None = None  # every NIC carries (or resets) established TCP connections at failover

    def nic_overrides(self) -> dict[str, object]:
        """The Testbed's `nic_overrides` for this variant."""
        out: dict[str, object] = {}
        if self.datapath is not None:
            out["datapath"] = self.datapath
        if self.carry_tcp is not None:
            out["carry_tcp"] = self.carry_tcp
        if self.heartbeat_interval_s is not None:
            out["interval_s"] = self.heartbeat_interval_s
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return out


@dataclass(frozen=True)
class ExperimentSpec:
    """A whole failure experiment: topology, services, traffic, faults, variants and the paper's claims."""

    name: str
    topology_ref: str
    topology: TopologySpec
    traffic: tuple[ProbeFlow | BulkFlow, ...]
    description: str = ""
    seed: int = 1
    repetitions: int = 1
    services: tuple[ServiceRun, ...] = ()
    faults: tuple[FaultSpec, ...] = ()
    variants: tuple[Variant, ...] = (Variant("default"),)
    claims: tuple[str, ...] = ()
    headline: str | None = None  # the prober flow of the short summary table (None: the first probe)
    schedule: tuple = ()  # moves and switches (testbed/experiment/mobility_spec.py), timed like faults
    replica_sets: tuple = ()  # replicated services (testbed/replication/spec.py); `services` has each replica
    source: str = ""
    topology_source: str = ""  # the file the topology was read from

    @property
    def probes(self) -> tuple[ProbeFlow, ...]:
        return tuple(f for f in self.traffic if isinstance(f, ProbeFlow))

    @property
    def bulk(self) -> tuple[BulkFlow, ...]:
        return tuple(f for f in self.traffic if isinstance(f, BulkFlow))

    def shape_access_hosts(self) -> tuple[str, ...]:
        """Hosts whose access link must be emulated because a `delay: link` fault changes it."""
        return tuple(sorted({f.host for f in self.faults if f.kind == "delay" and f.mode == "link" and f.host}))


TopologyLoader = Callable[[str], TopologySpec]


def load_experiment(path: str | Path, load_topology: TopologyLoader | None = None, *,
                    check_images: bool = True) -> ExperimentSpec:
    """Read and validate an experiment YAML file, the topology it names and the images both use; SpecError on any problem."""
    path = Path(path)
    data = yamlio.load_yaml(path)  # size, UTF-8, aliases, duplicate keys: SpecError naming the file
    spec = parse_experiment(data, str(path), load_topology=load_topology, base_dir=path.parent)
    if check_images:
        from testbed.references import ImageRef, check_images as check, topology_images

        refs = topology_images(spec.topology, spec.topology_source or spec.topology_ref)
        refs += [ImageRef(spec.source, f"services[{i}].image", s.image)
                 for i, s in enumerate(spec.services) if getattr(s, "image", None)]
        check(refs)
    return spec


def parse_experiment(data: object, source: str, *, load_topology: TopologyLoader | None = None,
                     base_dir: Path | None = None) -> ExperimentSpec:
    """Validate experiment data (as YAML gives it) into an ExperimentSpec; SpecError names the path."""
    from testbed.experiment.validate import Checker  # the cross-reference checks live there

    v = Values(source)
    doc = v.mapping(data, "", _TOP_KEYS, {"name", "topology", "traffic"})
    name = v.text(doc["name"], "name")
    ref = v.text(doc["topology"], "topology")
    topo, topo_source = _resolve_topology(ref, base_dir, load_topology, source)
    checker = Checker(v, topo)
    traffic = tuple(checker.flow(item, f"traffic[{i}]") for i, item in enumerate(v.sequence(doc["traffic"], "traffic")))
    if not traffic:
        raise v.error("traffic", "needs at least one flow")
    checker.unique([f.name for f in traffic], "traffic", "name")
    checker.traffic = traffic
    variants = tuple(checker.variant(item, f"variants[{i}]")
                     for i, item in enumerate(v.sequence(doc.get("variants", []), "variants"))) or (Variant("default"),)
    checker.unique([x.name for x in variants], "variants", "name")
    from testbed.replication.spec import expand_services  # an entry with `replicas` gives one service per replica
    services, replica_sets = expand_services(checker, v.sequence(doc.get("services", []), "services"), variants)
    checker.services = services
    probes = {f.name: f for f in traffic if isinstance(f, ProbeFlow)}
    faults = tuple(checker.fault(item, f"faults[{i}]", probes)
                   for i, item in enumerate(v.sequence(doc.get("faults", []), "faults")))
    chained = [i for i, f in enumerate(traffic) if type(f).__name__ == "ChainFlow"]
    for key in ("faults", "migrations", "schedule"):  # a chain has its own stress and failures
        if chained and doc.get(key):
            raise v.error(key, f"not with a chain (traffic[{chained[0]}]): give its stress and failures there")
    from testbed.migration.spec import parse_migrations  # moves of services, run in the fault schedule
    faults += parse_migrations(checker, v.sequence(doc.get("migrations", []), "migrations"), probes)
    from testbed.experiment.mobility_spec import parse_schedule
    schedule = parse_schedule(checker, v.sequence(doc.get("schedule", []), "schedule"), probes)
    claims = tuple(v.text(c, f"claims[{i}]") for i, c in enumerate(v.sequence(doc.get("claims", []), "claims")))
    headline = v.text(doc["headline"], "headline") if "headline" in doc else None
    if headline is not None and headline not in probes:
        raise v.error("headline", f"no probe flow {headline!r} in traffic (probes: {', '.join(probes) or 'none'})")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise v.error("description", f"expected a string, got {type(description).__name__}")
    return ExperimentSpec(
        name=name,
        description=description,
        topology_ref=ref,
        topology=topo,
        seed=v.integer(doc.get("seed", 1), "seed"),
        repetitions=v.integer(doc.get("repetitions", 1), "repetitions", low=1, high=1000),
        services=services,
        traffic=traffic,
        faults=faults,
        variants=variants,
        claims=claims,
        headline=headline,
        schedule=schedule,
        replica_sets=replica_sets,
        source=source,
        topology_source=topo_source,
    )


def _resolve_topology(ref: str, base_dir: Path | None, load_topology: TopologyLoader | None,
                      source: str) -> tuple[TopologySpec, str]:
    """The topology `ref` names (a path relative to the experiment file first, else a shipped name or a path), and
    the file it came from; a file that does not exist is an error at this file's `topology` key."""
    from testbed.topology.loader import SHIPPED_DIR

    if load_topology is None:
        from testbed.topology.loader import load_topology as default_loader
        load_topology = default_loader
    is_path = ref.endswith((".yaml", ".yml", ".py")) or "/" in ref
    if is_path:
        candidates = [base_dir / ref] if base_dir is not None and not Path(ref).is_absolute() else []
        found = next((c for c in candidates if c.is_file()), None)
        if found is not None:
            ref = str(found)
        elif not Path(ref).is_file():
            where = f" (relative to {base_dir} or the current directory)" if candidates else ""
            raise SpecError("topology", f"no topology file {ref!r}{where}", source)
    try:
        topo = load_topology(ref)
    except SpecError as exc:
        if exc.source:  # a mistake inside the topology file: it names that file and its place
            raise
        raise SpecError("topology", exc.message, source) from None
    return topo, ref if is_path else str(SHIPPED_DIR / f"{ref}.yaml")


def shortened(spec: ExperimentSpec, *, tail: int = 30, max_duration_s: float = 3.0) -> ExperimentSpec:
    """The same experiment made quick: 1 repetition, each probe ends about `tail` requests after its last fault trigger."""
    traffic: list[ProbeFlow | BulkFlow] = []
    first_probe = spec.probes[0].name if spec.probes else None
    for flow in spec.traffic:
        if isinstance(flow, ProbeFlow):
            last = 0.0  # the request number by which every fault of this probe has started and ended
            for f in (*spec.faults, *spec.schedule):
                if (f.probe or first_probe) != flow.name:
                    continue
                start = f.at.packet if f.at.packet is not None else (f.at.time_s or 0.0) * flow.rate
                end = start + (f.duration_s or 0.0) * flow.rate
                if f.until is not None:
                    end = f.until.packet if f.until.packet is not None else (f.until.time_s or 0.0) * flow.rate
                last = max(last, start, end)
            keep = int(last) + tail if last else 2 * tail
            traffic.append(replace(flow, count=min(flow.count, keep)))
        elif type(flow).__name__ == "ChainFlow":  # a chain needs time for its failures and stress: 30 s
            traffic.append(replace(flow, duration_s=min(flow.duration_s, max(30.0, 2 * flow.vfo.period_s))))
        else:
            traffic.append(replace(flow, duration_s=min(flow.duration_s, max_duration_s)))
    return replace(spec, repetitions=1, traffic=tuple(traffic))
