"""The VF orchestrator's decisions (Tsakanikas et al., Algorithms 1-3), as pure logic with time passed in.

Every `period` (30 s in the paper) the orchestrator collects each node's CPU and memory use; a
node that does not answer has failed, and each VF it hosted is cold-migrated (Algorithm 2); for
an answering node a pluggable predictor gives the probability that it overloads in the next
period, and at or above `k` its VFs are migrated before it does (Algorithm 3: live where
checkpoint/restore works, else state transfer). The destination is the placement algorithm's:
the answering node with the fewest VFs (then the least used) not predicted to overload. Returned decisions are carried out
by the caller (testbed/migration/chain.py, through testbed/migration/primitives.py), which then
re-points the VF's neighbours. `rebuild` is the reset baseline's placement of a whole chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence


@dataclass(frozen=True)
class NodeState:
    """One poll of a node: CPU and memory use as fractions of its limits, at time `t`."""

    t: float
    cpu: float
    ram: float


class Predictor(Protocol):
    def __call__(self, history: Sequence[NodeState], horizon_s: float) -> float:
        """Probability (0..1) that the node overloads within `horizon_s`."""


@dataclass(frozen=True)
class TrendPredictor:
    """The default: the recent trend of the higher of CPU and memory use, extrapolated one period ahead;
    1 when it reaches `threshold`, else the extrapolated use itself (clamped to 0..1)."""

    threshold: float = 0.9
    window: int = 3

    def __call__(self, history: Sequence[NodeState], horizon_s: float) -> float:
        recent = list(history)[-self.window:]
        if not recent:
            return 0.0
        use = [max(s.cpu, s.ram) for s in recent]
        slope = 0.0
        if len(recent) > 1 and recent[-1].t > recent[0].t:
            slope = (use[-1] - use[0]) / (recent[-1].t - recent[0].t)
        ahead = use[-1] + max(slope, 0.0) * horizon_s
        return 1.0 if ahead >= self.threshold - 1e-9 else min(max(ahead, 0.0), 1.0)


#: Predictors by name (the paper's LSTM is optional and not a dependency: none is registered).
PREDICTORS: dict[str, Callable[..., Predictor]] = {"trend": TrendPredictor}


def register(name: str, factory: Callable[..., Predictor]) -> None:
    """Make a predictor known by `name` (to experiments' `predictor:` keys)."""
    PREDICTORS[name] = factory


def make_predictor(name: str, **params: float) -> Predictor:
    """The predictor called `name`; ValueError naming the known ones."""
    if name not in PREDICTORS:
        raise ValueError(f"no predictor {name!r} (known: {', '.join(sorted(PREDICTORS))})")
    return PREDICTORS[name](**params)


@dataclass(frozen=True)
class Decision:
    """Move VF `vf` from `src` to `dst`: `cold` (src failed) or `pre-emptive` (src predicted to overload)."""

    kind: str
    vf: str
    src: str
    dst: str
    reason: str


@dataclass
class Orchestrator:
    """Algorithm 1's loop body: `poll_due(now)`, then `step(now, answers, placement)`."""

    predictor: Predictor = field(default_factory=TrendPredictor)
    k: float = 0.9
    period_s: float = 30.0
    history: dict[str, list[NodeState]] = field(default_factory=dict)
    last_poll: float | None = None
    per_node: int | None = None  # at most this many VFs on a node (None: no limit)
    risk: dict[str, float] = field(default_factory=dict)  # the last poll's overload probabilities

    def poll_due(self, now: float) -> bool:
        """True when a poll is due (the first at once, then every period)."""
        return self.last_poll is None or now - self.last_poll >= self.period_s

    def step(self, now: float, answers: dict[str, NodeState | None], placement: dict[str, str]) -> list[Decision]:
        """Decisions for one poll: `answers` per node (None: no answer), `placement` VF -> node (updated)."""
        self.last_poll = now
        failed = sorted(n for n, s in answers.items() if s is None)
        risk: dict[str, float] = {}
        for node, state in answers.items():
            if state is not None:
                self.history.setdefault(node, []).append(state)
                del self.history[node][:-20]
                risk[node] = self.predictor(self.history[node], self.period_s)
        self.risk = risk
        overloading = sorted(n for n, p in risk.items() if p >= self.k)
        out: list[Decision] = []
        for kind, sources in (("cold", failed), ("pre-emptive", overloading)):
            for src in sources:
                for vf in sorted(v for v, n in placement.items() if n == src):
                    dst = self.place(answers, risk, placement, exclude={src, *failed, *overloading},
                                     per_node=self.per_node)
                    if dst is None:
                        continue  # nowhere to go: the VF stays (and is down if its node failed)
                    why = "no answer" if kind == "cold" else f"p_fail {risk[src]:.2f} >= K {self.k:g}"
                    out.append(Decision(kind, vf, src, dst, why))
                    placement[vf] = dst
        return out

    def rebuild(self, answers: dict[str, NodeState | None], vfs: Sequence[str]) -> dict[str, str]:
        """The reset baseline: a new placement of every VF of the chain (in order) over the answering nodes."""
        placement: dict[str, str] = {}
        overloading = {n for n, p in self.risk.items() if p >= self.k}
        for vf in vfs:
            dst = self.place(answers, self.risk, placement, exclude=overloading, per_node=self.per_node)
            if dst is None:
                dst = self.place(answers, self.risk, placement, exclude=set(), per_node=self.per_node)
            if dst is not None:
                placement[vf] = dst
        return placement

    @staticmethod
    def place(answers: dict[str, NodeState | None], risk: dict[str, float], placement: dict[str, str],
              exclude: set[str], per_node: int | None = None) -> str | None:
        """The placement algorithm: the answering node with the fewest VFs, then the lowest use, then name."""
        candidates = [n for n, s in answers.items() if s is not None and n not in exclude]
        load = {n: sum(1 for v in placement.values() if v == n) for n in candidates}
        if per_node is not None:
            candidates = [n for n in candidates if load[n] < per_node]
        if not candidates:
            return None
        return min(candidates, key=lambda n: (load[n], max(answers[n].cpu, answers[n].ram), n))
