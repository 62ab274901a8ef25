"""A virtual-function chain as a traffic flow (`kind: chain`), frozen and validated before anything starts.

    traffic:
      - name: frames
        kind: chain
        from: cam                  # the source of numbered frames (a Docker host of image testbed/vf)
        to: cam                    # the sink (may be the source: one process sends and counts)
        vfs:                       # in chain order; `next` (a VF's name, or `sink`) overrides the order
          - {name: detect, host: n1, cost: 12ms}   # CPU per frame
          - {name: track, host: n2, cost: 12ms}
        spares: [n3, n4]           # nodes the orchestrator may move VFs to
        rate: 20                   # frames per second
        duration: 60s
        window: 1s                 # fps is counted per window; downtime = windows below `below` x rate
        below: 0.9
        deadline: 1s               # a VF drops frames older than this (0: never)
        orchestrator: {period: 30s, predictor: trend, threshold: 0.9, window: 3, k: 0.9, healing: cold}
        stress: [{host: n1, at: 10s, for: 20s, workers: 2}]   # CPU hogs in the node's container (cgroup)
        failures: {mean: 20s, from: 5s, down: 10s}  # node failures at Poisson times from the seed

`healing` is what the orchestrator (the paper's VFO) does, overridden per variant by `healing:`:
`cold` (a failed node's VFs, and an overloaded node's, restarted elsewhere from the image; the
neighbours re-pointed), `state-transfer` (as cold for failures; an overloaded node's VF moves with
its state directory: the honest stand-in for live migration), `live` (CRIU; refused where container
checkpoint/restore fails), `reset` (the baseline: every VF of the chain restarted on a new
placement after a failure) and `none` (nothing is done). A failure hits the node hosting a VF
chosen by the seeded generator, so every variant sees the same failures.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

HEALING = ("cold", "state-transfer", "live", "reset", "none")
VF_IMAGE = "testbed/vf"
SINK = "sink"
_KEYS = {"name", "kind", "from", "to", "vfs", "spares", "rate", "duration", "window", "below", "orchestrator",
         "stress", "failures", "size", "deadline"}
_VFO_KEYS = {"period", "predictor", "k", "healing", "threshold", "window"}
_PREDICTOR_PARAMS = ("threshold", "window")


@dataclass(frozen=True)
class VFSpec:
    """One virtual function: its name, first node, CPU seconds per frame and the VF (or sink) after it."""

    name: str
    host: str
    cost_s: float
    next: str


@dataclass(frozen=True)
class StressSpec:
    """CPU hogs (`workers` busy loops) in a node's container from `at_s` for `duration_s` seconds."""

    host: str
    at_s: float
    duration_s: float
    workers: int = 2


@dataclass(frozen=True)
class FailureSpec:
    """Node failures at Poisson times (mean gap `mean_s`) from `from_s`; each node back after `down_s` (None: never)."""

    mean_s: float
    from_s: float = 0.0
    down_s: float | None = None


@dataclass(frozen=True)
class VfoSpec:
    """The orchestrator: poll period, predictor (registered name and parameters), K and the healing mode."""

    period_s: float = 30.0
    predictor: str = "trend"
    params: tuple[tuple[str, float], ...] = ()
    k: float = 0.9
    healing: str = "cold"


@dataclass(frozen=True)
class ChainFlow:
    """Frames from `src` through the VFs to `dst` at `rate` per second for `duration_s`, healed by the VFO."""

    name: str
    src: str
    dst: str
    vfs: tuple[VFSpec, ...]
    spares: tuple[str, ...]
    rate: float
    duration_s: float
    window_s: float = 1.0
    below: float = 0.9
    size: int = 200
    deadline_s: float = 1.0  # a VF drops frames older than this (0: never)
    vfo: VfoSpec = VfoSpec()
    stress: tuple[StressSpec, ...] = ()
    failures: FailureSpec | None = None
    start_s: float = 0.0  # the chain's frames start with the run (time triggers are bounded by its end)
    proto: str = "udp"  # as a probe flow's, for the report's traffic line
    port: int = 7200
    count: int = dataclasses.field(init=False, default=0)  # frames the source sends

    def __post_init__(self) -> None:
        object.__setattr__(self, "count", int(self.rate * self.duration_s))

    @property
    def order(self) -> tuple[str, ...]:
        """The VFs' names in the order frames pass them."""
        by_name, out, name = {v.name: v for v in self.vfs}, [], self.vfs[0].name
        while name != SINK:
            out.append(name)
            name = by_name[name].next
        return tuple(out)

    def healing(self, variant: Any) -> str:
        """The healing mode in `variant` (its `healing:`, else the orchestrator's)."""
        return getattr(variant, "healing", None) or self.vfo.healing


def healing_choice(v: Any, value: object, path: str) -> str:
    """A healing mode; `live` refused with the reason where container checkpoint/restore fails."""
    from testbed.migration.primitives import live_refusal

    mode = v.choice(value, path, HEALING)
    if mode == "live":
        raise v.error(path, (live_refusal() or "live migration unavailable")
                      + "; use healing: state-transfer or cold (labelled so in the report)")
    return mode


def parse_chain(checker: Any, item: object, path: str) -> ChainFlow:
    """A `kind: chain` traffic entry, checked against the topology; SpecError names the path."""
    v = checker.v
    d = v.mapping(item, path, _KEYS, {"name", "from", "to", "vfs", "rate", "duration"})
    vfo = _vfo(v, d.get("orchestrator", {}), f"{path}.orchestrator")
    vfs = _vfs(v, v.sequence(d["vfs"], f"{path}.vfs"), f"{path}.vfs")
    hosts = [_node(checker, vf.host, f"{path}.vfs[{i}].host") for i, vf in enumerate(vfs)]
    src, dst = _node(checker, d["from"], f"{path}.from"), _node(checker, d["to"], f"{path}.to")
    used: dict[str, str] = {dst: "the sink", src: "the source" + (" and the sink" if src == dst else "")}
    for i, (vf, host) in enumerate(zip(vfs, hosts)):
        if host in used:
            raise v.error(f"{path}.vfs[{i}].host", f"{host} already hosts {used[host]} (one VF per node)")
        used[host] = f"VF {vf.name}"
    spares = tuple(_node(checker, h, f"{path}.spares[{i}]")
                   for i, h in enumerate(v.sequence(d.get("spares", []), f"{path}.spares")))
    for i, h in enumerate(spares):
        if h in used or spares.index(h) != i:
            raise v.error(f"{path}.spares[{i}]", f"{h} is already in the chain (spares are free nodes)")
    duration = v.positive_seconds(d["duration"], f"{path}.duration")
    stress = tuple(_stress(checker, s, f"{path}.stress[{i}]", duration, set(spares) | {x.host for x in vfs})
                   for i, s in enumerate(v.sequence(d.get("stress", []), f"{path}.stress")))
    failures = _failures(v, d["failures"], f"{path}.failures", duration) if "failures" in d else None
    if vfo.period_s >= duration:
        raise v.error(f"{path}.orchestrator.period", f"{vfo.period_s:g}s is not shorter than the chain's duration")
    return ChainFlow(
        name=v.text(d["name"], f"{path}.name"), src=src, dst=dst, vfs=vfs, spares=spares,
        rate=v.number(d["rate"], f"{path}.rate", low=0, low_open=True, high=2000, what="frames per second"),
        duration_s=duration,
        window_s=v.positive_seconds(d.get("window", "1s"), f"{path}.window"),
        below=v.number(d.get("below", 0.9), f"{path}.below", low=0, low_open=True, high=1),
        size=v.integer(d.get("size", 200), f"{path}.size", low=32, high=1400),
        deadline_s=v.seconds(d.get("deadline", "1s"), f"{path}.deadline"),
        vfo=vfo, stress=stress, failures=failures)


def _vfo(v: Any, item: object, path: str) -> VfoSpec:
    from testbed.migration.orchestrator import PREDICTORS

    d = v.mapping(item, path, _VFO_KEYS)
    name = v.text(d.get("predictor", "trend"), f"{path}.predictor")
    if name not in PREDICTORS:
        raise v.error(f"{path}.predictor", f"no predictor {name!r} (known: {', '.join(sorted(PREDICTORS))})")
    known = {f.name for f in dataclasses.fields(PREDICTORS[name])} if dataclasses.is_dataclass(PREDICTORS[name]) else set()
    params = []
    for key in _PREDICTOR_PARAMS:
        if key in d:
            if key not in known:
                raise v.error(f"{path}.{key}", f"predictor {name!r} takes no {key}")
            value = v.integer(d[key], f"{path}.{key}", low=2) if key == "window" else \
                v.number(d[key], f"{path}.{key}", low=0, low_open=True, high=1)
            params.append((key, value))
    return VfoSpec(period_s=v.positive_seconds(d.get("period", "30s"), f"{path}.period"), predictor=name,
                   params=tuple(params), k=v.number(d.get("k", 0.9), f"{path}.k", low=0, low_open=True, high=1),
                   healing=healing_choice(v, d.get("healing", "cold"), f"{path}.healing"))


def _vfs(v: Any, items: list, path: str) -> tuple[VFSpec, ...]:
    """The VFs, each with its `next`; a loop, a dangling `next` or a VF never reached is an error."""
    if not items:
        raise v.error(path, "needs at least one VF")
    raw = [v.mapping(item, f"{path}[{i}]", {"name", "host", "cost", "next"}, {"name", "host"})
           for i, item in enumerate(items)]
    names = [v.text(r["name"], f"{path}[{i}].name") for i, r in enumerate(raw)]
    for i, name in enumerate(names):
        if name == SINK or names.index(name) != i:
            raise v.error(f"{path}[{i}].name", f"duplicate or reserved name {name!r}")
    out = []
    for i, r in enumerate(raw):
        nxt = v.text(r["next"], f"{path}[{i}].next") if "next" in r else (names[i + 1] if i + 1 < len(names) else SINK)
        if nxt != SINK and nxt not in names:
            raise v.error(f"{path}[{i}].next", f"no VF {nxt!r} (VFs: {', '.join(names)}, or {SINK})")
        out.append(VFSpec(names[i], v.text(r["host"], f"{path}[{i}].host"),
                          v.seconds(r.get("cost", 0), f"{path}[{i}].cost"), nxt))
    seen, name, by_name = [], names[0], {x.name: x for x in out}
    while name != SINK:
        if name in seen:
            i = names.index(seen[-1])
            raise v.error(f"{path}[{i}].next", "the chain has a loop: " + " -> ".join([*seen, name]))
        seen.append(name)
        name = by_name[name].next
    missed = [n for n in names if n not in seen]
    if missed:
        raise v.error(f"{path}[{names.index(missed[0])}]", f"VF {missed[0]!r} is never reached from the source")
    return tuple(out)


def _node(checker: Any, value: object, path: str) -> str:
    """A Docker host running image testbed/vf (a node of the chain)."""
    host = checker.host(value, path)
    spec = checker.hosts[host]
    if not spec.is_docker or spec.image != VF_IMAGE:
        raise checker.v.error(path, f"{host} is not a Docker host of image {VF_IMAGE} (got {spec.image or 'none'})")
    return host


def _stress(checker: Any, item: object, path: str, duration: float, nodes: set[str]) -> StressSpec:
    v = checker.v
    d = v.mapping(item, path, {"host", "at", "for", "workers"}, {"host", "at", "for"})
    host = checker.host(d["host"], f"{path}.host")
    if host not in nodes:
        raise v.error(f"{path}.host", f"{host} is not a VF node or spare of this chain")
    at = v.seconds(d["at"], f"{path}.at")
    if at >= duration:
        raise v.error(f"{path}.at", f"{at:g}s is after the chain ends ({duration:g}s)")
    return StressSpec(host, at, v.positive_seconds(d["for"], f"{path}.for"),
                      v.integer(d.get("workers", 2), f"{path}.workers", low=1, high=16))


def _failures(v: Any, item: object, path: str, duration: float) -> FailureSpec:
    d = v.mapping(item, path, {"mean", "from", "down"}, {"mean"})
    start = v.seconds(d.get("from", 0), f"{path}.from")
    if start >= duration:
        raise v.error(f"{path}.from", f"{start:g}s is after the chain ends ({duration:g}s)")
    return FailureSpec(v.positive_seconds(d["mean"], f"{path}.mean"), start,
                       v.positive_seconds(d["down"], f"{path}.down") if "down" in d else None)
