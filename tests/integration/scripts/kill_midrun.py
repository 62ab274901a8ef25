#!/usr/bin/env python3
"""A ported script that builds a network with one link class, says READY, and waits to be killed.

argv[1]: tclink (shaped, the default class), link (testbed Link: plain veths), mininet-tclink
(Mininet's own TCLink, mapped), docker (a Docker host on a shaped link).
"""
import sys

from mininet.link import TCLink as MininetTCLink

from testbed.compat import Containernet, Link, TCLink, setLogLevel

setLogLevel('info')
kind = sys.argv[1]
cls = {'tclink': TCLink, 'link': Link, 'mininet-tclink': MininetTCLink, 'docker': TCLink}[kind]
shape = {} if kind == 'link' else {'delay': '1ms', 'bw': 50}
net = Containernet()
h1 = net.addDocker('d1', dimage='testbed/base') if kind == 'docker' else net.addHost('h1')
h2 = net.addHost('h2')
s1, s2 = net.addSwitch('s1'), net.addSwitch('s2')
net.addLink(h1, s1, cls=cls, **shape)
net.addLink(s1, s2, cls=cls, **shape)
net.addLink(s2, h2, cls=cls)
net.start()
assert net.pingAll() == 0.0
print('READY', flush=True)
sys.stdin.read()
