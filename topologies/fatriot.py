"""The Fatriot paper's evaluation setup (Fig. 8): a traffic generator, a MEC host behind a fail-safe NIC, its backup."""

from testbed.topology.api import MecTopo
from testbed.topology.model import TopologySpec


def topology() -> TopologySpec:
    """gen (traffic generator), mec1 (echo over UDP 7000 and TCP 7001 behind a NIC), mec2 (the backup)."""
    t = MecTopo("fatriot", subnet="10.0.0.0/24")
    t.addSite("lab", kind="mec")
    services = [t.service("echo-udp", "udp", 7000), t.service("echo-tcp", "tcp", 7001)]
    t.addDocker("gen", site="lab", dimage="testbed/probe", ip="10.0.0.1")
    t.addDocker("mec1", site="lab", dimage="testbed/echo", ip="10.0.0.11",
                nic=t.nic(ip="10.0.0.111", backups=["mec2"], services=services))
    t.addDocker("mec2", site="lab", dimage="testbed/echo", ip="10.0.0.12",
                nic=t.nic(ip="10.0.0.112", backups=["mec1"], services=services))
    return t.build()


if __name__ == "__main__":
    from testbed.emulation.run import main; main(topology())
