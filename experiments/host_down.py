#!/usr/bin/env python3
"""Host crash with and without the fail-safe NIC, written with the experiment building blocks.

The same steps `testbed run experiments/fatriot-fig11.yaml` takes, spelled out:
build the topology, start the services and the prober, kill mec1 at request 30, collect, report.
Run as root:  .venv/bin/python experiments/host_down.py [OUT_DIR]
"""

import sys
import time
from pathlib import Path

from testbed.emulation.testbed import Testbed
from testbed.experiment.report import report_main
from testbed.experiment.runner import Records, RunContext, drive_traffic, manifest, start_service, wait_nics_learned
from testbed.experiment.spec import ExperimentSpec, FaultSpec, ProbeFlow, ServiceRun, Variant
from testbed.experiment.values import Trigger
from testbed.topology.loader import load_topology

out = Path(sys.argv[1] if len(sys.argv) > 1 else f"runs/host-down-{time.strftime('%Y%m%d-%H%M%S')}")
crash = FaultSpec("host_down", "kill", Trigger(packet=30), host="mec1")
spec = ExperimentSpec(
    name="host-down", topology_ref="fatriot", topology=load_topology("fatriot"),
    services=(ServiceRun("mec1", "echo", critical=True), ServiceRun("mec2", "echo")),
    traffic=(ProbeFlow("probe", "gen", "mec1", rate=10, count=60),),
    faults=(crash,),
    variants=(Variant("with-nic", nic=True, heartbeat_interval_s=0.1), Variant("without-nic", nic=False)),
    claims=("With the NIC the backup answers after the crash; without it nothing does.",))

out.mkdir(parents=True, exist_ok=True)
records = Records(out)
runs = []
for variant in spec.variants:
    ctx = RunContext(spec, variant, 0, records)
    with Testbed(spec.topology, out / variant.name, nics=variant.nic, nic_overrides=variant.nic_overrides()) as tb:
        for service in spec.services:
            start_service(tb, service)
        wait_nics_learned(tb, list(tb.nics), timeout=20)  # detection is live once RTT_avg is learned
        drive_traffic(ctx, tb, out / variant.name)  # the prober runs; HostKill fires at "# sent 30"
        for e in tb.nic_events():
            ctx.event("nic", "activate" if e["active"] else "deactivate", f"{e['node']}/{e['target']}",
                      e["reason"], when=e["time"])
        runs.append({"variant": variant.name, "repetition": 0, "backends": tb.backends()})
(out / "manifest.json").write_text(__import__("json").dumps(manifest(spec, runs), indent=2))
print(f"report: {report_main(out)}")
