"""Image distribution without root: the container command and the transfer time a link should give."""

from __future__ import annotations

import pytest

from types import SimpleNamespace

from testbed.replication.imagedist import expected_transfer_s, run_argv


def test_a_start_up_container_is_labelled_and_has_no_network() -> None:
    ledger = SimpleNamespace(rid="abc123")
    argv = run_argv(ledger, "tbabc123start0", "testbed/echo")
    assert argv[:2] == ["docker", "run"] and "--rm" in argv and argv[-2:] == ["testbed/echo", "true"]
    assert argv[argv.index("--label") + 1] == "testbed.run=abc123"
    assert argv[argv.index("--network") + 1] == "none"


def test_expected_transfer_is_bytes_over_rate_plus_handshakes() -> None:
    assert expected_transfer_s(25_000_000, 100, 0.0) == pytest.approx(2.0)
    assert expected_transfer_s(25_000_000, 25, 0.05) == pytest.approx(8.0 + 0.15)
