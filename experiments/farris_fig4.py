"""Farris et al. Fig. 4 on this machine: container start-up with the image pre-cached, for three images of
different sizes (a Busybox-sized one made from /bin/true, testbed/echo, and testbed/echo plus 200 MB).

    sudo .venv/bin/python experiments/farris_fig4.py [--runs 5] [--out runs/farris-fig4]

Prints each image's start-up next to the paper's claim and writes results.json in --out. The two
images it makes are labelled with its run and removed at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed.ledger import Ledger, new_run_id  # noqa: E402
from testbed.replication.imagedist import image_bytes, large_image, remove_images, startup, tiny_image  # noqa: E402

PAPER = "about 1 s with the image pre-cached (Busybox 2 MB, Debian 125 MB, Httpd 204 MB)"
BASE = "testbed/echo"


def fig4(out: Path, runs: int = 3, extra_mb: int = 200) -> dict:
    """Per image (tiny, echo, large): its size and `runs` start-ups of `docker run ... true`, pre-cached."""
    from testbed import clean

    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(new_run_id(), out)
    try:
        images = {"tiny": tiny_image(ledger, out), "echo": BASE, "large": large_image(ledger, out, BASE, extra_mb)}
        results = {}
        for role, image in images.items():
            times = startup(ledger, image, runs)
            results[role] = {"image": image, "image_bytes": image_bytes(image), "start_s": [round(t, 3) for t in times],
                             "median_s": round(statistics.median(times), 3)}
        return results
    finally:
        remove_images(ledger)
        clean.clean_run(ledger.rid)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("runs/farris-fig4"))
    args = ap.parse_args()
    results = fig4(args.out, args.runs)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    for role, r in results.items():
        print(f"fig4 {role} ({r['image_bytes'] / 1e6:.0f} MB): start-up {r['median_s']:.2f} s median of "
              f"{len(r['start_s'])} ({min(r['start_s']):.2f}-{max(r['start_s']):.2f}) (paper: {PAPER})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
