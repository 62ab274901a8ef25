"""What this machine offers a ported script (OVS datapath, netem), found once per process by doctor's probes."""

from __future__ import annotations

import functools

from testbed import doctor
from testbed.errors import TestbedError


@functools.lru_cache(maxsize=1)
def ovs_datapath() -> str:
    """"kernel" or "userspace": the datapath `testbed doctor` finds; TestbedError when OVS is unusable."""
    datapath, why = doctor.probe_ovs()
    if datapath is None:
        raise TestbedError(f"Open vSwitch is not usable: {why}")
    return datapath


def mininet_datapath() -> str:
    """The datapath as Mininet's OVSSwitch names it ("kernel" or "user")."""
    return "user" if ovs_datapath() == "userspace" else "kernel"


@functools.lru_cache(maxsize=1)
def link_backend_name() -> str:
    """"netem" where the kernel has sch_netem, else "userspace" (the project's link emulator)."""
    return "netem" if doctor.probe_netem()[0] else "userspace"
