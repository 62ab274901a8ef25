#!/usr/bin/env python3
"""Link and CPU limits (after Mininet's limit.py): every interface limited to `bw` by a customised
TCIntf, hosts limited to a CPU fraction with CFS; iperf, then Mininet's CPU limit test.

Ported by changing the import only. The RT scheduler case is left out: this kernel has no RT
group scheduling (CPULimitedHost(sched='rt') is refused, naming it).
"""
from testbed.compat import CPULimitedHost, Mininet, TCIntf, TreeTopo, custom, info, setLogLevel


def testLinkLimit(net, bw):
    "Run bandwidth limit test"
    info('*** Testing network %.2f Mbps bandwidth limit\n' % bw)
    net.iperf()


def limit(bw=10, cpu=.1):
    """Example/test of link and CPU bandwidth limits
       bw: interface bandwidth limit in Mbps
       cpu: cpu limit as fraction of overall CPU time"""
    intf = custom(TCIntf, bw=bw)
    myTopo = TreeTopo(depth=1, fanout=2)
    info('*** Testing with cfs bandwidth limiting\n')
    host = custom(CPULimitedHost, sched='cfs', cpu=cpu)
    net = Mininet(topo=myTopo, intf=intf, host=host, waitConnected=True)
    net.start()
    testLinkLimit(net, bw=bw)
    net.runCpuLimitTest(cpu=cpu)
    net.stop()


if __name__ == '__main__':
    setLogLevel('info')
    limit()
