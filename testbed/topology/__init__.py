"""Topologies as data: MEC sites, hosts, fail-safe NICs and WAN links, from YAML or Python."""
