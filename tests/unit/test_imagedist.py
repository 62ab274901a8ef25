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


def test_expected_transfer_is_frames_over_rate_plus_handshakes() -> None:
    # 25,000,000 payload bytes: 17,266 segments of at most 1,448 bytes, each 66 bytes of headers on the wire
    frames = 25_000_000 + 17_266 * 66
    assert expected_transfer_s(25_000_000, 100, 0.0) == pytest.approx(frames * 8 / 100e6)
    assert expected_transfer_s(25_000_000, 25, 0.05) == pytest.approx(frames * 8 / 25e6 + 0.15)
    assert expected_transfer_s(1_448, 1, 0.0) == pytest.approx((1_448 + 66) * 8 / 1e6)  # one full segment
