"""Cross-reference checks for experiment files: hosts, sites, links, probes and variants must fit the topology."""

from __future__ import annotations

from testbed.experiment.spec import (_FAULT_KEYS, FAULT_MODES, BulkFlow, FaultSpec, ProbeFlow, ServiceRun,
                                     Variant)
from testbed.experiment.mobility_spec import SWITCH_MODES
from testbed.replication.spec import VARIANT_MODES
from testbed.experiment.service_defaults import SERVICE_KEYS, parse_fields, resolve
from testbed.experiment.values import Trigger, Values
from testbed.topology.model import TopologySpec

_SERVICE_KEYS = {"host", *SERVICE_KEYS}
_PROBE_KEYS = {"name", "kind", "from", "to", "service", "proto", "port", "rate", "count", "timeout", "persistent"}
_BULK_KEYS = {"name", "kind", "from", "to", "server", "port", "proto", "bw", "duration", "start"}
_VARIANT_KEYS = {"name", "nic", "heartbeat_interval", "threshold", "force_failsafe", "to", "switch", "datapath",
                 "replication", "healing", "carry_tcp"}
_NEEDS_DOCKER = {("host_down", "kill"), ("host_down", "freeze"), ("service_down", "kill"), ("delay", "app"),
                 ("delay", "cpu")}


def _healing(v: Values, value: object, path: str) -> str:
    from testbed.migration.chain_spec import healing_choice  # live refused where checkpoint/restore fails
    return healing_choice(v, value, path)


class Checker:
    """Builds the experiment's parts from YAML data, checking every name against the topology."""

    def __init__(self, v: Values, topo: TopologySpec) -> None:
        self.v = v
        self.topo = topo
        self.hosts = {h.name: h for h in topo.hosts()}
        self.sites = {s.name for s in topo.sites}
        self.services: tuple[ServiceRun, ...] = ()  # set once parsed: faults refer to them
        self.traffic: tuple[ProbeFlow | BulkFlow, ...] = ()  # set once the flows are read: bounds time triggers

    def host(self, value: object, path: str) -> str:
        name = self.v.text(value, path)
        if name not in self.hosts:
            raise self.v.error(path, f"no host {name!r} in topology {self.topo.name!r} "
                                     f"(hosts: {', '.join(self.hosts)})")
        return name

    def unique(self, names: list[str], path: str, key: str) -> None:
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                raise self.v.error(f"{path}[{i}].{key}", f"duplicate name {name!r}")
            seen.add(name)

    def service(self, item: object, path: str, variants: tuple[Variant, ...]) -> ServiceRun:
        """A service entry: its own fields over the image's service.yaml; critical ones need a NIC that classifies them."""
        d = self.v.mapping(item, path, _SERVICE_KEYS, {"host", "name"})
        host = self.host(d["host"], f"{path}.host")
        spec = self.hosts[host]
        if not spec.is_docker:
            raise self.v.error(f"{path}.host", f"services run in Docker hosts; {host!r} has no image")
        svc = resolve(ServiceRun(host, self.v.text(d["name"], f"{path}.name"),
                                 **parse_fields(self.v, d, path)), spec.image)
        if (svc.critical or any(p.critical for p in svc.ports)) and spec.nic is None and any(x.nic for x in variants):
            wants = next(x.name for x in variants if x.nic)
            raise self.v.error(f"{path}.critical", f"host {host!r} has no NIC in the topology, "
                                                   f"but variant {wants!r} runs with NICs")
        marked = [p for p in svc.ports if p.critical]
        if marked and spec.nic is not None:
            classified = {(s.proto, s.port) for s in spec.nic.services}
            missing = [f"{p.proto}/{p.port}" for p in marked if (p.proto, p.port) not in classified]
            if missing:
                raise self.v.error(f"{path}.ports", f"critical port(s) {', '.join(missing)} of {svc.name!r} are not "
                                                    f"in {host}'s nic.services, so its NIC would not protect them")
        return svc

    def flow(self, item: object, path: str) -> ProbeFlow | BulkFlow:
        kind = item.get("kind", "probe") if isinstance(item, dict) else "probe"
        kind = self.v.choice(kind, f"{path}.kind", ("probe", "iperf3", "chain"))
        if kind == "chain":  # a virtual-function chain and its orchestrator (testbed/migration/chain_spec.py)
            from testbed.migration.chain_spec import parse_chain
            return parse_chain(self, item, path)
        return self.probe(item, path) if kind == "probe" else self.bulk(item, path)

    def _ends(self, d: dict, path: str) -> tuple[str, str]:
        src, dst = self.host(d["from"], f"{path}.from"), self.host(d["to"], f"{path}.to")
        if src == dst:
            raise self.v.error(f"{path}.to", f"traffic from {src!r} to itself")
        return src, dst

    def probe(self, item: object, path: str) -> ProbeFlow:
        d = self.v.mapping(item, path, _PROBE_KEYS, {"name", "from", "to"})
        src, dst = self._ends(d, path)
        proto = self.v.choice(d.get("proto", "udp"), f"{path}.proto", ("udp", "tcp"))
        persistent = self.v.flag(d.get("persistent", False), f"{path}.persistent")
        if persistent and proto != "tcp":
            raise self.v.error(f"{path}.persistent", "only a tcp probe keeps one connection")
        return ProbeFlow(
            name=self.v.text(d["name"], f"{path}.name"), src=src, dst=dst, proto=proto,
            port=self.v.integer(d.get("port", 7000 if proto == "udp" else 7001), f"{path}.port", low=1, high=65535),
            rate=self.v.number(d.get("rate", 10), f"{path}.rate", low=0, low_open=True, high=10000,
                               what="requests per second"),
            count=self.v.integer(d.get("count", 100), f"{path}.count", low=1, high=10_000_000),
            timeout_s=self.v.positive_seconds(d.get("timeout", "1s"), f"{path}.timeout"),
            service=self.v.text(d["service"], f"{path}.service") if "service" in d else None,
            persistent=persistent,
        )

    def bulk(self, item: object, path: str) -> BulkFlow:
        d = self.v.mapping(item, path, _BULK_KEYS, {"name", "from", "to", "duration"})
        src, dst = self._ends(d, path)
        bw = d.get("bw")
        return BulkFlow(
            name=self.v.text(d["name"], f"{path}.name"), src=src, dst=dst,
            server=self.host(d.get("server", dst), f"{path}.server"),
            duration_s=self.v.positive_seconds(d["duration"], f"{path}.duration"),
            port=self.v.integer(d.get("port", 5201), f"{path}.port", low=1, high=65535),
            proto=self.v.choice(d.get("proto", "tcp"), f"{path}.proto", ("tcp", "udp")),
            bw_mbit=self.v.number(bw, f"{path}.bw", low=0, low_open=True, what="Mbit/s") if bw is not None else None,
            start_s=self.v.seconds(d.get("start", 0), f"{path}.start"),
        )

    def variant(self, item: object, path: str) -> Variant:
        d = self.v.mapping(item, path, _VARIANT_KEYS, {"name"})
        interval = d.get("heartbeat_interval")
        threshold = d.get("threshold")
        nic = self.v.flag(d.get("nic", True), f"{path}.nic")
        forced = tuple(self.host(h, f"{path}.force_failsafe[{i}]")
                       for i, h in enumerate(self.v.sequence(d.get("force_failsafe", []), f"{path}.force_failsafe")))
        for i, h in enumerate(forced):
            if not nic or self.hosts[h].nic is None:
                raise self.v.error(f"{path}.force_failsafe[{i}]", f"host {h!r} has no NIC in this variant")
        return Variant(
            name=self.v.text(d["name"], f"{path}.name"), nic=nic,
            heartbeat_interval_s=self.v.positive_seconds(interval, f"{path}.heartbeat_interval")
            if interval is not None else None,
            threshold=self.v.number(threshold, f"{path}.threshold", low=1, low_open=True)
            if threshold is not None else None,
            force_failsafe=forced,
            to=self.host(d["to"], f"{path}.to") if "to" in d else None,
            switch=self.v.choice(d["switch"], f"{path}.switch", SWITCH_MODES) if "switch" in d else None,
            datapath=self.v.choice(d["datapath"], f"{path}.datapath", ("auto", "bpf", "python"))
            if "datapath" in d else None,
            carry_tcp=self.v.flag(d["carry_tcp"], f"{path}.carry_tcp") if "carry_tcp" in d else None,
            replication=self.v.choice(d["replication"], f"{path}.replication", VARIANT_MODES)
            if "replication" in d else None,
            healing=_healing(self.v, d["healing"], f"{path}.healing") if "healing" in d else None,
        )

    def fault(self, item: object, path: str, probes: dict[str, ProbeFlow]) -> FaultSpec:
        d = self.v.mapping(item, path, _FAULT_KEYS, {"kind", "at"})
        kind = self.v.choice(d["kind"], f"{path}.kind", tuple(FAULT_MODES))
        modes = FAULT_MODES[kind]
        mode = self.v.choice(d.get("mode", modes[0]), f"{path}.mode", modes)
        probe = self._fault_probe(d, path, probes)
        at = self._trigger(d["at"], f"{path}.at", probe)
        self._within_traffic(at, f"{path}.at")
        until, duration = self._end(d, path, at, probe)
        fields: dict = {"kind": kind, "mode": mode, "at": at, "until": until, "duration_s": duration,
                        "probe": probe.name if probe else None}
        if kind == "network":
            fields.update(self._network(d, path))
        elif mode == "site":
            site = self.v.text(d.get("site"), f"{path}.site") if "site" in d else None
            if site is None:
                raise self.v.error(f"{path}.site", "is required for mode site")
            if site not in self.sites:
                raise self.v.error(f"{path}.site", f"no site {site!r} in topology {self.topo.name!r}")
            fields["site"] = site
        else:
            if "host" not in d:
                raise self.v.error(f"{path}.host", f"is required for {kind} faults")
            host = self.host(d["host"], f"{path}.host")
            if (kind, mode) in _NEEDS_DOCKER and not self.hosts[host].is_docker:
                raise self.v.error(f"{path}.host", f"{kind} mode {mode} needs a Docker host; {host!r} is not one")
            fields["host"] = host
        if kind == "delay":
            fields.update(self._delay(d, path, mode))
        self._no_stray(d, path, kind, mode)
        if (kind, mode) in {("delay", "app"), ("service_down", "kill")}:
            fields["service"] = self._fault_service(d, path, fields["host"], mode == "app")
        return FaultSpec(**fields)

    def _fault_service(self, d: dict, path: str, host: str, needs_delay: bool) -> str:
        """The service a service_down / delay app fault acts on (named, or the host's first; its image's by default)."""
        on_host = [s for s in self.services if s.host == host]
        if "service" in d:
            name = self.v.text(d["service"], f"{path}.service")
            on_host = [s for s in on_host if s.name == name]
            if not on_host:
                raise self.v.error(f"{path}.service", f"no service {name!r} on {host} in `services`")
        svc = on_host[0] if on_host else resolve(ServiceRun(host, "main"), self.hosts[host].image)
        if needs_delay and svc.delay_control is None:
            where = f"services[{self.services.index(svc)}].delay_control" if svc in self.services else \
                f"the service.yaml of image {svc.image}"
            raise self.v.error(f"{path}.mode", f"delay app needs a service that declares a delay control; "
                                               f"{svc.name!r} on {host} has none ({where})")
        return svc.name

    def _fault_probe(self, d: dict, path: str, probes: dict[str, ProbeFlow]) -> ProbeFlow | None:
        if "probe" in d:
            name = self.v.text(d["probe"], f"{path}.probe")
            if name not in probes:
                raise self.v.error(f"{path}.probe", f"no probe flow {name!r} in traffic")
            return probes[name]
        return next(iter(probes.values()), None)

    def _trigger(self, value: object, path: str, probe: ProbeFlow | None) -> Trigger:
        trig = self.v.trigger(value, path)
        if trig.packet is not None:
            if probe is None:
                raise self.v.error(path, "`packet N` needs a probe flow in traffic")
            if trig.packet > probe.count:
                raise self.v.error(path, f"packet {trig.packet} is beyond the prober's count {probe.count}")
        return trig

    def _within_traffic(self, trig: Trigger, path: str) -> None:
        """A time trigger must fire while traffic still flows (as `packet N` must be within the count)."""
        if trig.time_s is None or not self.traffic:
            return
        ends = [((f.count - 1) / f.rate, f"probe {f.name!r} sends its last request at")
                if isinstance(f, ProbeFlow) else (f.start_s + f.duration_s, f"iperf3 flow {f.name!r} ends at")
                for f in self.traffic]
        end, what = max(ends, key=lambda e: e[0])
        if trig.time_s > end:
            raise self.v.error(path, f"{trig} is after the traffic ends ({what} {end:g}s)")

    def _end(self, d: dict, path: str, at: Trigger, probe: ProbeFlow | None) -> tuple[Trigger | None, float | None]:
        if "until" in d and "for" in d:
            raise self.v.error(f"{path}.for", "give either `until` or `for`, not both")
        if "for" in d:
            return None, self.v.positive_seconds(d["for"], f"{path}.for")
        if "until" not in d:
            return None, None
        until = self._trigger(d["until"], f"{path}.until", probe)
        if at.packet is not None and until.packet is not None and until.packet <= at.packet:
            raise self.v.error(f"{path}.until", f"{until} is not after `at` ({at})")
        if at.time_s is not None and until.time_s is not None and until.time_s <= at.time_s:
            raise self.v.error(f"{path}.until", f"{until} is not after `at` ({at})")
        return until, None

    def _network(self, d: dict, path: str) -> dict:
        link = self.v.sequence(d.get("link"), f"{path}.link") if "link" in d else None
        if link is None or len(link) != 2:
            raise self.v.error(f"{path}.link", "expected two site names, e.g. [edge1, cloud]")
        a, b = (self.v.text(x, f"{path}.link[{i}]") for i, x in enumerate(link))
        try:
            self.topo.wan_link(a, b)
        except KeyError:
            raise self.v.error(f"{path}.link", f"no WAN link between {a!r} and {b!r} in topology "
                                               f"{self.topo.name!r}") from None
        out = {"link": (a, b), "down": self.v.flag(d.get("down", False), f"{path}.down")}
        if "delay" in d:
            out["delay_ms"] = self.v.milliseconds(d["delay"], f"{path}.delay")
        if "loss" in d:
            out["loss_pct"] = self.v.number(d["loss"], f"{path}.loss", low=0, high=100, what="a percentage")
        if "rate" in d:
            out["rate_mbit"] = self.v.number(d["rate"], f"{path}.rate", low=0, low_open=True, what="Mbit/s")
        if not out["down"] and len(out) == 2:
            raise self.v.error(path, "a network fault needs `down: true` or at least one of delay, loss, rate")
        return out

    def _delay(self, d: dict, path: str, mode: str) -> dict:
        if mode == "cpu":
            if "cpu" not in d:
                raise self.v.error(f"{path}.cpu", "is required for delay mode cpu (cores, e.g. 0.05)")
            return {"cpu": self.v.number(d["cpu"], f"{path}.cpu", low=0, low_open=True, what="a number of cores")}
        if "delay" not in d:
            raise self.v.error(f"{path}.delay", f"is required for delay mode {mode}")
        delay_ms = self.v.milliseconds(d["delay"], f"{path}.delay")
        if delay_ms <= 0:
            raise self.v.error(f"{path}.delay", f"must be greater than 0, got {d['delay']!r}")
        return {"delay_ms": delay_ms}

    def _no_stray(self, d: dict, path: str, kind: str, mode: str) -> None:
        allowed = {"kind", "mode", "at", "until", "for", "probe"}
        allowed |= {"link", "delay", "loss", "rate", "down"} if kind == "network" else set()
        allowed |= {"site"} if mode == "site" else ({"host"} if kind != "network" else set())
        allowed |= {"delay"} if (kind, mode) in {("delay", "app"), ("delay", "link")} else set()
        allowed |= {"cpu"} if (kind, mode) == ("delay", "cpu") else set()
        allowed |= {"service"} if (kind, mode) in {("delay", "app"), ("service_down", "kill")} else set()
        for key in d:
            if key not in allowed:
                raise self.v.error(f"{path}.{key}", f"does not apply to a {kind} fault in mode {mode}")
