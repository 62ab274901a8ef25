"""A host moved to another switch port (a user re-attached to another site): the controller forgets where it was.

Plain logic in the manner of `learning.py` and `steering.py`: `moved()` takes the learning switch,
the steering state and the request `{host, dpid, port}` and returns a `Plan` (one phase, so the
answer comes once every switch acknowledged it with a barrier). In that phase every switch
deletes its learnt flows from and towards the host's MAC and the controller drops the MAC from every
switch's table, so no switch keeps forwarding to where the host was; the next frame from or to
the host is learnt afresh. The topology map is updated with the new attachment, and every steer
whose host is the moved one gets its paths re-made towards the new place (same priority and
match, so the ADD replaces the old actions in place).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

from os_ken.ofproto import ofproto_v1_3_parser as parser

from controllers.learning import LearningSwitch, forget_flows
from controllers.steering import LOW, Plan, Steering

log = logging.getLogger(__name__)


def _int(args: Mapping[str, Any], key: str) -> int:
    value = args.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key}: expected a non-negative integer, got {value!r}")
    return value


def moved(learning: LearningSwitch, steering: Steering, args: Mapping[str, Any]) -> Plan:
    """Host `args["host"]` is now behind port `args["port"]` of switch `args["dpid"]`: the Plan that forgets
    its old place on every switch and re-paths its steers; ValueError naming the field when invalid."""
    tmap = steering.map
    if tmap is None:
        raise ValueError("no topology map yet (the testbed sends it once the network is built)")
    host = args.get("host")
    if host not in tmap.hosts:
        raise ValueError(f"host: no host {host!r} in the topology map (have: {', '.join(sorted(tmap.hosts))})")
    dpid, port = _int(args, "dpid"), _int(args, "port")
    if dpid not in set(tmap.switches.values()):
        raise ValueError(f"dpid: no switch {dpid:#x} in the topology map")
    old = tmap.hosts[host]
    new = dataclasses.replace(old, dpid=dpid, port=port)
    steering.map = dataclasses.replace(tmap, hosts={**tmap.hosts, host: new})
    mac = old.mac
    forgot = 0
    phase: dict[int, list[parser.MsgBase]] = {}
    for d in sorted(set(tmap.switches.values())):
        sw = learning.state(d)
        if sw.macs.pop(mac, None) is not None:
            forgot += 1
        phase[d] = forget_flows(mac)
    repathed = []
    for s in steering.steers.values():
        if s.host == host:
            for d, msgs in steering._paths(s, LOW).items():  # noqa: SLF001 (same package, same paths)
                phase.setdefault(d, []).extend(msgs)
            repathed.append(s.key.describe())
    log.info("host %s moved from %#x port %d to %#x port %d (forgot on %d switches, re-pathed %s)",
             host, old.dpid, old.port, dpid, port, forgot, repathed or "no steer")
    result = {"host": host, "mac": mac, "from": {"dpid": old.dpid, "port": old.port},
              "to": {"dpid": dpid, "port": port}, "forgot": forgot, "steers": repathed}
    return Plan([phase], result)
