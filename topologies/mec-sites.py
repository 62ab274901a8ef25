"""Three MEC sites in a star around a cloud site, each WAN link shaped differently (the YAML's twin)."""

from testbed.topology.api import MecTopo
from testbed.topology.model import TopologySpec

#: Per edge site: (WAN shape to the cloud). edge1 near and fast, edge2 jittery, edge3 far and lossy.
WAN = {
    "edge1": dict(bw=100, delay="10ms"),
    "edge2": dict(bw=50, delay="20ms", jitter="2ms"),
    "edge3": dict(bw=20, delay="35ms", loss=0.1),
}


def topology() -> TopologySpec:
    """edge1..edge3, each with a client and an echo MEC host behind a NIC that falls back to cloud1."""
    t = MecTopo("mec-sites", subnet="10.0.0.0/24")
    for i, site in enumerate(WAN, start=1):
        t.addSite(site)
        t.addHost(f"cli{i}", site=site, ip=f"10.0.0.{i}")
        t.addDocker(f"mec{i}", site=site, dimage="testbed/echo", ip=f"10.0.0.{10 + i}",
                    nic=t.nic(ip=f"10.0.0.{110 + i}", backups=["cloud1"],
                              services=[t.service("echo-udp", "udp", 7000)]))
    t.addSite("cloud", kind="cloud")
    t.addDocker("cloud1", site="cloud", dimage="testbed/echo", ip="10.0.0.100")
    for site, shape in WAN.items():
        t.addWan(site, "cloud", max_queue_size=100, **shape)
    return t.build()


if __name__ == "__main__":
    from testbed.emulation.run import main; main(topology())
