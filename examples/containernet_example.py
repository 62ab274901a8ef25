#!/usr/bin/env python3
"""The simplest Containernet network (after Containernet's containernet_example.py): two Docker
hosts, two switches, a 100 ms / 1 Mbit/s link between them; ping across; the CLI.

Ported by changing the import only (and the image: no registry is reached here).
"""
from testbed.compat import CLI, Containernet, Controller, TCLink, info, setLogLevel

setLogLevel('info')

net = Containernet(controller=Controller)
info('*** Adding controller\n')
net.addController('c0')
info('*** Adding docker containers\n')
d1 = net.addDocker('d1', ip='10.0.0.251', dimage="testbed/base")
d2 = net.addDocker('d2', ip='10.0.0.252', dimage="testbed/base")
info('*** Adding switches\n')
s1 = net.addSwitch('s1')
s2 = net.addSwitch('s2')
info('*** Creating links\n')
net.addLink(d1, s1)
net.addLink(s1, s2, cls=TCLink, delay='100ms', bw=1)
net.addLink(s2, d2)
info('*** Starting network\n')
net.start()
info('*** Testing connectivity\n')
net.ping([d1, d2])
info(d1.cmd('ping -c 5 -i 0.2 10.0.0.252'))
info('*** Running CLI\n')
CLI(net)
info('*** Stopping network')
net.stop()
