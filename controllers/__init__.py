"""OpenFlow controller apps (os-ken) and the plain-Python logic they delegate to."""
