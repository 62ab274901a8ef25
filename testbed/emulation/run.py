"""`testbed topo` and topology scripts: bring a topology up, show it, open the Mininet CLI, tear down."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Sequence

from rich.console import Console
from rich.table import Table

from testbed.emulation.testbed import Testbed
from testbed.topology.model import Shape, TopologySpec


def default_run_dir(kind: str, name: str) -> Path:
    """runs/<kind>-<name>-<timestamp> under the current directory."""
    return Path("runs") / f"{kind}-{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def describe_shape(s: Shape) -> str:
    """A shape as Mininet users write it, e.g. `100 Mbit/s, 10 ms ± 1 ms, 0.1 % loss`."""
    parts = []
    if s.bw_mbit:
        parts.append(f"{s.bw_mbit:g} Mbit/s")
    if s.delay_ms or s.jitter_ms:
        parts.append(f"{s.delay_ms:g} ms" + (f" ± {s.jitter_ms:g} ms" if s.jitter_ms else ""))
    if s.loss_pct:
        parts.append(f"{s.loss_pct:g} % loss")
    if s.queue_pkts:
        parts.append(f"queue {s.queue_pkts}")
    return ", ".join(parts) or "unshaped"


def show(tb: Testbed, console: Console) -> None:
    """Print hosts, switches, links with their shapes, and the backends in use."""
    hosts = Table(title=f"{tb.topo.name}: run {tb.rid} in {tb.run_dir}")
    for col in ("host", "site", "kind", "address", "NIC", "switch"):
        hosts.add_column(col)
    for site in tb.topo.sites:
        for h in site.hosts:
            kind = f"docker {h.image}" if h.is_docker else "namespace"
            nic = h.nic.ip if (h.nic and h.name in tb.nic_nodes) else "-"
            hosts.add_row(h.name, site.name, kind, h.ip, nic, tb.switch_of[site.name])
    console.print(hosts)
    if tb.topo.wan:
        links = Table(title="WAN links (delay is one way, per direction)")
        for col in ("link", "a→b", "b→a", "id"):
            links.add_column(col)
        for w in tb.topo.wan:
            links.add_row(w.name, describe_shape(w.forward), describe_shape(w.reverse),
                          tb.wan_link_id(w.a, w.b))
        console.print(links)
    console.print("backends: " + ", ".join(f"{k}={v}" for k, v in tb.backends().items()))


def show_selfcheck(rows: list[dict], console: Console) -> None:
    """Print configured vs measured RTT per path (site pairs, then hosts inside a site)."""
    table = Table(title="self-check: ping RTT of every site pair's path and every host's access path")
    for col in ("link", "from → to", "configured ms", "measured avg ms", "mdev ms", "error ms"):
        table.add_column(col)
    for r in rows:
        m = r.get("measured") or {}
        table.add_row(r["link"], f"{r.get('src', '-')} → {r.get('dst', '-')}",
                      f"{r['configured_rtt_ms']}", f"{m.get('avg', 'lost')}", f"{m.get('mdev', '-')}",
                      f"{r.get('error_ms', '-')}")
    console.print(table)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def bring_up(topo: TopologySpec, out: str | None, *, cli: bool = True, nics: bool = True,
             selfcheck: bool = True, hold: float = 0.0) -> int:
    """Bring `topo` up, show it, run the CLI (or hold), and always tear it down."""
    console = Console(stderr=False)
    signal.signal(signal.SIGTERM, _terminate)
    tb = Testbed(topo, Path(out) if out else default_run_dir("topo", topo.name), nics=nics)
    with tb:
        show(tb, console)
        if selfcheck and topo.wan:
            show_selfcheck(tb.selfcheck(), console)
        if cli:
            from testbed.compat.cli import CLI  # pingall and net skip the NIC nodes (no IP)

            CLI(tb.net)
        elif hold:
            console.print(f"holding the network up for {hold:g} s")
            time.sleep(hold)
    console.print(f"torn down; run directory {tb.run_dir}")
    return 0


def topology_of(args: argparse.Namespace) -> TopologySpec:
    """The topology a `topo`/`deploy` command names, images checked, with `--controller` applied."""
    from testbed.topology.loader import validate_file

    topo = validate_file(args.topology)  # also checks its images exist, before anything starts
    if getattr(args, "controller", None):
        from testbed.topology import checks, schema
        from testbed.topology.model import ControllerSpec

        app = schema.controller_app(args.controller, "--controller")
        topo = checks.with_controller(topo, ControllerSpec(app=app, config_json=topo.controller.config_json
                                                           if app == topo.controller.app else "{}"))
    return topo


def topo_command(args: argparse.Namespace) -> int:
    """The `testbed topo` verb."""
    topo = topology_of(args)
    return bring_up(topo, args.out, cli=not args.no_cli, nics=not args.no_nic,
                    selfcheck=not args.no_selfcheck, hold=args.hold)


def main(topo: TopologySpec, argv: Sequence[str] | None = None) -> None:
    """Entry point for topology scripts: `sudo .venv/bin/python topologies/NAME.py [--no-cli]`."""
    p = argparse.ArgumentParser(description=f"bring up topology {topo.name}")
    p.add_argument("--out")
    p.add_argument("--no-cli", action="store_true")
    p.add_argument("--no-nic", action="store_true")
    p.add_argument("--no-selfcheck", action="store_true")
    p.add_argument("--hold", type=float, default=0.0)
    a = p.parse_args(argv)
    from testbed.errors import TestbedError

    try:
        code = bring_up(topo, a.out, cli=not a.no_cli, nics=not a.no_nic,
                        selfcheck=not a.no_selfcheck, hold=a.hold)
    except TestbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
