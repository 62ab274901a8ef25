#!/usr/bin/env python3
"""Docker hosts next to namespace hosts (after Containernet's dockerhosts.py): CPU and memory
limits given Docker's way, a second interface on a container, Containernet's extended ping, and
a container added with its link while the network runs.

Ported by changing the import only; what cannot work here is left out: `cpu_shares` (a relative
weight: refused), `port_bindings` (a path around the emulated network: refused).
"""
from testbed.compat import CLI, Containernet, Controller, Docker, OVSSwitch, info, setLogLevel


def topology():
    "Create a network with some docker containers acting as hosts."

    net = Containernet(controller=Controller)

    info('*** Adding controller\n')
    net.addController('c0')

    info('*** Adding hosts\n')
    h1 = net.addHost('h1')
    h2 = net.addHost('h2')

    info('*** Adding docker containers\n')
    d1 = net.addDocker('d1', ip='10.0.0.251', dimage="testbed/base")
    d2 = net.addDocker('d2', ip='10.0.0.252', dimage="testbed/base", cpu_period=50000, cpu_quota=25000)
    d3 = net.addHost('d3', ip='11.0.0.253', cls=Docker, dimage="testbed/base", mem_limit='64m')
    d5 = net.addDocker('d5', dimage="testbed/base", volumes=["/etc/hostname:/mnt/vol1:ro"])

    info('*** Adding switch\n')
    s1 = net.addSwitch('s1')
    s2 = net.addSwitch('s2', cls=OVSSwitch)
    s3 = net.addSwitch('s3')

    info('*** Creating links\n')
    net.addLink(h1, s1)
    net.addLink(s1, d1)
    net.addLink(h2, s2)
    net.addLink(d2, s2)
    net.addLink(s1, s2)
    net.addLink(d5, s1)
    # a second interface on a docker container
    net.addLink(d2, s3, params1={"ip": "11.0.0.254/8"})
    net.addLink(d3, s3)

    info('*** Starting network\n')
    net.start()

    net.ping([d1, d2])

    # our extended ping functionality
    net.ping([d1], manualdestip="10.0.0.252")
    net.ping([d2, d3], manualdestip="11.0.0.254")

    info('*** Limits seen in the cgroups\n')
    info('d2 cpu: %s/%s\n' % (d2.cmd('cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us').strip(),
                              d2.cmd('cat /sys/fs/cgroup/cpu/cpu.cfs_period_us').strip()))
    info('d3 memory: %s\n' % d3.cmd('cat /sys/fs/cgroup/memory/memory.limit_in_bytes').strip())
    d2.updateCpuLimit(cpu_quota=10000)
    d3.updateMemoryLimit(mem_limit=128 * 1024 * 1024)
    info('d2 cpu updated: %s/%s\n' % (d2.cmd('cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us').strip(),
                                      d2.cmd('cat /sys/fs/cgroup/cpu/cpu.cfs_period_us').strip()))
    info('d3 memory updated: %s\n' % d3.cmd('cat /sys/fs/cgroup/memory/memory.limit_in_bytes').strip())
    info('d5 volume: %s\n' % d5.cmd('cat /mnt/vol1').strip())

    info('*** Dynamically add a container at runtime\n')
    d4 = net.addDocker('d4', dimage="testbed/base")
    # we have to specify a manual ip when we add a link at runtime
    net.addLink(d4, s1, params1={"ip": "10.0.0.254/8"})

    net.ping([d1], manualdestip="10.0.0.254")

    info('*** Removing it again\n')
    net.removeLink(node1=d4, node2=s1)
    net.removeDocker('d4')
    net.ping([d1], manualdestip="10.0.0.254", timeout="1")

    info('*** Running CLI\n')
    CLI(net)

    info('*** Stopping network')
    net.stop()


if __name__ == '__main__':
    setLogLevel('info')
    topology()
