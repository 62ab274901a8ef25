"""Unit tests for topology value parsing: durations, rates, loss, queues, memory and CPU, with path-naming errors."""

from __future__ import annotations

import pytest

from testbed.errors import SpecError
from testbed.topology import units


@pytest.mark.parametrize("value, ms", [
    ("10ms", 10.0), ("1.5s", 1500.0), ("250us", 0.25), (0, 0.0), ("0", 0.0), ("20 ms", 20.0), (".5ms", 0.5),
])
def test_duration_ms_accepts_mininet_notation(value: object, ms: float) -> None:
    assert units.duration_ms(value, "x") == pytest.approx(ms)


def test_duration_s_converts_to_seconds() -> None:
    assert units.duration_s("100ms", "x") == pytest.approx(0.1)
    assert units.duration_s("2s", "x") == pytest.approx(2.0)


@pytest.mark.parametrize("value", ["ten", "10m", "10 parsecs", "-5ms", -1, True, None, [10], float("nan"), ""])
def test_duration_rejects_bad_values_naming_the_path(value: object) -> None:
    with pytest.raises(SpecError) as err:
        units.duration_ms(value, "wan[0].delay")
    assert err.value.path == "wan[0].delay"
    assert "duration" in err.value.message


@pytest.mark.parametrize("value", [100, 0.5, "100", "2.5"])
def test_a_bare_number_is_not_a_duration(value: object) -> None:
    """One grammar everywhere: a bare number would be seconds to one reader and milliseconds to another."""
    with pytest.raises(SpecError) as err:
        units.duration_ms(value, "variants[0].heartbeat_interval")
    assert str(err.value) == f"variants[0].heartbeat_interval: a duration needs a unit (us, ms, s), got {value!r}"


def test_duration_message_quotes_the_bad_value() -> None:
    with pytest.raises(SpecError, match=r"^wan\[0\]\.delay: expected a duration like 10ms.*got 'ten'$"):
        units.duration_ms("ten", "wan[0].delay")


def test_positive_duration_rejects_zero() -> None:
    with pytest.raises(SpecError, match="> 0"):
        units.positive_duration_s("0ms", "nic.interval")


@pytest.mark.parametrize("value, mbit", [
    (100, 100.0), (2.5, 2.5), ("100Mbit", 100.0), ("1Gbit", 1000.0), ("500kbit", 0.5), ("10mbit", 10.0), ("42", 42.0),
])
def test_bandwidth_in_mbit(value: object, mbit: float) -> None:
    assert units.bandwidth_mbit(value, "bw") == pytest.approx(mbit)


@pytest.mark.parametrize("value", ["100MBps", "fast", 0, -10, True, "1 Tbit", None])
def test_bandwidth_rejects(value: object) -> None:
    with pytest.raises(SpecError) as err:
        units.bandwidth_mbit(value, "sites.a.hosts.h.access.bw")
    assert err.value.path == "sites.a.hosts.h.access.bw"


@pytest.mark.parametrize("value, pct", [(0, 0.0), (0.1, 0.1), (100, 100.0), ("2.5%", 2.5), ("1", 1.0)])
def test_loss_in_percent(value: object, pct: float) -> None:
    assert units.loss_pct(value, "loss") == pytest.approx(pct)


@pytest.mark.parametrize("value", [100.1, -0.1, "lots", False, "150%"])
def test_loss_rejects(value: object) -> None:
    with pytest.raises(SpecError, match="^loss: "):
        units.loss_pct(value, "loss")


def test_queue_packets() -> None:
    assert units.queue_packets(1000, "q") == 1000
    for bad in (0, -1, 10.5, "100", True):
        with pytest.raises(SpecError, match="^q: expected a queue size"):
            units.queue_packets(bad, "q")


@pytest.mark.parametrize("value, nbytes", [
    ("256m", 256 << 20), ("1g", 1 << 30), ("1G", 1 << 30), ("8192k", 8 << 20), (64 << 20, 64 << 20), ("10000000", 10_000_000),
])
def test_memory_in_docker_notation(value: object, nbytes: int) -> None:
    assert units.memory_bytes(value, "memory") == nbytes


@pytest.mark.parametrize("value", ["256MiB", "lots", "1.5g", True, 1024, "4m", None])
def test_memory_rejects_bad_and_too_small(value: object) -> None:
    with pytest.raises(SpecError, match="^memory: expected a memory size"):
        units.memory_bytes(value, "memory")


def test_memory_docker_keeps_notation() -> None:
    assert units.memory_docker("256M", "m") == "256m"
    assert units.memory_docker(64 << 20, "m") == str(64 << 20)


def test_cpu_cores() -> None:
    assert units.cpu_cores(1, "cpu") == 1.0
    assert units.cpu_cores(0.5, "cpu") == 0.5
    with pytest.raises(SpecError, match=r"^sites\.edge1\.hosts\.mec1\.cpu: expected a number of cores, got 'two'$"):
        units.cpu_cores("two", "sites.edge1.hosts.mec1.cpu")
    for bad in (0, -1.0, True, None):
        with pytest.raises(SpecError):
            units.cpu_cores(bad, "cpu")
