#!/usr/bin/env python3
"""Two controllers, each with its own switch (after Mininet's controllers2.py), built with the
mid-level net.add*() API and started by hand: c1 drives s1, c2 drives s2.

Ported by changing the import only: Controller is the project's os-ken controller (Mininet's
reference `controller` program is not installed); each one listens on a free port of its own.
"""
from testbed.compat import CLI, Controller, Mininet, OVSSwitch, info, setLogLevel


def multiControllerNet():
    "Create a network from semi-scratch with multiple controllers."

    net = Mininet(controller=Controller, switch=OVSSwitch, waitConnected=True)

    info("*** Creating (reference) controllers\n")
    c1 = net.addController('c1', port=6633)
    c2 = net.addController('c2', port=6634)

    info("*** Creating switches\n")
    s1 = net.addSwitch('s1')
    s2 = net.addSwitch('s2')

    info("*** Creating hosts\n")
    hosts1 = [net.addHost('h%d' % n) for n in (3, 4)]
    hosts2 = [net.addHost('h%d' % n) for n in (5, 6)]

    info("*** Creating links\n")
    for h in hosts1:
        net.addLink(s1, h)
    for h in hosts2:
        net.addLink(s2, h)
    net.addLink(s1, s2)

    info("*** Starting network\n")
    net.build()
    c1.start()
    c2.start()
    s1.start([c1])
    s2.start([c2])

    info("*** Testing network\n")
    net.pingAll()

    info("*** Running CLI\n")
    CLI(net)

    info("*** Stopping network\n")
    net.stop()


if __name__ == '__main__':
    setLogLevel('info')  # for CLI output
    multiControllerNet()
