#!/usr/bin/env python3
"""A Mininet script that keeps Mininet's own TCLink and only changes where Mininet comes from.

argv[1]: extra TCLink option as key=value (e.g. use_tbf=True), to see it refused by name.
"""
import sys

from mininet.link import TCLink
from mininet.log import info, setLogLevel

from testbed.compat import Mininet

setLogLevel('info')
extra = dict(a.split('=', 1) for a in sys.argv[1:])
extra = {k: (v == 'True') if v in ('True', 'False') else v for k, v in extra.items()}
net = Mininet(link=TCLink)
h1, h2 = net.addHost('h1'), net.addHost('h2')
s1 = net.addSwitch('s1')
net.addLink(h1, s1, delay='10ms', loss=5, **extra)
net.addLink(h2, s1)
net.start()
net.pingAll()
info(h1.cmd('ping -c 400 -i 0.01 -q', h2.IP()))
net.stop()
