"""The NIC's control commands (show, counters, table_*, heartbeat_*, mode, events) for N2's ControlServer.

Arguments arrive as the JSON object of a request; each handler returns JSON-ready data or raises
ValueError/KeyError/TableError with a message for the user.

Argument names: table_dump {table}; table_add {table, action, match: [str], params: [str], priority?};
table_delete {table, match: [str]}; heartbeat_add {target, message, interval, threshold, port?,
payload?, expect?} (payload/expect as text); heartbeat_delete {target}; mode {service, mode};
events {since?} (wall-clock seconds); failover {} (per backup, relayed, dropped, no_backup and the
bounds hit: `Nic.failover_counters`), also under "failover" in counters; passive {mode: on|off}.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Callable

from testbed.failsafe.packet import ip_str
from testbed.failsafe.service_table import parse_backups
from testbed.failsafe.tables import Table, TableError

if TYPE_CHECKING:
    from testbed.failsafe.nic import Nic


def make_handlers(nic: "Nic", clock: Callable[[], float] = time.monotonic) -> dict[str, Callable[[dict], object]]:
    """The handler of every control command, bound to `nic`."""

    def tables() -> dict[str, Table]:
        return {"target": nic.classifier.table, "service": nic.services.table}

    def table(args: dict) -> Table:
        name = str(args.get("table", ""))
        found = tables().get(name)
        if found is None:
            raise ValueError(f"unknown table {name!r}; tables: {', '.join(tables())}")
        return found

    def modes() -> dict[str, str]:
        return {sid: "failsafe" if nic.pipeline.in_failsafe(sid) else "normal" for sid in nic.service_ids()}

    def show(args: dict) -> object:
        return {"config": dataclasses.asdict(nic.config) | {"services": [s.name for s in nic.config.services]},
                "modes": modes(), "platform": "failsafe" if nic.pipeline.platform_failsafe else "normal",
                "host_mac": None if nic.pipeline.host_mac is None else nic.pipeline.host_mac.hex(":"),
                "neighbours": {ip_str(k): v.hex(":") for k, v in nic.pipeline.neighbours.items()},
                "tables": {n: {"entries": len(t.entries()), "default": t.default.name} for n, t in tables().items()},
                "conntrack": len(nic.handler.conntrack), "pending": nic.handler.pending_count,
                "uptime_s": round(time.time() - nic.started, 3),
                "datapath": getattr(nic.datapath, "name", None), "datapath_fallback": nic.datapath_fallback}

    def counters(args: dict) -> object:
        status = nic.heartbeats.status()
        svc = {}
        for sid in nic.service_ids():
            c = nic.pipeline.counters.services.get(sid)
            hb = status.get(sid, {})
            svc[sid] = {**(dataclasses.asdict(c) if c else {"packets": 0, "bytes": 0}),
                        "mode": modes()[sid], "rtt_last_ms": hb.get("rtt_last_ms"),
                        "rtt_avg_ms": hb.get("rtt_avg_ms"), "transitions": hb.get("transitions", 0)}
        return {"services": svc, "platform": status.get("platform", {}),
                "ports": {p: dataclasses.asdict(c) for p, c in nic.pipeline.counters.ports.items()},
                "rules": dict(nic.pipeline.counters.reasons),
                "failsafe_handler": dataclasses.asdict(nic.handler.stats),
                "probes": dataclasses.asdict(nic.prober.stats), "failover": nic.failover_counters(),
                "datapath": getattr(nic.datapath, "name", None), "punted": getattr(nic.datapath, "punted", 0)}

    def failover(args: dict) -> object:
        return nic.failover_counters()

    def passive(args: dict) -> object:
        want = str(args.get("mode", ""))
        if want not in ("on", "off"):
            raise ValueError(f"passive evidence mode must be on or off, got {want!r}")
        nic.pipeline.passive = want == "on"
        return {"passive": want}

    def table_dump(args: dict) -> object:
        return table(args).dump()

    def table_add(args: dict) -> object:
        t = table(args)
        match = t.parse_match([str(m) for m in args.get("match", [])])
        params = [str(p) for p in args.get("params", [])]
        action = str(args.get("action", ""))
        if action == "to_backups":
            parse_backups(params)  # validate now, not at the first redirected packet
        if action == "set_service" and len(params) != 1:
            raise TableError("set_service takes one parameter: the service id")
        entry = t.add(action, match, params, int(args.get("priority", 0)))
        return {"table": t.name, "match": list(map(str, entry.match)), "action": entry.action,
                "params": list(entry.params)}

    def table_delete(args: dict) -> object:
        t = table(args)
        t.delete(t.parse_match([str(m) for m in args.get("match", [])]))
        return {"table": t.name, "deleted": list(map(str, args.get("match", [])))}

    def heartbeat_show(args: dict) -> object:
        out = {}
        status = nic.heartbeats.status()
        for target in nic.heartbeats.targets():
            e = nic.heartbeats.entry(target)
            out[target] = {"message": e.message, "interval_s": e.interval_s, "threshold": e.threshold,
                           "dst": f"{e.dst_ip}:{e.dst_port}" if e.dst_port else e.dst_ip,
                           **status.get(target, {})}
        return out

    def heartbeat_add(args: dict) -> object:
        from testbed.failsafe.heartbeat import HeartbeatEntry

        def raw(key: str) -> bytes | None:
            v = args.get(key)
            return None if v is None else (v.encode() if isinstance(v, str) else bytes(v))

        cfg = nic.config
        entry = HeartbeatEntry(
            str(args["target"]), str(args["message"]), float(args["interval"]), float(args["threshold"]),
            learn=cfg.learn, hysteresis=cfg.hysteresis, min_rtt_s=cfg.min_rtt_s, dst_ip=cfg.host_ip,
            dst_port=int(args.get("port") or 0), payload=raw("payload") or b"", expect=raw("expect"))
        if entry.message in ("udp", "tcp") and not entry.dst_port:
            raise ValueError(f"a {entry.message} heartbeat needs --port")
        nic.heartbeats.add(entry, clock())
        return {"added": entry.target}

    def heartbeat_delete(args: dict) -> object:
        target = str(args["target"])
        if target not in nic.heartbeats.targets():
            raise KeyError(f"no heartbeat for {target!r}")
        nic.heartbeats.remove(target)
        nic.prober.forget(target)
        return {"deleted": target}

    def mode(args: dict) -> object:
        sid, want = str(args["service"]), str(args["mode"])
        if want not in ("on", "off", "auto"):
            raise ValueError(f"mode must be on, off or auto, got {want!r}")
        if sid not in nic.service_ids() and sid != "platform":
            raise KeyError(f"unknown service {sid!r}; services: {', '.join(nic.service_ids())}")
        now = clock()
        if sid in nic.heartbeats.targets():
            nic.forced.pop(sid, None)
            transitions = nic.heartbeats.force(sid, want, now)
        else:
            if want == "auto":
                nic.forced.pop(sid, None)
            else:
                nic.forced[sid] = want == "on"
            transitions = []
        nic.pending_out.extend(nic.apply(transitions, now) + nic.sync_modes(now))
        return {"service": sid, "mode": want, "modes": modes()}

    def events(args: dict) -> object:
        since = float(args.get("since") or 0.0)
        return [e for e in nic.events if e["time"] >= since]

    def discovery(args: dict) -> object:
        if nic.discovery is None:
            return {}
        return {"announced": nic.announcement(), "peers": nic.discovery.status(clock())}

    return {"show": show, "counters": counters, "discovery": discovery, "table_dump": table_dump, "table_add": table_add,
            "table_delete": table_delete, "heartbeat_show": heartbeat_show, "heartbeat_add": heartbeat_add,
            "heartbeat_delete": heartbeat_delete, "mode": mode, "events": events, "failover": failover,
            "passive": passive}
