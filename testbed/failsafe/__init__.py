"""The fail-safe NIC: a software model of the Fatriot SmartNIC in front of an MEC host."""
