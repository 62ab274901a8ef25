"""The /proc helpers faults use to act inside a container without `docker exec` (own process, no root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testbed.errors import TestbedError
from testbed.experiment.faults import _in_container, host_pid


def test_host_pid_maps_a_pid_of_the_same_namespace_to_itself():
    assert host_pid(os.getpid(), os.getpid()) == os.getpid()


def test_host_pid_and_paths_of_a_gone_container_are_testbed_errors():
    with pytest.raises(TestbedError, match="gone"):
        host_pid(2**22 + 12345, 1)
    with pytest.raises(TestbedError, match="gone"):
        _in_container(2**22 + 12345, "/run/echo/pid")
    assert _in_container(os.getpid(), "/run/echo/pid") == Path(f"/proc/{os.getpid()}/root/run/echo/pid")
