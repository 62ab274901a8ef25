"""The VFO's healing on a chain, without containers: which moves each mode makes, and how neighbours are re-pointed."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from testbed.migration import chain
from testbed.migration.chain import CgroupPoller, ChainRun, Schedule, _heal, vf_command
from testbed.migration.chain_spec import ChainFlow, FailureSpec, VFSpec
from testbed.migration.orchestrator import NodeState, Orchestrator, TrendPredictor

FLOW = ChainFlow("frames", "cam", "cam", (VFSpec("detect", "n1", 0.012, "track"), VFSpec("track", "n2", 0.012, "sink")),
                 ("n3", "n4"), 20.0, 60.0)
IPS = {"cam": "10.0.0.10", "n1": "10.0.0.11", "n2": "10.0.0.12", "n3": "10.0.0.13", "n4": "10.0.0.14"}


class FakeTopo:
    def host(self, name):
        return SimpleNamespace(ip=IPS[name] + "/24", cpu=0.5)


class Recorder(ChainRun):
    """A ChainRun whose moves and resets are recorded instead of carried out."""

    def __init__(self, healing: str) -> None:
        super().__init__(SimpleNamespace(topo=FakeTopo()), FLOW, healing, Path("."), self.log)
        self.placement = {"detect": "n1", "track": "n2"}
        self.done: list = []
        self.events: list = []

    def log(self, action, target, detail):
        self.events.append((action, target, detail))

    def move(self, vf, src, dst, mode, why):
        self.done.append(("move", vf, src, dst, mode))

    def reset(self, placement, why):
        self.done.append(("reset", dict(placement), why))
        self.placement = dict(placement)


def answers(t, n1=0.5, n2=0.5, failed=()):
    use = {"n1": n1, "n2": n2, "n3": 0.05, "n4": 0.02}  # memory 0.1 everywhere: n3 and n4 tie, n3 by name
    return {n: None if n in failed else NodeState(t, u, 0.1) for n, u in use.items()}


def vfo():
    return Orchestrator(TrendPredictor(threshold=0.95), k=0.9, period_s=1.0, per_node=1)


@pytest.mark.parametrize("healing, expected", [
    ("cold", [("move", "track", "n2", "n3", "cold")]),
    ("state-transfer", [("move", "track", "n2", "n3", "cold")]),  # nothing to transfer from a dead node
    ("none", []),
])
def test_a_failed_node_is_healed_by_mode(healing, expected):
    run, o, rec = Recorder(healing), vfo(), {"decisions": []}
    _heal(run, o, answers(1.0), 1.0, rec)
    _heal(run, o, answers(2.0, failed=("n2",)), 2.0, rec)
    assert run.done == expected and len(rec["decisions"]) == 1
    assert run.placement["track"] == ("n2" if healing == "none" else "n3")
    if healing == "none":
        assert run.events[0][0] == "predict" and "not done (healing none)" in run.events[0][2]


def test_reset_rebuilds_the_whole_chain_on_the_answering_nodes():
    run, o, rec = Recorder("reset"), vfo(), {"decisions": []}
    _heal(run, o, answers(1.0, failed=("n2",)), 1.0, rec)
    assert run.done == [("reset", {"detect": "n3", "track": "n4"}, "n2 not answering")]


def test_an_overload_moves_with_state_in_state_transfer_and_cold_in_cold_mode():
    for healing, mode in (("state-transfer", "state-transfer"), ("cold", "cold")):
        run, o, rec = Recorder(healing), vfo(), {"decisions": []}
        for t, cpu in ((1.0, 0.5), (2.0, 0.5), (3.0, 1.0)):
            _heal(run, o, answers(t, n1=cpu), t, rec)
        assert run.done == [("move", "detect", "n1", "n3", mode)], healing
    reset = Recorder("reset")  # the reset baseline acts on failures only
    o = vfo()
    for t, cpu in ((1.0, 0.5), (2.0, 1.0)):
        _heal(reset, o, answers(t, n1=cpu), t, {"decisions": []})
    assert reset.done == [] and reset.placement == {"detect": "n1", "track": "n2"}


def test_repoint_rewrites_the_vf_and_its_predecessor(tmp_path, monkeypatch):
    monkeypatch.setattr(chain.services, "container_path", lambda pid, path: tmp_path / str(pid) / path.lstrip("/"))
    run = Recorder("cold")
    run.tb.node = lambda name: SimpleNamespace(cpid=name)
    run.placement["track"] = "n3"
    assert run.repoint("track") == "n1 -> n3 -> cam"
    assert (tmp_path / "n3/srv/vf/next").read_text() == "10.0.0.10 7200\n"
    assert (tmp_path / "n1/srv/vf/next").read_text() == "10.0.0.13 7200\n"
    assert run.hops() == ["cam", "n1", "n3", "cam"]


def test_rebuild_and_one_vf_per_node():
    o = vfo()
    assert o.rebuild(answers(0), ["a", "b", "c", "d"]) == {"a": "n3", "b": "n4", "c": "n1", "d": "n2"}
    assert o.rebuild(answers(0, failed=("n1", "n2", "n3")), ["a", "b"]) == {"a": "n4"}  # b has nowhere to go


def test_vf_command_and_the_cgroup_of_this_process():
    assert vf_command("vf", 0.012, deadline_s=1.0) == ("python3", "/app/vf.py", "--role", "vf", "--cost", "0.012",
                                                       "--rate", "0", "--size", "200", "--deadline", "1")
    used_ns, mem, limit = CgroupPoller.read(os.getpid())
    assert used_ns > 0 and mem > 0 and limit >= 0
    with pytest.raises(OSError):
        CgroupPoller.read(2 ** 22 + 7)  # no such process: no answer


def test_the_schedule_crashes_the_node_of_the_seeded_vf_and_brings_it_back():
    nodes = {n: SimpleNamespace(down=False, log=[]) for n in IPS}
    for n in nodes.values():
        n.crash = lambda n=n: (n.log.append("crash"), setattr(n, "down", True))
        n.recover = lambda n=n: (n.log.append("recover"), setattr(n, "down", False))
    run = Recorder("cold")
    run.flow = ChainFlow("frames", "cam", "cam", FLOW.vfs, FLOW.spares, 20.0, 30.0,
                         failures=FailureSpec(10.0, 3.0, 10.0))
    tb = SimpleNamespace(node=lambda name: nodes[name])
    record = {"failures": []}
    ticks = itertools.count(0.0, 50.0)  # a fake clock: 50 s later at each look
    sched = Schedule(tb, run, record, lambda: next(ticks), 17, 0)
    assert [(round(t, 1), what, i) for t, what, i in sched.todo] == [(8.0, "fail", 1), (20.4, "fail", 0)]
    sched.start()
    deadline = time.monotonic() + 5
    while (nodes["n1"].log != ["crash", "recover"] or nodes["n2"].log != ["crash", "recover"]) \
            and time.monotonic() < deadline:
        sched.done.wait(0.01)
    sched.stop()
    assert nodes["n2"].log == ["crash", "recover"] and nodes["n1"].log == ["crash", "recover"]
    assert [f["vf"] for f in record["failures"]] == ["track", "detect"]
    assert [e[0] for e in run.events] == ["fail", "fail", "recover", "recover"]
