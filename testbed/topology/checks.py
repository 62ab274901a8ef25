"""Whole-topology checks: unique names, backups that exist, a WAN that is a tree where the controller needs one."""

from __future__ import annotations

import logging
from dataclasses import replace

from testbed.errors import SpecError
from testbed.topology.model import ControllerSpec, SiteSpec, TopologySpec, WanLinkSpec

log = logging.getLogger(__name__)


def host_path(site: str, host: str) -> str:
    """The YAML path of a host."""
    return f"sites.{site}.hosts.{host}"


def check_names(sites: tuple[SiteSpec, ...]) -> None:
    """Host names are unique across all sites, and no host is named like a site (one Mininet node namespace)."""
    site_names = {s.name for s in sites}
    owner: dict[str, str] = {}
    for site in sites:
        for h in site.hosts:
            path = host_path(site.name, h.name)
            if h.name in owner:
                raise SpecError(path, f"host name {h.name!r} is already used in site {owner[h.name]}; "
                                "host names must be unique across the whole topology")
            if h.name in site_names:
                raise SpecError(path, f"host name {h.name!r} is also a site (switch) name; node names must be unique")
            owner[h.name] = site.name


def _check_backup_list(spec: TopologySpec, owner: str, items: tuple[str, ...], path: str) -> None:
    """Every backup in `items` names an existing Docker host other than `owner`."""
    names = {h.name: h for h in spec.hosts()}
    for i, item in enumerate(items):
        name = item.partition(":")[0]
        where = f"{path}[{i}]"
        if name not in names:
            raise SpecError(where, f"backup host {name!r} does not exist")
        if name == owner:
            raise SpecError(where, f"host {owner!r} cannot be its own backup")
        if not names[name].is_docker:
            raise SpecError(where, f"backup host {name!r} is not a Docker host (it has no image) and runs no service")


def check_backups(spec: TopologySpec) -> None:
    """NIC and service backups name existing Docker hosts, never the NIC's own host."""
    for h in spec.hosts():
        if h.nic is None:
            continue
        path = f"{host_path(h.site, h.name)}.nic"
        _check_backup_list(spec, h.name, h.nic.backups, f"{path}.backups")
        for i, svc in enumerate(h.nic.services):
            _check_backup_list(spec, h.name, svc.backups, f"{path}.services[{i}].backups")


def check_wan(sites: tuple[SiteSpec, ...], wan: tuple[WanLinkSpec, ...], tree: bool = True) -> None:
    """WAN links join two different existing sites, at most once each; with `tree` (the learning app,
    which floods) the site graph has no loop, otherwise a loop is only logged."""
    names = {s.name for s in sites}
    parent = {n: n for n in names}

    def root(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    seen: dict[frozenset[str], int] = {}
    for i, link in enumerate(wan):
        path = f"wan[{i}].between"
        for end in (link.a, link.b):
            if end not in names:
                raise SpecError(path, f"site {end!r} does not exist (sites: {', '.join(sorted(names))})")
        if link.a == link.b:
            raise SpecError(path, f"a WAN link joins site {link.a!r} to itself")
        pair = frozenset((link.a, link.b))
        if pair in seen:
            raise SpecError(path, f"duplicate WAN link {link.name}: wan[{seen[pair]}] already joins these sites")
        seen[pair] = i
        ra, rb = root(link.a), root(link.b)
        if ra == rb and tree:
            raise SpecError(path, f"WAN link {link.name} closes a loop; the controller is an L2 learning switch, "
                            "so the site graph must be a tree (or choose another controller app)")
        if ra == rb:
            log.warning("WAN link %s closes a loop: the controller app must not flood around it", link.name)
        parent[ra] = rb
    groups: dict[str, list[str]] = {}
    for site in sites:
        groups.setdefault(root(site.name), []).append(site.name)
    if len(groups) > 1:
        parts = " | ".join(", ".join(g) for g in groups.values())
        log.warning("the WAN does not connect all sites; these groups cannot reach each other: %s", parts)



def with_controller(spec: TopologySpec, controller: ControllerSpec) -> TopologySpec:
    """`spec` run by another controller app (`testbed topo --controller`), checked for what that app needs."""
    check_wan(spec.sites, spec.wan, tree=controller.is_learning)
    return replace(spec, controller=controller)
