"""The experiment seed reaches the link emulator: runner -> Testbed -> backend -> per-link, per-direction RNGs."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.experiment.runner import Records, RunContext, run_once
from testbed.experiment.spec import parse_experiment
from testbed.ledger import Ledger
from testbed.linkemu.schedule import direction_rng

from test_experiment_spec import GOOD, fake_loader


class _Captured(Exception):
    """Raised by the fake testbed factory once it has seen its arguments."""


def test_each_repetition_gets_its_own_seed_the_same_in_every_variant(tmp_path: Path) -> None:
    spec = parse_experiment({**GOOD, "seed": 42}, "good.yaml", load_topology=fake_loader)
    seen: list[int] = []

    def factory(*args: object, seed: int | None = None, **kwargs: object) -> None:
        seen.append(seed)  # type: ignore[arg-type]
        raise _Captured

    for variant in spec.variants:
        for rep in (0, 1):
            ctx = RunContext(spec, variant, rep, Records(tmp_path))
            with pytest.raises(_Captured):
                run_once(ctx, tmp_path / f"{variant.name}-{rep}", factory)
    assert seen == [42000, 42001, 42000, 42001]


def test_make_backend_hands_the_seed_to_the_userspace_emulator(tmp_path: Path) -> None:
    from testbed.emulation.testbed import make_backend

    backend = make_backend("userspace", Ledger("ab12", tmp_path, state_dir=tmp_path), tmp_path, 7)
    assert backend.seed == 7  # type: ignore[attr-defined]


def test_direction_rngs_depend_on_seed_link_and_direction_only() -> None:
    draws = lambda seed, link, which: [direction_rng(seed, link, which).random() for _ in range(3)][0]  # noqa: E731
    assert draws(7, "wan-a-b", "forward") == draws(7, "wan-a-b", "forward")
    assert len({draws(7, "wan-a-b", "forward"), draws(8, "wan-a-b", "forward"), draws(7, "acc-h1", "forward"),
                draws(7, "wan-a-b", "reverse")}) == 4
