"""Fixtures shared by the integration and experiment tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from testbed import ledger
from testbed.testing import leftovers


@pytest.fixture
def nsserver() -> Iterator[Any]:
    """A second server (an sshd with its own OVS in a namespace of ours), removed after the test; fails if any of it is left."""
    from testbed.cluster import harness

    rid = ledger.new_run_id()
    ns = harness.start(ledger.Ledger(rid), ovs=True)
    yield ns
    ns.stop()
    assert ns.leftovers() == [] and leftovers(rid) == []
    ledger.forget(rid)
