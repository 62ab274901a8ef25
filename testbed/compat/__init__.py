"""Mininet and Containernet names for ported scripts: replace the `from mininet.… import …` lines by one.

    from testbed.compat import Containernet, Docker, Controller, OVSSwitch, TCLink, CLI, info, setLogLevel

The classes are the testbed's: OVSSwitch on this machine's datapath, Controller the project's
os-ken controller, TCLink emulated by netem or the userspace link emulator, Docker a testbed
container; each run has a run id and a ledger (`testbed clean --run ID` after a crash). What
cannot work here is refused with an error naming it, never run into silent loss.
"""

from mininet.log import debug, error, info, lg, output, setLogLevel, warn
from mininet.topo import SingleSwitchTopo, Topo
from mininet.topolib import TreeTopo
from mininet.util import dumpNodeConnections, quietRun

from testbed.compat.cli import CLI
from testbed.compat.docker import Docker
from testbed.compat.link import Link, TCLink, TestbedIntf
from testbed.compat.net import Containernet, Mininet
from testbed.compat.nodes import (Controller, CPULimitedHost, Host, OVSKernelSwitch, OVSSwitch,
                                  RemoteController)
from testbed.compat.params import custom
from testbed.compat.topolib import ContainerTreeTopo, TreeContainerNet

#: Mininet's names for interfaces: shaping options go to the link's backend (see TestbedIntf).
Intf = TCIntf = TestbedIntf
DefaultController = Controller

__all__ = ["CLI", "Containernet", "ContainerTreeTopo", "Controller", "CPULimitedHost", "DefaultController",
           "Docker", "Host", "Intf", "Link", "Mininet", "OVSKernelSwitch", "OVSSwitch", "RemoteController",
           "SingleSwitchTopo", "TCIntf", "TCLink", "Topo", "TreeContainerNet", "TreeTopo", "custom",
           "debug", "dumpNodeConnections", "error", "info", "lg", "output", "quietRun", "setLogLevel",
           "warn"]
