"""MEC fault-tolerance testbed: Docker hosts in Mininet, emulated WAN links, a fail-safe NIC."""

__version__ = "0.1.0"
