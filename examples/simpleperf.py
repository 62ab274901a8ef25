#!/usr/bin/env python3
"""Network and CPU parameters (after Mininet's simpleperf.py): four CPU-limited hosts on one
switch, each link 10 Mbit/s, 5 ms and 10 % loss per direction; ping and UDP iperf h1 -> h4.

Ported by changing the import only. On a kernel without netem Mininet's own TCLink drops the
delay and loss with an error line; here the links go to the userspace emulator instead.
The UDP rate is 5 Mbit/s (not Mininet's 10) so that loss is the links', not the queue's.
"""
from sys import argv

from testbed.compat import (CPULimitedHost, Mininet, TCLink, Topo, dumpNodeConnections, info,
                            setLogLevel)


class SingleSwitchTopo(Topo):
    "Single switch connected to n hosts."
    def build(self, n=2, lossy=True):
        switch = self.addSwitch('s1')
        for h in range(n):
            # Each host gets 50%/n of system CPU
            host = self.addHost('h%s' % (h + 1), cpu=.5 / n)
            # 10 Mbps, 5ms delay, 10% (or no) packet loss
            self.addLink(host, switch, bw=10, delay='5ms', loss=10 if lossy else 0, use_htb=True)


def perfTest(lossy=True):
    "Create network and run simple performance test"
    topo = SingleSwitchTopo(n=4, lossy=lossy)
    net = Mininet(topo=topo, host=CPULimitedHost, link=TCLink, autoStaticArp=True)
    net.start()
    info("Dumping host connections\n")
    dumpNodeConnections(net.hosts)
    h1, h4 = net.getNodeByName('h1', 'h4')
    info("CPU limit of h1: %s/%s us\n" % (h1.cgroupGet('cfs_quota_us'), h1.cgroupGet('cfs_period_us')))
    info("Testing latency between h1 and h4\n")
    info(h1.cmd('ping -c 40 -i 0.05 -q', h4.IP()))
    info("Testing bandwidth between h1 and h4\n")
    report = '/tmp/simpleperf-%s-h4.txt' % net.rid
    h4.cmd('iperf -u -s -p 5002 -l 1000 > %s 2>&1 &' % report)
    while 'UNCONN' not in h4.cmd('ss -Hlun sport = :5002'):
        pass
    info(h1.cmd('iperf -u -c %s -p 5002 -b 5M -t 5 -l 1000' % h4.IP()))
    # the receiver's own report: the copy sent back to the client may be lost on these links
    for _ in range(100):
        if '%)' in h4.cmd('cat', report):
            break
        h4.cmd('sleep 0.1')
    info('*** Receiver: ' + h4.cmd('grep "%)"', report))
    h4.cmd('kill %iperf; rm -f', report)
    net.stop()


if __name__ == '__main__':
    setLogLevel('info')
    perfTest(lossy=('testmode' not in argv))
