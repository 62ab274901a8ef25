"""Load a topology from YAML, a Python file or a shipped name, validating it strictly into a TopologySpec.

Every mistake is a SpecError naming where it is (``sites.edge1.hosts.mec1.cpu: expected a number of
cores, got 'two'``): unknown keys, wrong types or units, duplicate names or addresses, dangling
references, interface names too long for the kernel, and WAN loops. The YAML format:

.. code-block:: yaml

    name: fatriot                  # required
    subnet: 10.0.0.0/24            # optional
    sites:                         # required, mapping site name -> site
      edge1:
        kind: mec                  # mec (default) | cloud
        hosts:                     # mapping host name -> host (names: at most 10 characters)
          gen: {ip: 10.0.0.1}      # no image: a plain Mininet namespace host
          mec1:
            image: testbed/echo    # a Docker host
            ip: 10.0.0.11          # optional: else the next free address, in declaration order
            mac: 00:00:00:00:00:11 # optional
            cpu: 1.0               # cores, optional
            memory: 256m           # optional
            env: {KEY: value}      # optional
            volumes: [/src:/dst:ro]  # optional
            command: [python3, /app/echo.py]   # optional, list or string (split with shlex)
            access: {bw: 1000, delay: 1ms, jitter: 0ms, loss: 0, max_queue_size: 1000}
            device: false          # true: an end device (no NIC, not anycast) that may `move` between sites
            anycast: false         # true: may share its (explicit) ip with other anycast hosts; the controller steers
            nic:                   # optional, Docker hosts only; `nic: true` gives all defaults
              ip: 10.0.0.111       # optional: else the next free address
              mac: 00:00:00:00:01:11   # optional
              backups: [mec2]      # default backups ('*'): host names, or host:port
              interval: 100ms      # default heartbeat interval
              threshold: 1.5       # RTT_last / RTT_avg ratio that means failure (> 1)
              hysteresis: 3        # good heartbeats in a row before fail-safe ends (>= 1)
              learn: 10            # heartbeats averaged into RTT_avg before detection starts (>= 1)
              min_rtt: 20ms        # floor under RTT_avg (software timing noise is not a fault)
              platform: {message: icmp, interval: 100ms, threshold: 2.0}   # host-platform heartbeat
              services:
                - name: echo-udp
                  proto: udp       # udp | tcp
                  port: 7000
                  heartbeat: {message: udp, payload: "hb", expect: "hb", interval: 100ms, threshold: 1.5}
                  backups: [mec2:7000]   # optional; default: the NIC's backups
          mec2: {image: testbed/echo}         # the backup host
      cloud:
        kind: cloud
        hosts: {vm1: {image: testbed/echo}}
    controller:                    # optional; README "Choosing the controller"
      app: learning                # learning (default) | path of an os-ken app file
      config: {idle_timeout: 30s}  # optional; handed to the app (TESTBED_CONTROLLER_CONFIG)
    wan:                           # optional list of WAN links; with the learning app a tree
      - between: [edge1, cloud]    # two site names
        bw: 100                    # Mbit/s (or '100Mbit', '1Gbit', '500kbit'); applies to both directions
        delay: 10ms                # ONE WAY, per direction; every duration needs its unit: us, ms or s
        jitter: 1ms
        loss: 0.1                  # percent
        max_queue_size: 100        # packets
        forward: {delay: 20ms}     # optional overrides for a->b
        reverse: {bw: 50}          # optional overrides for b->a
    servers: {b: {address: 192.0.2.10, user: root}}   # optional, with key, port, known_hosts: topology/servers.py
    placement: round-robin         # optional: block | round-robin | cpu over localhost then servers, for sites
                                   # without their own `server: NAME` (default: all on localhost)

A service heartbeat's message is icmp, or the service's own protocol (the default): udp sends
``payload`` (default "ping") and, with ``expect``, only that reply counts; tcp connects.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from testbed import yamlio
from testbed.errors import SpecError
from testbed.topology import checks, schema, servers
from testbed.topology.addressing import AddressBook, parse_subnet, with_prefix
from testbed.topology.model import LOCAL_SERVER, HostSpec, SiteSpec, TopologySpec
from testbed.topology.schema import join, mapping
from testbed.topology.units import describe

#: Where the shipped topologies live (`fatriot` -> topologies/fatriot.yaml).
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "topologies"
DEFAULT_SUBNET = "10.0.0.0/24"
_TOP_KEYS = ("name", "subnet", "sites", "wan", "controller", "servers", "placement")
_SITE_KEYS = ("kind", "hosts", "server")
_TOPOLOGY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def shipped_topologies() -> list[str]:
    """The names of the topologies shipped in topologies/."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))


def load_topology(ref: str | Path) -> TopologySpec:
    """The topology `ref` names: a shipped name (`fatriot`), or the path of a .yaml or .py file."""
    path = Path(ref)
    if path.suffix not in (".yaml", ".yml", ".py") and "/" not in str(ref):
        shipped = SHIPPED_DIR / f"{ref}.yaml"
        if not shipped.is_file():
            raise SpecError("", f"no shipped topology {str(ref)!r}; shipped: {', '.join(shipped_topologies())}; "
                            "or give the path of a .yaml or .py file")
        path = shipped
    if not path.is_file():
        raise SpecError("", "no such file", str(path))
    if path.suffix == ".py":
        return _load_python(path)
    if path.suffix not in (".yaml", ".yml"):
        raise SpecError("", "expected a .yaml, .yml or .py topology file", str(path))
    return parse_topology(read_yaml(path), str(path))


def validate_file(path: str | Path) -> TopologySpec:
    """Check a topology file (or shipped name) without running anything: `load_topology`, then its images."""
    from testbed.references import check_images, topology_images

    topo = load_topology(path)
    shipped = SHIPPED_DIR / f"{path}.yaml"
    check_images(topology_images(topo, str(shipped if not Path(path).is_file() and shipped.is_file() else path)))
    return topo


def read_yaml(path: Path) -> object:
    """The data in a YAML file, read by the one reader (`testbed.yamlio`: size, UTF-8, aliases, duplicate keys)."""
    return yamlio.load_yaml(path)


def _load_python(path: Path) -> TopologySpec:
    """Import a .py topology by path (its `__main__` block does not run) and call its `topology()`."""
    module_name = f"_testbed_topology_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise SpecError("", "cannot import as Python", str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
        func = getattr(module, "topology", None)
        if not callable(func):
            raise SpecError("", "a .py topology must define a function topology() -> TopologySpec", str(path))
        result = func()
    except SpecError as exc:
        raise SpecError(exc.path, exc.message, str(path)) from None
    except Exception as exc:  # the user's own code: report it as bad input, with its type
        raise SpecError("", f"topology() failed: {type(exc).__name__}: {exc}", str(path)) from exc
    finally:
        sys.modules.pop(module_name, None)
    if not isinstance(result, TopologySpec):
        raise SpecError("", f"topology() returned {type(result).__name__}, expected a TopologySpec", str(path))
    return result


def parse_topology(data: object, source: str) -> TopologySpec:
    """Validate plain data (as YAML gives it) into a TopologySpec; every mistake is a SpecError naming its path."""
    try:
        return _parse(data)
    except SpecError as exc:
        raise SpecError(exc.path, exc.message, exc.source or source) from None


def _parse(data: object) -> TopologySpec:
    """The body of parse_topology, raising SpecErrors without a source."""
    top = mapping(data, "", _TOP_KEYS)
    for key in ("name", "sites"):
        if key not in top:
            raise SpecError(key, "missing; a topology needs a name and sites")
    name = top["name"]
    if not isinstance(name, str) or not _TOPOLOGY_NAME.match(name):
        raise SpecError("name", f"expected a name of letters, digits, '.', '_' or '-', got {describe(name)}")
    subnet = parse_subnet(top.get("subnet", DEFAULT_SUBNET), "subnet")
    book = AddressBook(subnet)
    site_data = mapping(top["sites"], "sites")
    if not site_data:
        raise SpecError("sites", "expected at least one site")
    known = servers.servers(top.get("servers"))
    sites = tuple(_site(site_name, body, book, known) for site_name, body in site_data.items())
    explicit = {n for n, body in site_data.items() if isinstance(body, dict) and "server" in body}
    sites = servers.place(_allocate(sites, book), top.get("placement"), explicit, known)
    wan_data = top.get("wan") or []
    wan = tuple(schema.wan_link(w, f"wan[{i}]") for i, w in enumerate(schema.sequence(wan_data, "wan")))
    controller = schema.controller(top.get("controller"), "controller")
    checks.check_names(sites)
    checks.check_wan(sites, wan, tree=controller.is_learning)
    spec = TopologySpec(name=name, sites=sites, wan=wan, subnet=str(subnet), controller=controller, servers=known)
    checks.check_backups(spec)
    return spec


def _site(name: str, data: Any, book: AddressBook, known: tuple = ()) -> SiteSpec:
    """One site and its hosts, addresses not yet allocated."""
    path = join("sites", name)
    schema.node_name(name, path, "site")
    d = mapping({} if data is None else data, path, _SITE_KEYS)
    kind = schema.choice(d.get("kind", "mec"), join(path, "kind"), ("mec", "cloud"))
    hosts_data = mapping({} if d.get("hosts") is None else d["hosts"], join(path, "hosts"))
    hosts = tuple(schema.host(h, name, body, join(join(path, "hosts"), h), book) for h, body in hosts_data.items())
    where = servers.site_server(d["server"], join(path, "server"), known) if "server" in d else LOCAL_SERVER
    return SiteSpec(name=name, kind=kind, hosts=hosts, server=where)


def _allocate(sites: tuple[SiteSpec, ...], book: AddressBook) -> tuple[SiteSpec, ...]:
    """Give every host, then its NIC, without an address the next free one, in declaration order."""

    def fill(h: HostSpec) -> HostSpec:
        path = checks.host_path(h.site, h.name)
        if not h.ip:
            h = replace(h, ip=with_prefix(book.next_free(join(path, "ip")), book.subnet))
        if h.nic is not None and not h.nic.ip:
            nic_ip = with_prefix(book.next_free(join(path, "nic.ip")), book.subnet)
            h = replace(h, nic=replace(h.nic, ip=nic_ip))
        return h

    return tuple(replace(s, hosts=tuple(fill(h) for h in s.hosts)) for s in sites)
