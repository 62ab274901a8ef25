"""The running network: Docker hosts in Mininet, OVS switches, the controller, links and NICs."""
