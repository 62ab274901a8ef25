"""Detached runs, as containerlab users expect: deploy a topology, inspect it, exec in a node, destroy it.

`deploy` starts `python -m testbed.deploy serve …` in its own session; that process owns the
Testbed (it is the run ledger's owner), writes what is where to /run/testbed/<id>/deploy.json
once everything is up, and tears the run down on SIGTERM. `destroy` signals it, waits for it to
end, then sweeps the run's ledger, so nothing is left whatever state it was in.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from testbed import clean, ledger, proc
from testbed.errors import TestbedError, UsageError
from testbed.ledger import RUN_ROOT

log = logging.getLogger(__name__)

#: How long `deploy` waits for the topology to come up, and `destroy` for its owner to tear it down.
UP_TIMEOUT_S = 600.0
DOWN_TIMEOUT_S = 120.0


def state_path(rid: str) -> Path:
    """Where a deployed run says what is where (removed with the run)."""
    return RUN_ROOT / rid / "deploy.json"


def shape_dict(shape: Any) -> dict[str, Any]:
    """A Shape as JSON, with the human reading next to it."""
    from testbed.emulation.run import describe_shape

    return {**dataclasses.asdict(shape), "text": describe_shape(shape)}


def describe(tb: Any) -> dict[str, Any]:
    """Nodes (addresses, PIDs, containers, NICs), links and their shaping, controller, backends of a running Testbed."""
    nodes = []
    for site in tb.topo.sites:
        for h in site.hosts:
            node = tb.node(h.name)
            entry: dict[str, Any] = {
                "name": h.name, "site": site.name, "kind": "docker" if h.is_docker else "namespace",
                "image": h.image, "ip": h.ip, "mac": h.mac, "pid": node.pid,
                "container": getattr(node, "cname", None), "switch": tb.switch_of[site.name],
                "interfaces": [i.name for i in node.intfList()], "access": shape_dict(h.access), "nic": None}
            if h.name in tb.nic_nodes:
                nic = tb.nic_nodes[h.name]
                entry["nic"] = {"node": nic.name, "ip": h.nic.ip if h.nic else None, "pid": nic.pid,
                                "socket": str(tb.nic_socket(h.name)) if h.name in tb.nics else None}
                nodes.append({"name": nic.name, "site": site.name, "kind": "nic", "image": None, "ip": None,
                              "mac": None, "pid": nic.pid, "container": None, "switch": tb.switch_of[site.name],
                              "interfaces": [i.name for i in nic.intfList()], "access": None,
                              "nic": {"in_front_of": h.name}})
            nodes.append(entry)
    links = [{"id": tb.wan_link_id(w.a, w.b), "between": [w.a, w.b], "forward": shape_dict(w.forward),
              "reverse": shape_dict(w.reverse)} for w in tb.topo.wan]
    ctl = tb.controller
    return {"rid": tb.rid, "topology": tb.topo.name, "run_dir": str(tb.run_dir.resolve()), "owner": os.getpid(),
            "switches": dict(tb.switch_of), "nodes": nodes, "links": links,
            "controller": {"target": ctl.target if ctl.port else None, "pid": ctl.pid},
            "backends": tb.backends()}


def topo_json(args: Any) -> dict[str, Any]:
    """`testbed topo --json`: bring the topology up, describe it, self-check its WAN links, tear it down."""
    from testbed.emulation.run import default_run_dir, topology_of
    from testbed.emulation.testbed import Testbed

    topo = topology_of(args)
    tb = Testbed(topo, Path(args.out) if args.out else default_run_dir("topo", topo.name), nics=not args.no_nic)
    with tb:
        info = describe(tb)
        info["selfcheck"] = tb.selfcheck() if topo.wan and not args.no_selfcheck else []
    return info


def _write(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.rename(path)


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(topology: str, rid: str, out: Path, nics: bool) -> int:
    """The detached owner of a deployed run: bring it up, say where things are, hold it until SIGTERM."""
    from testbed.emulation.testbed import Testbed
    from testbed.topology.loader import load_topology

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop)
    topo = load_topology(topology)
    tb = Testbed(topo, out, nics=nics, rid=rid)
    try:
        with tb:
            _write(state_path(rid), describe(tb))
            log.info("run %s of %s is up; pid %d holds it", rid, topo.name, os.getpid())
            while True:
                signal.pause()
    except KeyboardInterrupt:
        log.info("run %s: torn down on request", rid)
    return 0


def deploy(topology: str, out: Path | None, nics: bool = True, timeout: float = UP_TIMEOUT_S) -> dict[str, Any]:
    """Start a detached run of `topology`; returns its description once it is up (TestbedError if it fails)."""
    from testbed.topology.loader import validate_file

    topo = validate_file(topology)  # a bad file or a missing image is a SpecError (exit 2) before anything starts
    rid = ledger.new_run_id()
    run_dir = Path(out) if out else Path("runs") / f"deploy-{topo.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "testbed.deploy", "serve", "--rid", rid, "--out", str(run_dir.resolve()),
            str(Path(topology).resolve()) if Path(topology).exists() else topology]
    if not nics:
        args.append("--no-nic")
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    child = proc.spawn(args, output=run_dir / "deploy.log", env=env)
    deadline = time.monotonic() + timeout
    path = state_path(rid)
    while not path.exists():
        if child.poll() is not None:
            raise TestbedError(f"deploy of {topo.name} failed (exit {child.returncode}): "
                               f"{_tail(run_dir / 'deploy.log')}; see {run_dir / 'deploy.log'}")
        if time.monotonic() > deadline:
            os.kill(child.pid, signal.SIGTERM)
            raise TestbedError(f"deploy of {topo.name}: not up within {timeout:g} s; see {run_dir / 'deploy.log'}")
        time.sleep(0.1)
    return json.loads(path.read_text())


def _tail(path: Path, lines: int = 1) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def check_rid(rid: str) -> str:
    """`rid` if it has the shape of a run id, else UsageError."""
    if not ledger.valid_run_id(rid):
        raise UsageError(f"{rid!r}: a run id is four hex digits, e.g. 3fa9 (testbed inspect lists them)")
    return rid


def deployed() -> list[dict[str, Any]]:
    """Every deployed run whose description exists, with whether its owner still runs."""
    runs = []
    for path in sorted(RUN_ROOT.glob("*/deploy.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        data["alive"] = ledger.owner_alive(data["rid"])
        runs.append(data)
    return runs


def inspect(rid: str) -> dict[str, Any]:
    """The description of deployed run `rid` (UsageError when there is none)."""
    path = state_path(check_rid(rid))
    if not path.exists():
        raise UsageError(f"no deployed run {rid} (testbed inspect lists them)")
    data = json.loads(path.read_text())
    data["alive"] = ledger.owner_alive(rid)
    return data


def exec_argv(rid: str, node: str, command: list[str]) -> list[str]:
    """The command line that runs `command` inside node `node` of deployed run `rid`."""
    check_rid(rid)
    if not command:
        raise UsageError("exec: give the command after --, e.g. testbed exec RUN NODE -- ping -c1 10.0.0.2")
    nodes = {n["name"]: n for n in inspect(rid)["nodes"]}
    if node not in nodes:
        raise UsageError(f"run {rid} has no node {node!r} (has: {', '.join(sorted(nodes))})")
    entry = nodes[node]
    if entry["container"]:
        return ["docker", "exec", entry["container"], *command]
    return ["nsenter", "-t", str(entry["pid"]), "-n", "--", *command]


def destroy(rid: str, timeout: float = DOWN_TIMEOUT_S) -> clean.Cleanup:
    """Stop run `rid`'s owner (it tears down what it made), then remove whatever is left from the ledger."""
    check_rid(rid)
    head = ledger.header(rid)
    if not head and not state_path(rid).exists() and rid not in clean.labelled_runs():
        raise UsageError(f"no run {rid} (testbed inspect lists the deployed ones)")
    pid, start = head.get("owner"), head.get("owner_start")
    alive = ledger.owner_alive(rid)
    if alive:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while ledger.proc_start_time(pid) == start and time.monotonic() < deadline:
            time.sleep(0.1)
        if ledger.proc_start_time(pid) == start:
            log.warning("run %s: owner %d still running after %g s, killing it", rid, pid, timeout)
            os.kill(pid, signal.SIGKILL)
    out = clean.clean_run(rid)
    if alive:
        out.removed.insert(0, f"run {rid} (its owner, pid {pid}, tore it down)")
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m testbed.deploy serve …`: the detached owner process (started by `testbed deploy`)."""
    p = argparse.ArgumentParser(prog="python -m testbed.deploy")
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("serve")
    s.add_argument("topology")
    s.add_argument("--rid", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--no-nic", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from mininet.log import lg

        lg.propagate = False
    except ImportError:
        pass
    try:
        return serve(a.topology, a.rid, Path(a.out), nics=not a.no_nic)
    except TestbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
