"""Farris et al. Figs. 4 and 5 on this machine: container start-up with the image pre-cached, and an image
shipped between two edges (save, compress, transfer over the emulated WAN, load, run) on two link profiles.

    sudo .venv/bin/python experiments/farris_fig5.py [--image testbed/web] [--out runs/farris-fig5]

Prints each phase next to the paper's numbers and writes results.json in --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed.emulation.testbed import Testbed  # noqa: E402
from testbed.ledger import Ledger, new_run_id  # noqa: E402
from testbed.replication.imagedist import expected_transfer_s, ship, startup  # noqa: E402
from testbed.topology.api import MecTopo  # noqa: E402

#: (name, Mbit/s, one-way delay ms): Farris's cloud interconnect and MEC profiles.
PROFILES = (("100mbit", 100, 0), ("25mbit-50ms", 25, 25))
PAPER = {"fig4": "about 1 s with the image pre-cached", "100mbit": "over 20 s (Httpd, 204 MB)",
         "25mbit-50ms": "over 70 s (Httpd, 204 MB)"}


def two_edges(rate: float, delay_ms: float) -> MecTopo:
    """Two edge sites, one host each, joined by a WAN link of `rate` Mbit/s and `delay_ms` each way."""
    t = MecTopo("two-edges", subnet="10.0.0.0/24")
    t.addSite("edge1")
    t.addSite("edge2")
    t.addHost("ha", site="edge1", ip="10.0.0.1")
    t.addHost("hb", site="edge2", ip="10.0.0.2")
    t.addWan("edge1", "edge2", bw=rate, delay=f"{delay_ms}ms" if delay_ms else None)
    return t


def fig4(out: Path, images: list[str]) -> dict:
    """Start-up seconds per image, pre-cached (median of 3)."""
    from testbed import clean

    ledger = Ledger(new_run_id(), out)
    try:
        return {image: round(statistics.median(startup(ledger, image)), 3) for image in images}
    finally:
        clean.clean_run(ledger.rid)


def fig5(out: Path, image: str, profiles=PROFILES) -> dict:
    """Each profile's shipment of `image` from ha to hb, with the transfer time the link should give."""
    results = {}
    for name, rate, delay in profiles:
        with Testbed(two_edges(rate, delay).build(), out / name, nics=False) as tb:
            s = ship(tb, image, "ha", "hb", out)
        results[name] = {**s.to_dict(), "expected_transfer_s": round(
            expected_transfer_s(s.sent_bytes, rate, 2 * delay / 1000), 3), "rate_mbit": rate, "delay_ms": delay}
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="testbed/web")
    ap.add_argument("--out", type=Path, default=Path("runs/farris-fig5"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"fig4": fig4(args.out, ["testbed/base", "testbed/echo", "testbed/web"]), "fig5": fig5(args.out, args.image)}
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    for image, s in results["fig4"].items():
        print(f"fig4 {image}: start-up {s:.2f} s (paper: {PAPER['fig4']})")
    for name, r in results["fig5"].items():
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in r["phases_s"].items())
        print(f"fig5 {name}: {r['image']} {r['image_bytes'] / 1e6:.0f} MB, archive {r['archive_bytes'] / 1e6:.0f} MB: "
              f"{phases}; total {sum(r['phases_s'].values()):.1f} s (paper: {PAPER[name]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
