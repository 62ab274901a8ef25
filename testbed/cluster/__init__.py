"""Topologies over several machines: servers reached over ssh, sites placed on them (Mininet Cluster Edition)."""
