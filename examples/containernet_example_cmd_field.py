#!/usr/bin/env python3
"""A container whose image has a CMD (after Containernet's containernet_example_cmd_field.py): the
service starts once the network is up (`d2.start()` is then a no-op), addDocker having waited
for the image's exposed ports; a client container talks to it across a 100 ms link.

Ported by changing the import only (testbed/echo's UDP/TCP echo service instead of httpd).
"""
from testbed.compat import CLI, Containernet, Controller, TCLink, info, setLogLevel

setLogLevel('info')

net = Containernet(controller=Controller)
info('*** Adding controller\n')
net.addController('c0')
info('*** Adding docker containers\n')
# normal container without CMD
d1 = net.addDocker('d1', ip='10.0.0.251', dimage="testbed/base")
# echo container with a CMD that runs the service in the foreground
d2 = net.addDocker('d2', ip='10.0.0.252', dimage="testbed/echo")
info('*** Adding switches\n')
s1 = net.addSwitch('s1')
s2 = net.addSwitch('s2')
info('*** Creating links\n')
net.addLink(d1, s1)
net.addLink(s1, s2, cls=TCLink, delay='100ms', bw=1)
net.addLink(s2, d2)
info('*** Starting network\n')
net.start()
d2.start()
info('*** The service answers\n')
info(d1.cmd("python3 -c \"import socket,time; s=socket.create_connection(('10.0.0.252', 7001), 5); "
            "t=time.time(); s.sendall(b'hello\\n'); print('reply', s.recv(64), 'after %.1f ms' % "
            "((time.time()-t)*1000))\""))
info(d2.cmd('ps -eo args | grep -c "[e]cho.py"').strip() + ' echo process(es) in d2\n')
info('*** Running CLI\n')
CLI(net)
info('*** Stopping network')
net.stop()
