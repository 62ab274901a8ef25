"""netem gets the run's seed per link and direction where tc can take it, and says so where it cannot."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from testbed import proc
from testbed.ledger import Ledger
from testbed.links import netem
from testbed.links.base import LinkEnds
from testbed.linkemu.schedule import link_seed
from testbed.topology.model import Shape


def test_seed_only_where_netem_draws_random_numbers() -> None:
    assert netem.netem_args(Shape(loss_pct=1), seed=9)[-2:] == ["seed", "9"]
    assert netem.netem_args(Shape(delay_ms=5, jitter_ms=1), seed=9)[-2:] == ["seed", "9"]
    assert "seed" not in netem.netem_args(Shape(delay_ms=5), seed=9)
    assert "seed" not in netem.netem_args(Shape(loss_pct=1))


def test_link_seed_is_stable_and_differs_by_seed_link_and_direction() -> None:
    assert link_seed(1, "wan-a-b", "forward") == link_seed(1, "wan-a-b", "forward")
    assert len({link_seed(1, "wan-a-b", "forward"), link_seed(2, "wan-a-b", "forward"),
                link_seed(1, "acc-h1", "forward"), link_seed(1, "wan-a-b", "reverse")}) == 4
    assert 0 <= link_seed(1, "x", "forward") < 2 ** 32


def _backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tc_has_seed: bool) -> tuple[netem.NetemBackend, list]:
    cmds: list[list[str]] = []

    def run(args, **kwargs) -> proc.Result:
        cmds.append([str(a) for a in args])
        return proc.Result(list(args), 0, "", "[ seed SEED ]" if tc_has_seed else "[ ecn ]")

    monkeypatch.setattr(netem.proc, "run", run)
    backend = netem.NetemBackend(Ledger("1234", tmp_path / "run", state_dir=tmp_path), seed=5)
    backend.create(LinkEnds("wan-a-b", "a-e", None, "b-e", None), Shape(loss_pct=10), Shape(loss_pct=10))
    return backend, [c for c in cmds if c[:3] == ["tc", "qdisc", "add"] and "help" not in c]


def test_backend_seeds_each_direction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, adds = _backend(tmp_path, monkeypatch, tc_has_seed=True)
    assert [c[-1] for c in adds] == [str(link_seed(5, "wan-a-b", "forward")), str(link_seed(5, "wan-a-b", "reverse"))]


def test_backend_without_tc_seed_warns_and_does_not_pass_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="testbed.links.netem"):
        backend, adds = _backend(tmp_path, monkeypatch, tc_has_seed=False)
    assert backend.seed is None and adds and not any("seed" in c for c in adds)
    assert "not reproducible" in caplog.text
