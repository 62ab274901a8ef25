"""Farris et al. Fig. 5 on this machine: an image started at an edge where it is missing, on two link profiles,
by two paths: shipped from the previous edge (docker save, compress, transfer over the emulated WAN, load,
run) and pulled from a registry at the previous edge across the same links (pull, load, run).

    sudo .venv/bin/python experiments/farris_fig5.py [--image testbed/web] [--paths save,pull] [--out runs/farris-fig5]

Prints each phase next to the paper's numbers and writes results.json in --out. The pull path needs
Debian's docker-registry (`testbed doctor`: registry); asked for where it is missing, exit 2 and why.
Fig. 4 (pre-cached start-up) is experiments/farris_fig4.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed.emulation.testbed import Testbed  # noqa: E402
from testbed.errors import TestbedError, UsageError  # noqa: E402
from testbed.replication import registry  # noqa: E402
from testbed.replication.imagedist import expected_transfer_s, ship  # noqa: E402
from testbed.topology.api import MecTopo  # noqa: E402

#: (name, Mbit/s, one-way delay ms): Farris's cloud interconnect and MEC profiles.
PROFILES = (("100mbit", 100, 0), ("25mbit-50ms", 25, 25))
PAPER = {"100mbit": "over 20 s (Httpd, 204 MB, scp)", "25mbit-50ms": "over 70 s (Httpd, 204 MB, scp)"}
PATHS = ("save", "pull")


def two_edges(rate: float, delay_ms: float) -> MecTopo:
    """Two edge sites, one host each, joined by a WAN link of `rate` Mbit/s and `delay_ms` each way."""
    t = MecTopo("two-edges", subnet="10.0.0.0/24")
    t.addSite("edge1")
    t.addSite("edge2")
    t.addHost("ha", site="edge1", ip="10.0.0.1")
    t.addHost("hb", site="edge2", ip="10.0.0.2")
    t.addWan("edge1", "edge2", bw=rate, delay=f"{delay_ms}ms" if delay_ms else None)
    return t


def fig5(out: Path, image: str, profiles=PROFILES, paths=PATHS) -> dict:
    """Per profile and path, `image` started on hb from ha, with the transfer time the link should give."""
    if "pull" in paths:
        registry.require()  # RegistryUnavailable (exit 2) before anything is made
    results: dict = {}
    for name, rate, delay in profiles:
        rtt = 2 * delay / 1000
        with Testbed(two_edges(rate, delay).build(), out / name, nics=False) as tb:
            for path in paths:
                s = ship(tb, image, "ha", "hb", out) if path == "save" else registry.pull(tb, image, "ha", "hb", out)
                # the agent's connection: handshake, header, end; a pull: the connect and one RTT per request
                handshakes = 3 if path == "save" else 1 + s.requests
                results.setdefault(name, {})[path] = {
                    **s.to_dict(), "rate_mbit": rate, "delay_ms": delay,
                    "expected_transfer_s": round(expected_transfer_s(s.sent_bytes, rate, rtt, handshakes), 3)}
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="testbed/web")
    ap.add_argument("--paths", default=",".join(PATHS), help="save, pull or both (comma-separated)")
    ap.add_argument("--out", type=Path, default=Path("runs/farris-fig5"))
    args = ap.parse_args()
    paths = tuple(p for p in args.paths.split(",") if p)
    try:
        if not paths or set(paths) - set(PATHS):
            raise UsageError(f"--paths {args.paths!r}: expected save, pull or save,pull")
        results = fig5(args.out, args.image, paths=paths)  # nothing is made before its checks pass
    except TestbedError as exc:
        print(f"farris_fig5: {exc}", file=sys.stderr)
        return exc.exit_code
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    for name, by_path in results.items():
        for path, r in by_path.items():
            phases = ", ".join(f"{k} {v:.1f} s" for k, v in r["phases_s"].items())
            move = "transfer" if path == "save" else "pull"
            print(f"fig5 {name} {path}: {r['image']} {r['image_bytes'] / 1e6:.0f} MB, {r['sent_bytes'] / 1e6:.0f} MB "
                  f"sent: {phases}; total {sum(r['phases_s'].values()):.1f} s; {move} expected "
                  f"{r['expected_transfer_s']:.1f} s (paper: {PAPER[name]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
