"""Per-NIC failover counters saved into an experiment's run directory at the end of each variant.

`save_nic_counters(tb, out, variant, rep)` asks every running NIC of testbed `tb` for its counters
(control API `counters`: the `failover` ones, the data path and its punted frames) and appends one
JSON line per NIC to `out/nic_counters.jsonl`:
`{"variant": "with-nic", "repetition": 0, "node": "mec1", "counters": {"per_backup": {"10.0.0.12": 41},
"relayed": 0, "dropped": 0, "no_backup": 0, "passive": 1, ...}, "datapath": "bpf", "punted": 12}` (the
frames the BPF program left to the Python pipeline; 0 on the Python data path; a NIC that cannot be
asked gets `"error"` instead). The report shows the counters with `read_nic_counters`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from testbed.errors import TestbedError

log = logging.getLogger(__name__)

COUNTERS_FILE = "nic_counters.jsonl"
#: the report's columns, in order (per_backup is shown separately)
COUNTER_COLUMNS = ("relayed", "dropped", "no_backup", "resent", "passive", "refused", "conntrack_early_drop",
                   "conntrack_full", "replay_overflow", "neighbour_evicted")


def save_nic_counters(tb: Any, out: Path, variant: str, rep: int) -> list[dict]:
    """Append the failover counters of every NIC of `tb` to `out`/nic_counters.jsonl; returns the rows."""
    from testbed.failsafe.control import call

    rows = []
    for node in sorted(getattr(tb, "nics", {}) or {}):
        row: dict[str, Any] = {"variant": variant, "repetition": rep, "node": node}
        try:
            full = call(tb.nic_socket(node), "counters")  # the failover counters, the data path and its punts
            row["counters"], row["datapath"], row["punted"] = full["failover"], full.get("datapath"), full.get("punted", 0)
        except (TestbedError, OSError) as exc:
            log.warning("%s NIC: cannot read its failover counters: %s", node, exc)
            row["error"] = str(exc)
        rows.append(row)
    if rows:
        with open(Path(out) / COUNTERS_FILE, "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, sort_keys=True) + "\n")
    return rows


def read_nic_counters(path: Path) -> list[dict]:
    """The rows of a nic_counters.jsonl file (none if it does not exist; unreadable lines skipped)."""
    if not Path(path).exists():
        return []
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            log.warning("%s: skipping a line that is not JSON", path)
            continue
        if isinstance(row, dict) and {"variant", "repetition", "node"} <= set(row):
            rows.append(row)
    return rows
