"""The `testbed` command: parses the verbs and hands each to the module that does the work."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from testbed import __version__, proc
from testbed.errors import TestbedError, UsageError


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def cmd_doctor(args: argparse.Namespace) -> int:
    """Print what this machine offers and which backends the testbed will use."""
    from testbed import doctor

    if args.server:
        checks = doctor.diagnose_server(args.server, args.topology)
        for c in checks:
            mark = "ok" if c.ok else ("MISSING" if c.required else "absent")
            print(json.dumps(c.__dict__) if args.json else f"{c.name:12} {mark:8} {c.value}{'' if c.ok else '  ' + c.hint}")
        return 0 if all(c.ok for c in checks if c.required) else 1
    report = doctor.diagnose()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        from testbed.doctor_view import show

        show(report)
    return 0 if report.ok else 1


def cmd_clean(args: argparse.Namespace) -> int:
    """Remove what the testbed created (one run, or every run no longer running)."""
    from testbed import clean, ledger

    if args.run and not ledger.valid_run_id(args.run):
        raise UsageError(f"--run {args.run!r}: a run id is four hex digits, e.g. 3fa9")
    return _print_cleanup(clean.clean(args.run, force=args.force), args.json)


def _print_cleanup(out: object, as_json: bool) -> int:
    """Print what a cleanup removed, skipped and failed to remove; 1 when something failed."""
    if as_json:
        print(json.dumps(out.__dict__, indent=2))
    else:
        for line in out.removed:  # type: ignore[attr-defined]
            print(f"removed {line}")
        for line in out.skipped:  # type: ignore[attr-defined]
            print(f"skipped {line}")
        for line in out.failed:  # type: ignore[attr-defined]
            print(f"FAILED  {line}", file=sys.stderr)
        if not (out.removed or out.skipped or out.failed):  # type: ignore[attr-defined]
            print("nothing to clean")
    return 1 if out.failed else 0  # type: ignore[attr-defined]


def cmd_images(args: argparse.Namespace) -> int:
    """Build (or list) the testbed's Docker images."""
    from testbed import images

    if args.action == "list":
        rows = images.image_list()
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                state = {True: "built", False: "not built", None: "engine not answering"}[row["built"]]
                print(f"{row['tag']}\t{state}")
        return 0
    unknown = sorted(set(args.names) - set(images.image_names()))
    if unknown:
        raise UsageError(f"no such image: {', '.join(unknown)} (have: {', '.join(images.image_names())})")
    work = Path(args.work)
    for tag, what in images.build_all(work, args.names or None, args.base, args.force).items():
        print(f"{tag}: {what}")
    return 0


def _is_experiment(path: Path) -> bool:
    from testbed import yamlio

    data = yamlio.load_yaml(path)  # the one reader: a bad file is a SpecError (exit 2) here
    return isinstance(data, dict) and "topology" in data


def cmd_validate(args: argparse.Namespace) -> int:
    """Check topology and experiment files without running anything."""
    from testbed.topology.loader import validate_file

    results = []
    for ref in args.files:
        path = Path(ref)
        if path.suffix in (".yaml", ".yml") and path.exists() and _is_experiment(path):
            from testbed.experiment.spec import load_experiment

            exp = load_experiment(path)
            results.append({"file": ref, "kind": "experiment", "name": exp.name})
            line = f"ok: {ref}: experiment {exp.name}"
        else:
            topo = validate_file(ref)
            results.append({"file": ref, "kind": "topology", "name": topo.name, "sites": len(topo.sites),
                            "hosts": len(topo.hosts()), "wan_links": len(topo.wan)})
            line = (f"ok: {ref}: topology {topo.name}: {len(topo.sites)} sites, "
                    f"{len(topo.hosts())} hosts, {len(topo.wan)} WAN links")
        if not args.json:
            print(line)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


def cmd_topo(args: argparse.Namespace) -> int:
    """Bring a topology up, show it, open the Mininet CLI, tear it down (--json: describe, check, tear down)."""
    if getattr(args, "json", False):
        from testbed.deploy import topo_json

        print(json.dumps(topo_json(args), indent=2))
        return 0
    from testbed.emulation.run import topo_command

    return topo_command(args)


def cmd_run(args: argparse.Namespace) -> int:
    """Run an experiment file and write its results directory (--json: its summary.json on stdout)."""
    from testbed.experiment.runner import run_command

    if not args.json:
        return run_command(args)
    if not args.out:
        from testbed.experiment.runner import default_out
        from testbed.experiment.spec import load_experiment

        args.out = str(default_out(load_experiment(args.experiment)))
    with contextlib.redirect_stdout(sys.stderr):  # the progress and tables go to stderr
        code = run_command(args)
    summary = json.loads((Path(args.out) / "summary.json").read_text())
    print(json.dumps({"run_dir": str(Path(args.out).resolve()), "summary": summary}, indent=2))
    return code


def cmd_report(args: argparse.Namespace) -> int:
    """Regenerate the plots and report.md of a run directory from its CSV files."""
    from testbed.experiment.report import report_main

    run_dir = Path(args.dir)
    if not (run_dir / "packets.csv").exists():
        raise UsageError(f"{run_dir}: not a run directory (no packets.csv)")
    report = report_main(run_dir)
    if args.json:
        print(json.dumps({"report": str(report), "summary": json.loads((run_dir / "summary.json").read_text())},
                         indent=2))
    else:
        print(report)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """Bring a topology up detached; print its run id (it runs until `testbed destroy ID`)."""
    from testbed import deploy

    info = deploy.deploy(args.topology, Path(args.out) if args.out else None, nics=not args.no_nic)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(info["rid"])
        print(f"testbed: {info['topology']} is up as run {info['rid']} (owner pid {info['owner']}, "
              f"directory {info['run_dir']}); testbed inspect {info['rid']}, testbed destroy {info['rid']}",
              file=sys.stderr)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Show a deployed run (or list them all)."""
    from testbed import deploy

    data: object = deploy.inspect(args.run) if args.run else deploy.deployed()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    from testbed.deploy_view import show_run, show_runs

    (show_run if args.run else show_runs)(data)  # type: ignore[arg-type]
    return 0


def cmd_destroy(args: argparse.Namespace) -> int:
    """Tear a deployed run down and remove everything it made (as `clean --run ID`)."""
    from testbed import deploy

    out = deploy.destroy(args.run)
    return _print_cleanup(out, args.json)


def cmd_exec(args: argparse.Namespace) -> int:
    """Run a command inside a node of a deployed run; its output and exit status are the command's."""
    from testbed import deploy

    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    argv = deploy.exec_argv(args.run, args.node, command)
    done = proc.run(argv, timeout=args.timeout, check=False)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, verb by verb."""
    p = _Parser(prog="testbed", description="MEC fault-tolerance testbed: Docker hosts in Mininet, "
                "emulated WAN links, an os-ken controller and a fail-safe NIC.")
    p.add_argument("--version", action="version", version=f"testbed {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)

    def verb(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        return sp

    sp = verb("run", cmd_run, "run an experiment (YAML) and write manifest, CSVs, plots and report.md")
    sp.add_argument("experiment", help="experiment file, e.g. experiments/fatriot-fig11.yaml")
    sp.add_argument("--out", help="run directory (default: runs/NAME-TIMESTAMP)")
    sp.add_argument("--short", action="store_true", help="shortened run (fewer requests, 1 repetition)")
    sp.add_argument("--repetitions", type=int, help="override the number of repetitions")
    sp.add_argument("--seed", type=int, help="override the seed")
    sp.add_argument("--json", action="store_true", help="print the run directory and summary.json as JSON")

    sp = verb("topo", cmd_topo, "bring a topology up, print what is where, open the Mininet CLI")
    sp.add_argument("topology", help="shipped name (fatriot, mec-sites) or a .yaml/.py file")
    sp.add_argument("--out", help="run directory (default: runs/topo-NAME-TIMESTAMP)")
    sp.add_argument("--no-cli", action="store_true", help="do not open the CLI: bring up, check, tear down")
    sp.add_argument("--no-nic", action="store_true", help="leave out the fail-safe NICs")
    sp.add_argument("--controller", metavar="FILE",
                    help="controller app instead of the topology's: learning or an os-ken app file")
    sp.add_argument("--no-selfcheck", action="store_true", help="skip measuring each WAN link")
    sp.add_argument("--hold", type=float, default=0.0, metavar="SECONDS",
                    help="with --no-cli: keep the network up this long before tearing down")
    sp.add_argument("--json", action="store_true",
                    help="no CLI: print what is where and the self-check as JSON, then tear down")

    sp = verb("validate", cmd_validate, "check topology or experiment files without running anything")
    sp.add_argument("files", nargs="+", metavar="FILE")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = verb("doctor", cmd_doctor, "show what this machine offers and which backends will be used")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.add_argument("--server", metavar="NAME", help="check that server instead (ssh, tools): a name in "
                    "--topology's servers, or [user@]address[:port]")
    sp.add_argument("--topology", metavar="FILE", help="the topology whose servers: names --server")

    sp = verb("clean", cmd_clean, "remove what the testbed created (never anything else)")
    sp.add_argument("--run", metavar="ID", help="only this run (default: every run no longer running)")
    sp.add_argument("--force", action="store_true", help="also clean runs whose process still runs")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = verb("images", cmd_images, "build the Docker images (images/<name>/ -> testbed/<name>)")
    sp.add_argument("action", choices=["build", "list"])
    sp.add_argument("names", nargs="*", metavar="NAME", help="images to build (default: all)")
    sp.add_argument("--force", action="store_true", help="rebuild even when inputs are unchanged")
    sp.add_argument("--base", default="testbed/base",
                    help="base image (default: testbed/base, made offline with debootstrap)")
    sp.add_argument("--work", default="/var/lib/testbed/build", help="scratch directory for the base")
    sp.add_argument("--json", action="store_true", help="with list: machine-readable output")

    sp = verb("report", cmd_report, "regenerate plots and report.md of a run directory from its CSVs")
    sp.add_argument("dir", metavar="RUN_DIR")
    sp.add_argument("--json", action="store_true", help="print the report's path and summary as JSON")

    sp = verb("deploy", cmd_deploy, "bring a topology up detached and print its run id (until destroy)")
    sp.add_argument("topology", help="shipped name (fatriot, mec-sites) or a .yaml/.py file")
    sp.add_argument("--out", help="run directory (default: runs/deploy-NAME-TIMESTAMP)")
    sp.add_argument("--no-nic", action="store_true", help="leave out the fail-safe NICs")
    sp.add_argument("--json", action="store_true", help="print the run's description as JSON")

    sp = verb("inspect", cmd_inspect, "show a deployed run: nodes, addresses, NICs, links, controller, backends")
    sp.add_argument("run", nargs="?", metavar="RUN", help="run id (default: list the deployed runs)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = verb("destroy", cmd_destroy, "tear a deployed run down and remove what it made (= clean --run)")
    sp.add_argument("run", metavar="RUN")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = verb("exec", cmd_exec, "run a command in a node of a deployed run: exec RUN NODE -- CMD...")
    sp.add_argument("run", metavar="RUN")
    sp.add_argument("node", metavar="NODE")
    sp.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD")
    sp.add_argument("--timeout", type=float, default=600.0, help="seconds before the command is stopped")

    try:
        from testbed import cli_failsafe
    except ImportError:
        pass
    else:
        cli_failsafe.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `testbed` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        from mininet.log import lg  # Mininet prints through its own handler: not twice
    except ImportError:
        pass
    else:
        lg.propagate = False
        logging.setLoggerClass(logging.Logger)  # else every logger made later has Mininet's own stderr handler too
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except TestbedError as exc:
        print(f"testbed: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("testbed: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
