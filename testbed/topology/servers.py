"""Strict readers for the `servers:` section and the sites' placement on them (`server:` or `placement:`).

.. code-block:: yaml

    servers:                       # optional; the machine the testbed runs on is `localhost`
      b:
        address: 192.0.2.10        # IP address or host name, reached by ssh
        user: root                 # optional (default root)
        key: /root/.ssh/testbed    # optional private key file (must exist)
        port: 22                   # optional
        known_hosts: /root/.ssh/known_hosts   # optional
        cpus: 8                    # optional: cores it gives the hosts (needed by `placement: cpu`)
    placement: block               # optional, for sites without `server:`: block | round-robin | cpu
    sites:
      edge1: {server: b, hosts: ...}
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import replace
from pathlib import Path

from testbed.errors import SpecError
from testbed.topology.model import LOCAL_SERVER, ServerSpec, SiteSpec
from testbed.topology.schema import join, mapping, node_name, port, string
from testbed.topology.units import cpu_cores, describe

_SERVER_KEYS = ("address", "user", "key", "port", "known_hosts", "cpus")
PLACEMENTS = ("block", "round-robin", "cpu")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


def address(value: object, path: str) -> str:
    """An IP address or a DNS host name (no user@, no port, no spaces)."""
    text = string(value, path, "an IP address or host name")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", text) or not _HOSTNAME.match(text):
        raise SpecError(path, f"expected an IP address or host name, got {describe(value)}")
    return text


def _file(value: object, path: str, what: str) -> str:
    """The absolute path of an existing file."""
    text = string(value, path, f"the path of {what}")
    found = Path(text).expanduser()
    if not found.is_file():
        raise SpecError(path, f"no such file {text!r} ({what})")
    return str(found.resolve())


def server(name: str, data: object, path: str) -> ServerSpec:
    """One entry of `servers:`."""
    node_name(name, path, "server")
    if name == LOCAL_SERVER:
        raise SpecError(path, f"{LOCAL_SERVER!r} is this machine; it needs no entry in servers")
    d = mapping({} if data is None else data, path, _SERVER_KEYS)
    if "address" not in d:
        raise SpecError(join(path, "address"), "missing; a server needs the address ssh reaches it at")
    spec = ServerSpec(name=name, address=address(d["address"], join(path, "address")))
    if "user" in d:
        user = d["user"]
        if not isinstance(user, str) or not _USER.match(user):
            raise SpecError(join(path, "user"), f"expected a user name, got {describe(user)}")
        spec = replace(spec, user=user)
    if "key" in d:
        spec = replace(spec, key=_file(d["key"], join(path, "key"), "an ssh private key"))
    if "known_hosts" in d:
        spec = replace(spec, known_hosts=_file(d["known_hosts"], join(path, "known_hosts"), "a known_hosts file"))
    if "port" in d:
        spec = replace(spec, port=port(d["port"], join(path, "port")))
    if "cpus" in d:
        spec = replace(spec, cpus=cpu_cores(d["cpus"], join(path, "cpus")))
    return spec


def servers(data: object, path: str = "servers") -> tuple[ServerSpec, ...]:
    """The `servers:` section: a mapping of server name to server; no two at one address and port."""
    if data is None:
        return ()
    out = tuple(server(name, body, join(path, name)) for name, body in mapping(data, path).items())
    seen: dict[tuple[str, int], str] = {}
    for s in out:
        if (s.address, s.port) in seen:
            raise SpecError(join(join(path, s.name), "address"),
                            f"{s.address}:{s.port} is already server {seen[(s.address, s.port)]!r}")
        seen[(s.address, s.port)] = s.name
    return out


def site_server(value: object, path: str, known: tuple[ServerSpec, ...]) -> str:
    """A site's `server:`: `localhost` or the name of an entry in `servers:`."""
    names = [LOCAL_SERVER, *(s.name for s in known)]
    if value not in names:
        raise SpecError(path, f"unknown server {describe(value)}; servers: {', '.join(names)}")
    return str(value)


def place(sites: tuple[SiteSpec, ...], policy: object, explicit: set[str], known: tuple[ServerSpec, ...],
          path: str = "placement") -> tuple[SiteSpec, ...]:
    """Sites not in `explicit` placed by `policy` over localhost then the servers in order (None: localhost)."""
    if policy is None:
        return sites
    if policy not in PLACEMENTS:
        raise SpecError(path, f"expected one of {', '.join(PLACEMENTS)}, got {describe(policy)}")
    names = [LOCAL_SERVER, *(s.name for s in known)]
    free = [s for s in sites if s.name not in explicit]
    if policy == "cpu":
        where = by_cpu(sites, free, known, path)
        return tuple(replace(s, server=where.get(s.name, s.server)) for s in sites)
    where = {}
    for i, site in enumerate(free):
        if policy == "round-robin":
            where[site.name] = names[i % len(names)]
        else:  # block: contiguous runs, the first servers taking one more when it does not divide
            size, extra = divmod(len(free), len(names))
            bounds, start = [], 0
            for j in range(len(names)):
                start += size + (1 if j < extra else 0)
                bounds.append(start)
            where[site.name] = names[next(j for j, b in enumerate(bounds) if i < b)]
    return tuple(replace(s, server=where.get(s.name, s.server)) for s in sites)


#: What a host without a `cpu:` limit counts for in `placement: cpu` (cores).
UNLIMITED_HOST_CPUS = 1.0


def site_cpus(site: SiteSpec) -> float:
    """The cores a site's hosts need: each host's `cpu:` limit, UNLIMITED_HOST_CPUS for one without."""
    return sum(UNLIMITED_HOST_CPUS if h.cpu is None else h.cpu for h in site.hosts)


def by_cpu(sites: tuple[SiteSpec, ...], free: list[SiteSpec], known: tuple[ServerSpec, ...],
           path: str) -> dict[str, str]:
    """Sites in `free`, largest CPU demand first, each on the server with the most cores left (ties: listed first).

    A server's budget is its `cpus:` (localhost: this machine's cores); sites placed with `server:`
    use their server's first. SpecError where a server has no budget or a site fits on none.
    """
    left = {LOCAL_SERVER: float(os.cpu_count() or 1)}
    for s in known:
        if s.cpus is None:
            raise SpecError(f"servers.{s.name}.cpus", "missing; `placement: cpu` needs every server's cores")
        left[s.name] = s.cpus
    free_names = {s.name for s in free}
    for site in sites:
        if site.name not in free_names:
            left[site.server] -= site_cpus(site)
    order = list(left)
    where: dict[str, str] = {}
    demand = {s.name: site_cpus(s) for s in free}
    for site in sorted(free, key=lambda s: -demand[s.name]):  # stable: equal demands keep file order
        best = max(order, key=lambda n: (left[n], -order.index(n)))
        if demand[site.name] > left[best] + 1e-9:
            budget = ", ".join(f"{n} {left[n]:g}" for n in order)
            raise SpecError(path, f"site {site.name!r} needs {demand[site.name]:g} cores; the most left on "
                                  f"any server is {left[best]:g} (cores left: {budget})")
        where[site.name] = best
        left[best] -= demand[site.name]
    return where
